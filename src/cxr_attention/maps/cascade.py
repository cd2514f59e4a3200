"""The cascade policy, and the study's methods: which maps each target gets.

**Study (``method: methods``, the maps stage).** Every method of ``maps.methods`` makes its map
of every target it can, so that methods are compared on the same samples; a statistic over
whatever a fallback chain produced would select samples on a property of the attention (its
image mass). The map the cascade would pick is marked (``cascade`` True; added as its own row
when its method is not listed), so that single-image use and fallback rates stay readable.

**Cascade (``method: cascade``, ``cxr-attention explain``).** For each target (the answer, or
one term) the cascade tries the methods of ``maps.cascade`` in order (default: ``attention``,
``term_attention``, ``gated_answer``, ``gradcam``, ``activation_norm``, ``uniform``), skipping
silently a method whose ``cascade_sources`` exclude the target's source. A method that gives no
map for the target (:class:`~cxr_attention.maps.methods.base.Unavailable`: term not found, image
mass below ``min_image_mass``, gradient failure, no model or image...) is recorded and the next
one tried: the map keeps its method and every earlier method's reason (``"attention: image mass
0.003 below min_image_mass 0.01; gradcam: gradient failure: all-zero gradients"``). Reaching
``uniform`` logs a warning.

``method`` can also force one method (falling back to ``uniform`` only, with the reason) or
compute ``all`` of them (each method that succeeds gives its own map; the cascade's pick of each
target is marked, with the cascade's reasons; the ``uniform`` map records why the others failed).
:func:`fallback_steps` reads a ``fallback_reason`` back into its ``(method, reason)`` steps.

The answer's variants (every generated row; one map per captured layer) are rows of attention:
``attention`` alone makes them, with no fallback, whenever it is among the methods in play.

Each method is asked once for all the sample's targets that reach it
(:meth:`~cxr_attention.maps.methods.base.MapMethod.attribute`), and never twice for one target,
so a method batches or shares its work across targets as it sees fit: Grad-CAM runs one batched
forward + backward, the term-independent ``activation_norm`` one map per sample.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

from cxr_attention.captures import Capture, as_capture
from cxr_attention.maps.grid import MapUnavailable, normalise_map, strip_outer_ring
from cxr_attention.maps.methods.attention_nosink import sample_sinks, sink_mass, sinks_recorded
from cxr_attention.maps.methods.base import MapInputs, MapResult, Unavailable, VisionSource
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import NOTE_COLUMNS, MapRecord, SampleKey, map_id
from cxr_attention.maps.registry import LAST_RESORT, METHODS, REGISTRY
from cxr_attention.maps.targets import MapTarget

__all__ = ["REASON_SEPARATOR", "compute_maps", "compute_sample_maps", "fallback_steps"]

REASON_SEPARATOR = "; "
"""Between the ``method: reason`` steps of a ``fallback_reason``."""

logger = logging.getLogger(__name__)


def compute_maps(
    capture: Capture | Mapping[str, np.ndarray],
    target: MapTarget,
    key: SampleKey,
    params: MapParams,
    *,
    vision: VisionSource | None = None,
    aspect_ratio: float = 1.0,
) -> list[tuple[MapRecord, np.ndarray]]:
    """The map(s) of one target under ``params.method``: :func:`compute_sample_maps` of it."""
    return compute_sample_maps(
        capture, [target], key, params, vision=vision, aspect_ratio=aspect_ratio
    )


def compute_sample_maps(
    capture: Capture | Mapping[str, np.ndarray],
    targets: Sequence[MapTarget],
    key: SampleKey,
    params: MapParams,
    *,
    vision: VisionSource | None = None,
    aspect_ratio: float = 1.0,
) -> list[tuple[MapRecord, np.ndarray]]:
    """The maps of every target of one sample under ``params.method``.

    Parameters
    ----------
    capture : Capture (or a mapping of its arrays)
    targets : sequence of MapTarget
        Typically :func:`~cxr_attention.maps.targets.locate_targets`'s answer and term targets
        (and :func:`~cxr_attention.maps.targets.layer_targets`' per-layer variants).
    key : SampleKey
    params : MapParams
    vision : VisionSource, optional
        Model and pixels for the methods that need them; None: those are unavailable.
    aspect_ratio : float
        Image width / height (for a non-square token count).

    Returns
    -------
    list of (MapRecord, ndarray)
        The maps of each target in target order: ``cascade`` and a forced method one per target;
        ``methods`` one per listed method that gives a map, plus the cascade's pick when it is
        not listed (its row has ``cascade`` True); ``all`` one per method that gives a map. The
        answer's variants (every row, per layer) are made by ``attention`` alone. Every array
        is float32, 2-D, non-negative, summing to 1.
    """
    inputs = MapInputs(as_capture(capture), params, key, vision, aspect_ratio)
    primary = [target for target in targets if not target.variant]
    outcomes = _Outcomes(inputs, primary)
    if params.method == "all":
        maps = _every_method(inputs, primary, outcomes)
    elif params.method == "methods":
        maps = _listed_methods(inputs, primary, outcomes)
    else:
        picks = _cascade_picks(params, primary, outcomes)
        maps = [
            (target, *_record(inputs, target, *picks[index], cascade=params.method == "cascade"))
            for index, target in enumerate(primary)
        ]
    if VARIANT_METHOD in _in_play(params):
        maps.extend(_variant_maps(inputs, [t for t in targets if t.variant]))
    rank = {id(target): index for index, target in enumerate(targets)}
    maps.sort(key=lambda made: rank[id(made[0])])  # target order; stable within a target
    return [(record, grid) for _, record, grid in maps]


def _in_play(params: MapParams) -> tuple[str, ...]:
    """The methods ``params.method`` may ask for."""
    in_play = {"all": METHODS, "methods": params.methods, "cascade": params.cascade}
    return tuple(in_play.get(params.method, (params.method,)))


VARIANT_METHOD = "attention"
"""The one method of the answer's variants (every row, per layer): they are rows of attention."""


class _Outcomes:
    """Each method's outcome per target, computed once, a method's targets in one call."""

    def __init__(self, inputs: MapInputs, targets: Sequence[MapTarget]):
        self.inputs = inputs
        self.targets = targets
        self.known: dict[tuple[str, int], MapResult | Unavailable] = {}

    def ask(self, name: str, indices: Sequence[int]) -> list[MapResult | Unavailable]:
        missing = [i for i in indices if (name, i) not in self.known]
        if missing:
            results = REGISTRY[name].attribute(self.inputs, [self.targets[i] for i in missing])
            self.known.update({(name, i): r for i, r in zip(missing, results, strict=True)})
        return [self.known[name, i] for i in indices]


def _cascade_picks(
    params: MapParams, targets: Sequence[MapTarget], outcomes: _Outcomes
) -> list[tuple[str, MapResult, list[str]]]:
    """Per target: the method the cascade (or the forced method) settles on, its result and
    the reasons of the methods skipped before it."""
    chains = [_chain(params, target) for target in targets]
    reasons: list[list[str]] = [[] for _ in targets]
    step = [0] * len(targets)
    kept: dict[int, tuple[str, MapResult, list[str]]] = {}
    while len(kept) < len(targets):
        asking: dict[str, list[int]] = {}  # method -> the targets at that step of their chain
        for index in range(len(targets)):
            if index not in kept:
                asking.setdefault(chains[index][step[index]], []).append(index)
        for name, indices in asking.items():
            for index, outcome in zip(indices, outcomes.ask(name, indices), strict=True):
                if isinstance(outcome, Unavailable):
                    reasons[index].append(f"{name}: {outcome.reason}")
                    step[index] += 1
                    continue
                if name == LAST_RESORT and params.method != LAST_RESORT:
                    logger.warning(
                        "%s map for %r (%s): no other method gave a usable map",
                        name,
                        targets[index].term or "answer",
                        targets[index].source,
                    )
                kept[index] = (name, outcome, reasons[index])
    return [kept[index] for index in range(len(targets))]


def _chain(params: MapParams, target: MapTarget) -> list[str]:
    """The methods tried in order for a forced method or the cascade."""
    if params.method in ("cascade", "methods", "all"):
        return [m for m in params.cascade if target.source in REGISTRY[m].cascade_sources]
    if REGISTRY[params.method].never_unavailable:
        return [params.method]
    return [params.method, LAST_RESORT]


def _listed_methods(
    inputs: MapInputs, targets: Sequence[MapTarget], outcomes: _Outcomes
) -> list[tuple[MapTarget, MapRecord, np.ndarray]]:
    """``methods``: every listed method's map of every target (methods compared on the same
    samples), and the cascade's pick of each target marked (added when not listed)."""
    every = range(len(targets))
    for name in inputs.params.methods:
        outcomes.ask(name, every)
    picks = _cascade_picks(inputs.params, targets, outcomes)
    results = []
    for index, target in enumerate(targets):
        picked, result, reasons = picks[index]
        for name in inputs.params.methods:
            (outcome,) = outcomes.ask(name, [index])
            if not isinstance(outcome, Unavailable):
                chosen = name == picked
                results.append(
                    (
                        target,
                        *_record(inputs, target, name, outcome, reasons if chosen else [], chosen),
                    )
                )
        if picked not in inputs.params.methods:
            results.append((target, *_record(inputs, target, picked, result, reasons, True)))
    return results


def _every_method(
    inputs: MapInputs, targets: Sequence[MapTarget], outcomes: _Outcomes
) -> list[tuple[MapTarget, MapRecord, np.ndarray]]:
    """``all``: every method's map of every target; the cascade's pick of each target marked,
    with the cascade's reasons (no extra work: every method's outcome is known); the last
    resort's map lists why every other method failed (also when the cascade picked it)."""
    every = range(len(targets))
    results_of = {name: outcomes.ask(name, every) for name in METHODS}
    picks = _cascade_picks(inputs.params, targets, outcomes)
    results = []
    for index, target in enumerate(targets):
        picked, _, cascade_reasons = picks[index]
        failed = [
            f"{name}: {results_of[name][index].reason}"
            for name in METHODS
            if isinstance(results_of[name][index], Unavailable)
        ]
        for name in METHODS:
            outcome = results_of[name][index]
            if isinstance(outcome, Unavailable):
                continue
            reasons = failed if name == LAST_RESORT else cascade_reasons if name == picked else []
            record, grid = _record(inputs, target, name, outcome, reasons, name == picked)
            results.append((target, record, grid))
    return results


def _variant_maps(
    inputs: MapInputs, variants: Sequence[MapTarget]
) -> list[tuple[MapTarget, MapRecord, np.ndarray]]:
    """The answer's every-row and per-layer maps (attention only; none where it fails)."""
    if not variants:
        return []
    results = []
    for target, outcome in zip(
        variants, REGISTRY[VARIANT_METHOD].attribute(inputs, variants), strict=True
    ):
        if isinstance(outcome, Unavailable):
            logger.info("no %s map of %s: %s", VARIANT_METHOD, target.slug, outcome.reason)
            continue
        results.append((target, *_record(inputs, target, VARIANT_METHOD, outcome, [])))
    return results


def _record(
    inputs: MapInputs,
    target: MapTarget,
    method: str,
    result: MapResult,
    reasons: Sequence[str],
    cascade: bool = False,
) -> tuple[MapRecord, np.ndarray]:
    """The table row and the final grid (border stripped if asked, renormalised) of one map."""
    unknown = set(result.notes) - set(NOTE_COLUMNS)
    if unknown:
        raise ValueError(f"{method}: notes {sorted(unknown)} are no maps table column")
    grid_map = result.grid
    if inputs.params.strip_border and REGISTRY[method].strip_border:
        grid_map = strip_outer_ring(grid_map, inputs.params.strip_border)
    grid_map = normalise_map(grid_map)
    key = inputs.key
    sinks = _sinks(inputs)
    record = MapRecord(
        map_id=map_id(key.sample_id, target.slug, target.source, method),
        sample_id=key.sample_id,
        dicom_id=key.dicom_id,
        question_id=key.question_id,
        term=target.term,
        source=target.source,
        token_positions=target.token_positions,
        method=method,
        fallback_reason=REASON_SEPARATOR.join(reasons),
        layers=result.layers,
        heads=result.heads,
        image_mass=result.image_mass,
        sink_mass=sink_mass(grid_map, sinks),
        **{column: result.notes.get(column, empty) for column, empty in NOTE_COLUMNS.items()},
        rows=target.rows,
        counterfactual=target.counterfactual,
        cascade=cascade,
        per_layer=target.layer is not None,
    )
    return record, grid_map


def _sinks(inputs: MapInputs) -> np.ndarray | None:
    """The sample's sink tokens for the ``sink_mass`` column, or None (logged once per sample)
    when they are not computed. They are read from the capture's recorded hidden-state norms
    when it has them; else they need a forward, run only when a method in play runs the model
    (the capture-only maps stage stays CPU work): None without one, without a model or pixels,
    or after a failed forward."""
    if "sinks_unavailable" in inputs.shared:
        return None
    if not sinks_recorded(inputs) and not any(
        REGISTRY[name].needs == "vision" for name in _in_play(inputs.params)
    ):
        inputs.shared["sinks_unavailable"] = "no method in play runs the model"
        return None
    try:
        return sample_sinks(inputs)
    except (MapUnavailable, RuntimeError) as error:
        reason = error.reason if isinstance(error, MapUnavailable) else f"model failure: {error}"
        inputs.shared["sinks_unavailable"] = reason
        logger.info("sink_mass of %s is NaN: %s", inputs.key.sample_id, reason)
        return None


def fallback_steps(fallback_reason: str) -> list[tuple[str, str]]:
    """The ``(method, reason)`` steps of a maps table ``fallback_reason``, in order.

    The inverse of how the cascade writes them (``"attention: term not found; gradcam: ..."``):
    a step starts only where a registered method's name and ``": "`` follow the separator, so a
    reason that itself contains ``"; "`` (an exception's message) stays whole.

    Raises
    ------
    ValueError
        The text does not start with a registered method's step.
    """
    if not fallback_reason:
        return []
    names = "|".join(re.escape(name) for name in sorted(METHODS, key=len, reverse=True))
    starts = list(re.finditer(rf"(?:^|{re.escape(REASON_SEPARATOR)})({names}): ", fallback_reason))
    if not starts or starts[0].start() != 0:
        raise ValueError(
            f"fallback_reason {fallback_reason!r} does not start with 'method: reason' "
            f"(methods: {', '.join(METHODS)})"
        )
    ends = [step.start() for step in starts[1:]] + [len(fallback_reason)]
    return [
        (step.group(1), fallback_reason[step.end() : end])
        for step, end in zip(starts, ends, strict=True)
    ]
