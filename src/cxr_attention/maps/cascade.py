"""The cascade policy: one trustworthy map per target, with the reasons for every fallback.

For each target (the whole answer, or one term) the cascade tries the methods of
``maps.cascade`` in order (default: ``attention``, ``attention_gated``, ``gradcam``,
``activation_norm``, ``uniform``), skipping silently a method whose ``cascade_sources`` exclude
the target's source: ``attention`` is tried for targets with generated tokens (and an absent
term), ``attention_gated`` for a term only in the prompt. A method that gives no map for the
target (:class:`~cxr_attention.maps.methods.base.Unavailable`: term not found, image mass below
``min_image_mass``, gradient failure, no model or image...) is recorded and the next one tried:
the map keeps its method and every earlier method's reason (``"attention: image mass 0.003 below
min_image_mass 0.01; gradcam: gradient failure: all-zero gradients"``). Reaching ``uniform``
logs a warning.

``method`` in the parameters can also force one method (falling back to ``uniform`` only, with
the reason) or compute ``all`` of them for comparison (each method that succeeds gives its own
map; the ``uniform`` map records why the others failed).

Each step asks each method once for all the sample's targets that reach it
(:meth:`~cxr_attention.maps.methods.base.MapMethod.attribute`), so a method batches or shares
its work across targets as it sees fit: Grad-CAM runs one batched forward + backward, the
term-independent ``activation_norm`` one map per sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from cxr_attention.captures import Capture, as_capture
from cxr_attention.maps.grid import normalise_map, strip_outer_ring
from cxr_attention.maps.methods.base import MapInputs, MapResult, Unavailable, VisionSource
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import NOTE_COLUMNS, MapRecord, SampleKey, map_id
from cxr_attention.maps.registry import LAST_RESORT, METHODS, REGISTRY
from cxr_attention.maps.targets import MapTarget

__all__ = ["compute_maps", "compute_sample_maps"]

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
        Typically :func:`~cxr_attention.maps.targets.locate_targets`'s answer and term targets.
    key : SampleKey
    params : MapParams
    vision : VisionSource, optional
        Model and pixels for the methods that need them; None: those are unavailable.
    aspect_ratio : float
        Image width / height (for a non-square token count).

    Returns
    -------
    list of (MapRecord, ndarray)
        The maps of each target in turn: one for ``cascade`` and a forced method, one per
        successful method for ``all``. Every array is float32, 2-D, non-negative, summing to 1.
    """
    inputs = MapInputs(as_capture(capture), params, key, vision, aspect_ratio)
    if params.method == "all":
        return _every_method(inputs, targets)
    chains = [_chain(params, target) for target in targets]
    reasons: list[list[str]] = [[] for _ in targets]
    step = [0] * len(targets)
    kept: dict[int, tuple[MapRecord, np.ndarray]] = {}
    while len(kept) < len(targets):
        asking: dict[str, list[int]] = {}  # method -> the targets at that step of their chain
        for index in range(len(targets)):
            if index not in kept:
                asking.setdefault(chains[index][step[index]], []).append(index)
        for name, indices in asking.items():
            outcomes = REGISTRY[name].attribute(inputs, [targets[i] for i in indices])
            for index, outcome in zip(indices, outcomes, strict=True):
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
                kept[index] = _record(inputs, targets[index], name, outcome, reasons[index])
    return [kept[index] for index in range(len(targets))]


def _chain(params: MapParams, target: MapTarget) -> list[str]:
    """The methods tried in order for a forced method or the cascade."""
    if params.method == "cascade":
        return [m for m in params.cascade if target.source in REGISTRY[m].cascade_sources]
    if REGISTRY[params.method].never_unavailable:
        return [params.method]
    return [params.method, LAST_RESORT]


def _every_method(
    inputs: MapInputs, targets: Sequence[MapTarget]
) -> list[tuple[MapRecord, np.ndarray]]:
    """``all``: every method's map of every target; the last resort's lists the failures."""
    outcomes = {name: REGISTRY[name].attribute(inputs, targets) for name in METHODS}
    results = []
    for index, target in enumerate(targets):
        failed = [
            f"{name}: {outcomes[name][index].reason}"
            for name in METHODS
            if isinstance(outcomes[name][index], Unavailable)
        ]
        for name in METHODS:
            outcome = outcomes[name][index]
            if not isinstance(outcome, Unavailable):
                reasons = failed if name == LAST_RESORT else []
                results.append(_record(inputs, target, name, outcome, reasons))
    return results


def _record(
    inputs: MapInputs, target: MapTarget, method: str, result: MapResult, reasons: Sequence[str]
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
    record = MapRecord(
        map_id=map_id(key.sample_id, target.slug, target.source, method),
        sample_id=key.sample_id,
        dicom_id=key.dicom_id,
        question_id=key.question_id,
        term=target.term,
        source=target.source,
        token_positions=target.token_positions,
        method=method,
        fallback_reason="; ".join(reasons),
        layers=result.layers,
        heads=result.heads,
        image_mass=result.image_mass,
        **{column: result.notes.get(column, empty) for column, empty in NOTE_COLUMNS.items()},
    )
    return record, grid_map
