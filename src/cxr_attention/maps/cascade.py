"""The fallback cascade: one trustworthy map per target, with the reasons for every fallback.

For each target (the whole answer, or one term) the cascade tries, in order:

1. ``attention`` when the term was generated (or for the answer map), ``attention_gated`` when
   the term is only in the prompt;
2. ``gradcam`` (needs the model and the pixels);
3. ``activation_norm`` (needs the model and the pixels; not conditioned on the term);
4. ``uniform`` (always; logs a warning).

A method is skipped when it raises :class:`~cxr_attention.maps.grid.MapUnavailable`: term not
found, non-finite values, image mass below ``min_image_mass``, gradient failure (an exception,
non-finite or all-zero gradients), no model or image available. The map keeps its method and
every earlier method's reason (``"attention: image mass 0.003 below min_image_mass 0.01;
gradcam: gradient failure: all-zero gradients"``).

``method`` in the parameters can also force one method (falling back to ``uniform`` only, with
the reason) or compute ``all`` of them for comparison (each method that succeeds gives its own
map; the ``uniform`` map records why the others failed).

:func:`compute_sample_maps` gives every target of one sample the same maps and reasons as
:func:`compute_maps` one target at a time, faster: it first tries each target's attention, then
runs Grad-CAM for all targets that reach it in one batched forward + backward
(:meth:`~cxr_attention.maps.gradcam.VisionGradCAM.batched`), and computes the term-independent
``activation_norm`` map once per sample.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from cxr_attention.geometry import factor_to_grid
from cxr_attention.maps.attention import (
    attention_gated_map,
    attention_map,
    reference_compat_attention,
    select_layers_heads,
)
from cxr_attention.maps.grid import MapUnavailable, normalise_map, strip_outer_ring, uniform_map
from cxr_attention.maps.hooks import VisionEncodings, vision_layers
from cxr_attention.maps.terms import decode_with_offsets, find_terms_in_text

__all__ = [
    "MAP_COLUMNS",
    "METHODS",
    "MapParams",
    "MapRecord",
    "MapTarget",
    "SampleKey",
    "VisionSource",
    "compute_maps",
    "compute_sample_maps",
    "locate_targets",
    "term_slug",
]

logger = logging.getLogger(__name__)

METHODS = ("attention", "attention_gated", "gradcam", "activation_norm", "uniform")
MAP_COLUMNS = [
    "map_id",
    "sample_id",
    "dicom_id",
    "question_id",
    "term",
    "source",
    "token_positions",
    "method",
    "fallback_reason",
    "layers",
    "heads",
    "image_mass",
    "n_gating_positions",
]
ANSWER_SLUG = "answer"


@dataclass(frozen=True)
class MapParams:
    """Settings of the maps stage (``config["maps"]``).

    Attributes
    ----------
    method : str
        ``"cascade"`` (default), ``"all"``, or one of :data:`METHODS` to force it.
    layers : tuple of int or None
        Decoder layers to average (absolute indices, or negative from the last captured one);
        None: every captured layer.
    heads : tuple of int or None
        Query heads to average; None: all.
    min_image_mass : float
        An attention map whose image mass (before renormalisation) is below this is skipped.
    strip_border : int
        Rings of border tokens zeroed before renormalising (0: keep them).
    gradcam_layer : int
        Vision encoder layer of ``gradcam`` (``-1``: last).
    gradcam_max_rows : int
        Targets of one sample per batched Grad-CAM pass: on the 4B model in bfloat16 a pass of 8
        needs about 18 GB of GPU memory, one about 9 GB (bench/RESULTS.md).
    activation_layer : int
        Vision encoder layer of ``activation_norm`` (``-1``: last).
    reference_compat : bool
        Take positions 1:257 of the prompt as the image tokens, as the reference study did.
        Never the default; for reproducing its numbers only.
    """

    method: str = "cascade"
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    min_image_mass: float = 0.01
    strip_border: int = 0
    gradcam_layer: int = -1
    gradcam_max_rows: int = 8
    activation_layer: int = -1
    reference_compat: bool = False

    def __post_init__(self):
        if self.method not in ("cascade", "all", *METHODS):
            raise ValueError(
                f"unknown map method {self.method!r}; choose cascade, all or one of {METHODS}"
            )
        if not 0 <= self.min_image_mass <= 1:
            raise ValueError(f"min_image_mass must be in [0, 1], got {self.min_image_mass}")
        if self.gradcam_max_rows < 1:
            raise ValueError(f"gradcam_max_rows must be at least 1, got {self.gradcam_max_rows}")

    @classmethod
    def from_dict(cls, params: Mapping | None) -> MapParams:
        """From a config mapping; unknown keys are ignored, lists become tuples."""
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in params.items():
            if key not in known:
                continue
            if key in ("layers", "heads") and value is not None:
                value = tuple(int(v) for v in value)
            elif key in ("strip_border", "gradcam_layer", "gradcam_max_rows", "activation_layer"):
                value = int(value)  # the config's boolean strip_border means one ring
            elif key == "min_image_mass":
                value = float(value)
            elif key == "reference_compat":
                value = bool(value)
            values[key] = value
        return cls(**values)


@dataclass(frozen=True)
class SampleKey:
    """Identifiers of one (image, question) sample."""

    sample_id: str
    dicom_id: str = ""
    question_id: str = ""


@dataclass(frozen=True)
class MapTarget:
    """What a map explains.

    Attributes
    ----------
    term : str
        The term ("" for the answer map).
    source : str
        ``answer`` (all generated tokens), ``generated`` (term in the generated text), ``prompt``
        (term only in the prompt) or ``absent`` (term found in neither).
    generated_positions : tuple of int
        Indices into ``generated_ids`` (every occurrence).
    prompt_positions : tuple of int
        Indices into ``input_ids`` (every occurrence).
    forced_ids : tuple of int
        Tokens Grad-CAM teacher-forces as the start of the answer when the term was not
        generated: its first occurrence's tokens in the prompt, or the term tokenised alone.
    """

    term: str
    source: str
    generated_positions: tuple[int, ...] = ()
    prompt_positions: tuple[int, ...] = ()
    forced_ids: tuple[int, ...] = ()

    @property
    def token_positions(self) -> tuple[int, ...]:
        return self.prompt_positions if self.source == "prompt" else self.generated_positions


@dataclass
class MapRecord:
    """One row of the maps table (``docs/architecture.md``)."""

    map_id: str
    sample_id: str
    dicom_id: str
    question_id: str
    term: str
    source: str
    token_positions: tuple[int, ...]
    method: str
    fallback_reason: str
    layers: str
    heads: str
    image_mass: float
    n_gating_positions: int

    def to_row(self) -> dict:
        """The table row: positions ``"|"``-joined, every column of :data:`MAP_COLUMNS`."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["token_positions"] = "|".join(str(p) for p in self.token_positions)
        return row


@dataclass
class VisionSource:
    """Lazy access to the model and pixels the vision-side methods need.

    ``load`` is called at most once, on first use, and returns ``(model, pixel_values)``; it may
    raise :class:`MapUnavailable` (no model configured, image missing) and the reason is then
    recorded for every vision method of the sample.
    """

    load: Callable[[], tuple[object, object]]
    # Shared by the sources of one job: an image's vision encoding, reused across its samples.
    encodings: VisionEncodings | None = None
    _loaded: tuple | None = field(default=None, init=False)
    _error: MapUnavailable | None = field(default=None, init=False)

    def get(self) -> tuple[object, object]:
        if self._error is not None:
            raise self._error
        if self._loaded is None:
            try:
                self._loaded = self.load()
            except MapUnavailable as error:
                self._error = error
                raise
        return self._loaded


def term_slug(term: str) -> str:
    """File-name-safe slug of a term (``"pleural effusion"`` -> ``"pleural_effusion"``)."""
    slug = re.sub(r"[^0-9a-z]+", "_", term.lower()).strip("_")
    return slug or ANSWER_SLUG


def locate_targets(
    tokenizer, input_ids: np.ndarray, generated_ids: np.ndarray, terms: Sequence[str]
) -> list[MapTarget]:
    """The answer target, then one target per term (synonyms are separate terms).

    Terms with the same slug (:func:`term_slug`) are searched once, under the first spelling.
    A term found in the generated text is a ``generated`` target even if the prompt has it too.
    """
    generated_ids = np.asarray(generated_ids).reshape(-1)
    input_ids = np.asarray(input_ids).reshape(-1)
    targets = [MapTarget("", "answer", generated_positions=tuple(range(generated_ids.size)))]
    # Decode each sequence once; every term is then matched in the same text.
    answer_text = decode_with_offsets(tokenizer, generated_ids)
    prompt_text = decode_with_offsets(tokenizer, input_ids)
    seen = {ANSWER_SLUG}  # a term slugged "answer" would collide with the answer map's id
    for term in terms:
        slug = term_slug(term)
        if not term.strip() or slug in seen:
            continue  # one target per map id: "pleural-effusion" and "Pleural effusion" are one
        seen.add(slug)
        in_answer = find_terms_in_text(*answer_text, [term])
        in_prompt = find_terms_in_text(*prompt_text, [term])
        prompt_positions = tuple(sorted({p for m in in_prompt for p in m.token_positions}))
        if in_answer:
            positions = tuple(sorted({p for m in in_answer for p in m.token_positions}))
            first = in_answer[0].token_positions
            targets.append(
                MapTarget(
                    term,
                    "generated",
                    generated_positions=positions,
                    prompt_positions=prompt_positions,
                    forced_ids=tuple(int(generated_ids[p]) for p in first),
                )
            )
        elif in_prompt:
            first = in_prompt[0].token_positions
            targets.append(
                MapTarget(
                    term,
                    "prompt",
                    prompt_positions=prompt_positions,
                    forced_ids=tuple(int(input_ids[p]) for p in first),
                )
            )
        else:
            forced = tokenizer(term, add_special_tokens=False)["input_ids"]
            targets.append(MapTarget(term, "absent", forced_ids=tuple(int(i) for i in forced)))
    return targets


def compute_maps(
    capture: Mapping[str, np.ndarray],
    target: MapTarget,
    key: SampleKey,
    params: MapParams,
    *,
    vision: VisionSource | None = None,
    aspect_ratio: float = 1.0,
) -> list[tuple[MapRecord, np.ndarray]]:
    """The map(s) of one target under ``params.method``.

    Parameters
    ----------
    capture : mapping of str to ndarray
        Capture arrays (``docs/architecture.md``).
    target : MapTarget
    key : SampleKey
    params : MapParams
    vision : VisionSource, optional
        Model and pixels for ``gradcam`` and ``activation_norm``; None: those are skipped.
    aspect_ratio : float
        Image width / height (for a non-square token count).

    Returns
    -------
    list of (MapRecord, ndarray)
        One pair for ``cascade`` and a forced method; one per successful method for ``all``.
        Every array is float32, 2-D, non-negative, summing to 1.
    """
    context = _Context(capture, params, vision, aspect_ratio)
    return _target_maps(context, target, key)


def compute_sample_maps(
    capture: Mapping[str, np.ndarray],
    targets: Sequence[MapTarget],
    key: SampleKey,
    params: MapParams,
    *,
    vision: VisionSource | None = None,
    aspect_ratio: float = 1.0,
) -> list[tuple[MapRecord, np.ndarray]]:
    """The maps of every target of one sample, Grad-CAM batched across the targets.

    Equal to concatenating :func:`compute_maps` over ``targets`` (same records, same reasons,
    same arrays up to float rounding): each target's attention is tried first, the targets that
    reach ``gradcam`` share one batched Grad-CAM pass, and the cascade then goes on per target.

    Parameters
    ----------
    capture : mapping of str to ndarray
    targets : sequence of MapTarget
        Typically :func:`locate_targets`'s answer and term targets.
    key : SampleKey
    params : MapParams
    vision : VisionSource, optional
    aspect_ratio : float

    Returns
    -------
    list of (MapRecord, ndarray)
        The maps of each target in turn.
    """
    context = _Context(capture, params, vision, aspect_ratio)
    _batch_gradcam(context, targets)
    results = []
    for target in targets:
        results.extend(_target_maps(context, target, key))
    return results


def _chain(params: MapParams, target: MapTarget) -> list[str]:
    """The methods tried in order for a forced method or the cascade."""
    if params.method == "cascade":
        first = "attention_gated" if target.source == "prompt" else "attention"
        return [first, "gradcam", "activation_norm", "uniform"]
    return [params.method, "uniform"] if params.method != "uniform" else ["uniform"]


def _target_maps(
    context: _Context, target: MapTarget, key: SampleKey
) -> list[tuple[MapRecord, np.ndarray]]:
    """The map(s) of one target under ``context.params.method``."""
    if context.params.method == "all":
        results, reasons = [], []
        for method in METHODS:
            if method == "uniform":
                results.append(_record(context, target, key, method, reasons))
                continue
            try:
                results.append(_record(context, target, key, method, []))
            except MapUnavailable as error:
                reasons.append(f"{method}: {error.reason}")
        return results
    reasons: list[str] = []
    for method in _chain(context.params, target):
        try:
            return [_record(context, target, key, method, reasons)]
        except MapUnavailable as error:
            reasons.append(f"{method}: {error.reason}")
    raise AssertionError("uniform never fails")  # pragma: no cover


def _batch_gradcam(context: _Context, targets: Sequence[MapTarget]) -> None:
    """Fill the context's outcomes with ``gradcam`` for every target that will ask for it."""
    method = context.params.method
    if method in ("all", "gradcam"):
        pending = list(targets)
    elif method == "cascade":
        pending = []
        for target in targets:
            try:
                _outcome(context, target, _chain(context.params, target)[0])
            except MapUnavailable:
                pending.append(target)
    else:
        return
    pending = [t for t in dict.fromkeys(pending) if (t, "gradcam") not in context.outcomes]
    if len(pending) < 2:
        return  # nothing to share: the cascade's own call does it
    try:
        model, pixel_values = _vision(context)
    except MapUnavailable:
        return  # each target records the reason when its cascade gets there
    gradcam, layer_name = _gradcam_on_layer(context, model)
    requests = [_gradcam_request(context, target) for target in pending]
    outcomes = gradcam.batched(
        context.capture["input_ids"],
        pixel_values,
        requests,
        max_rows=context.params.gradcam_max_rows,
    )
    for target, outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, Exception):
            outcome = _gradient_failure(outcome)
        else:
            outcome = (normalise_map(outcome), math.nan, layer_name, "", 0)
        context.outcomes[(target, "gradcam")] = outcome


@dataclass
class _Context:
    capture: Mapping[str, np.ndarray]
    params: MapParams
    vision: VisionSource | None
    aspect_ratio: float
    # (target or None, method) -> _compute's result or its MapUnavailable: each method runs
    # once per target, and the term-independent activation_norm once per sample (key None).
    outcomes: dict = field(default_factory=dict)


def _outcome(context: _Context, target: MapTarget, method: str):
    """``_compute`` once per (target, method); a failure is remembered and raised again."""
    key = (None if method == "activation_norm" else target, method)
    if key not in context.outcomes:
        try:
            context.outcomes[key] = _compute(context, target, method)
        except MapUnavailable as error:
            context.outcomes[key] = error
    outcome = context.outcomes[key]
    if isinstance(outcome, MapUnavailable):
        raise outcome
    return outcome


def _record(
    context: _Context, target: MapTarget, key: SampleKey, method: str, reasons: Sequence[str]
) -> tuple[MapRecord, np.ndarray]:
    """Compute one method's map and its table row, or raise MapUnavailable."""
    grid_map, image_mass, layers, heads, n_gating = _outcome(context, target, method)
    if context.params.strip_border and method != "uniform":
        grid_map = strip_outer_ring(grid_map, context.params.strip_border)
    grid_map = normalise_map(grid_map)
    slug = term_slug(target.term) if target.source != "answer" else ANSWER_SLUG
    record = MapRecord(
        map_id=f"{key.sample_id}__{slug}__{target.source}__{method}",
        sample_id=key.sample_id,
        dicom_id=key.dicom_id,
        question_id=key.question_id,
        term=target.term,
        source=target.source,
        token_positions=target.token_positions,
        method=method,
        fallback_reason="; ".join(reasons),
        layers=layers,
        heads=heads,
        image_mass=image_mass,
        n_gating_positions=n_gating,
    )
    return record, grid_map


def _compute(context: _Context, target: MapTarget, method: str):
    """Dispatch one method: ``(grid, image_mass, layers, heads, n_gating_positions)``."""
    if method in ("attention", "attention_gated"):
        return _attention_method(context, target, method)
    if method == "gradcam":
        return _gradcam_method(context, target)
    if method == "activation_norm":
        return _activation_method(context)
    if method == "uniform":
        if context.params.method not in ("all", "uniform"):  # a fallback, not a method asked for
            logger.warning(
                "uniform map for %r (%s): no other method gave a usable map",
                target.term or "answer",
                target.source,
            )
        return uniform_map(_grid_shape(context)), math.nan, "", "", 0
    raise ValueError(f"unknown method {method!r}")


def _attention_method(context: _Context, target: MapTarget, method: str):
    capture, params = context.capture, context.params
    if target.source == "absent":
        raise MapUnavailable("term not found")
    attention = np.asarray(capture["attention"])
    if params.reference_compat:
        attention = reference_compat_attention(capture)
    layer_index, head_index = select_layers_heads(
        capture["layers"], attention.shape[1], layers=params.layers, heads=params.heads
    )
    n_gating = 0
    if method == "attention":
        if target.source == "prompt":
            raise MapUnavailable("term not generated (only in the prompt)")
        grid_map, image_mass = attention_map(
            attention,
            target.generated_positions,
            layer_index=layer_index,
            head_index=head_index,
            aspect_ratio=context.aspect_ratio,
        )
    else:
        if not target.prompt_positions:
            raise MapUnavailable("term not in the prompt (nothing to gate on)")
        grid_map, image_mass, n_gating = attention_gated_map(
            attention,
            capture["text_attention"],
            target.prompt_positions,
            layer_index=layer_index,
            head_index=head_index,
            aspect_ratio=context.aspect_ratio,
        )
    if image_mass < params.min_image_mass:
        raise MapUnavailable(
            f"image mass {image_mass:.3g} below min_image_mass {params.min_image_mass:g}"
        )
    layers = "|".join(str(int(np.asarray(capture["layers"])[i])) for i in layer_index)
    heads = "|".join(str(int(h)) for h in head_index)
    return grid_map, image_mass, layers, heads, n_gating


def _vision(context: _Context):
    if context.vision is None:
        raise MapUnavailable("no model available")
    return context.vision.get()


def _gradcam_method(context: _Context, target: MapTarget):
    model, pixel_values = _vision(context)
    gradcam, layer_name = _gradcam_on_layer(context, model)
    following, positions = _gradcam_request(context, target)
    try:
        grid_map = gradcam(context.capture["input_ids"], pixel_values, following, positions)
    except MapUnavailable:
        raise
    except Exception as error:
        raise _gradient_failure(error) from error
    return normalise_map(grid_map), math.nan, layer_name, "", 0


def _gradcam_on_layer(context: _Context, model):
    """The Grad-CAM of ``params.gradcam_layer`` and that layer's name for the table."""
    from cxr_attention.maps.gradcam import VisionGradCAM

    layers = vision_layers(model)
    layer = context.params.gradcam_layer
    gradcam = VisionGradCAM(model, layers[layer], encodings=context.vision.encodings)
    return gradcam, f"vision:{layer % len(layers)}"


def _gradcam_request(context: _Context, target: MapTarget):
    """``(following_ids, positions)``: generated tokens, or the term's tokens forced."""
    if target.source in ("answer", "generated"):
        following = np.asarray(context.capture["generated_ids"]).reshape(-1)
        return following, target.generated_positions
    following = np.asarray(target.forced_ids, dtype=np.int64)
    return following, range(following.size)


def _gradient_failure(error: Exception) -> MapUnavailable:
    """A MapUnavailable as is; any other failure of the backward pass as a recorded fallback."""
    if isinstance(error, MapUnavailable):
        return error
    return MapUnavailable(f"gradient failure: {type(error).__name__}: {error}")


def _activation_method(context: _Context):
    from cxr_attention.maps.activation import activation_norm_map

    model, pixel_values = _vision(context)
    layer = context.params.activation_layer
    n_layers = len(vision_layers(model))
    grid_map = activation_norm_map(
        model, pixel_values, layer=layer, encodings=context.vision.encodings
    )
    return grid_map, math.nan, f"vision:{layer % n_layers}", "", 0


def _grid_shape(context: _Context) -> tuple[int, int]:
    if "grid_shape" in context.capture:
        rows, cols = (int(v) for v in np.asarray(context.capture["grid_shape"]).reshape(-1)[:2])
        return rows, cols
    n_tokens = np.asarray(context.capture["attention"]).shape[-1]
    return factor_to_grid(n_tokens, context.aspect_ratio)
