"""The maps stage: every sample of an inference shard -> its maps table rows and arrays.

Also the single-image entry point behind ``cxr-attention explain`` (:func:`explain_maps`), the
writer both share (:func:`write_maps`), and the map of each generated token of one capture
(:func:`generated_token_maps`, the app's token-conditioned tab).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxr_attention.captures import Capture, as_capture, load_capture, locate_capture
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures
from cxr_attention.io import write_npz as _write_npz
from cxr_attention.maps.cascade import compute_sample_maps
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.hooks import VisionEncodings
from cxr_attention.maps.methods.base import VisionSource
from cxr_attention.maps.methods.head_selected import with_localization_heads
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import MAP_COLUMNS, MapRecord, SampleKey
from cxr_attention.maps.targets import MapTarget, layer_targets, locate_targets
from cxr_attention.maps.terms import decode_with_offsets
from cxr_attention.progress import Progress

__all__ = ["explain_maps", "generated_token_maps", "run_maps_shard", "write_maps"]

logger = logging.getLogger(__name__)

_ANSWER_COLUMNS = ("sample_id", "dicom_id", "question_id", "capture")


def explain_maps(
    capture: Capture | Mapping[str, np.ndarray],
    *,
    terms: Sequence[str],
    loaded_model=None,
    inputs: Mapping | None = None,
    method: str = "cascade",
    params: Mapping | MapParams | None = None,
    tokenizer=None,
    key: SampleKey | None = None,
) -> list[tuple[MapRecord, np.ndarray]]:
    """All maps of one answered question: the answer map, then one target per term.

    Parameters
    ----------
    capture : Capture (or a mapping of its arrays)
        The capture (``attention.npz``).
    terms : sequence of str
        Target terms (``--term``, repeatable) and the question's terms.
    loaded_model : cxr_attention.inference.model.LoadedModel, optional
        Enables ``gradcam`` and ``activation_norm``; its tokenizer locates the terms.
    inputs : mapping, optional
        Processor outputs; its ``pixel_values`` are used when the capture has none.
    method : str
        ``cascade``, ``all`` or one method name (``--method``); overrides ``params["method"]``.
    params : mapping or MapParams, optional
        The ``maps`` config section.
    tokenizer : optional
        Needed when ``loaded_model`` is None.
    key : SampleKey, optional
        Identifiers for the map ids (default: sample id ``explain``).

    Returns
    -------
    list of (MapRecord, ndarray)
    """
    settings = params if isinstance(params, MapParams) else MapParams.from_dict(params)
    settings = dataclasses.replace(settings, method=method)  # validated again
    capture = as_capture(capture)
    if tokenizer is None:
        if loaded_model is None:
            raise ValueError("explain_maps needs a loaded model or a tokenizer to locate terms")
        tokenizer = loaded_model.tokenizer
    pixel_values = capture.pixel_values
    if pixel_values is None and inputs is not None:
        pixel_values = inputs.get("pixel_values")

    def load_vision():
        if loaded_model is None:
            raise MapUnavailable("no model available")
        if pixel_values is None:
            raise MapUnavailable("no pixel values available")
        return loaded_model.model, pixel_values

    vision = VisionSource(load_vision, tokenizer=tokenizer)
    key = key or SampleKey("explain")
    targets = _sample_targets(tokenizer, capture, list(terms), settings)
    return compute_sample_maps(
        capture, targets, key, settings, vision=vision, aspect_ratio=capture.aspect_ratio
    )


def generated_token_maps(
    capture: Capture | Mapping[str, np.ndarray],
    *,
    tokenizer,
    params: Mapping | MapParams | None = None,
    key: SampleKey | None = None,
) -> list[tuple[MapRecord, np.ndarray]]:
    """The ``attention`` map of each generated token of one capture, in generation order.

    Token ``i``'s map is the attention method's map of capture row ``i``, the decoding step that
    produced ``generated_ids[i]`` (where the model looked while choosing to say it), with the
    settings and finishing of :func:`explain_maps` (layers, heads, ``min_image_mass``, border
    strip, renormalisation). A row the method cannot map (its image mass below
    ``min_image_mass``, non-finite values) gets the ``uniform`` map with the reason, as a forced
    method does. Row 0 is the answer's decision map.

    Parameters
    ----------
    capture : Capture (or a mapping of its arrays)
    tokenizer : transformers tokenizer
        Decodes each token's text (its span of the decoded answer, :mod:`cxr_attention.maps.terms`).
    params : mapping or MapParams, optional
        The ``maps`` config section; its ``method`` is ignored (``attention`` is forced).
    key : SampleKey, optional
        Identifiers; each token's map id takes ``<sample_id>_token<i>`` (default ``explain``).

    Returns
    -------
    list of (MapRecord, ndarray)
        One per generated token: ``term`` the token's decoded text (may be empty for a piece
        that decodes to nothing), ``source`` ``generated``, ``token_positions`` ``(i,)``.
    """
    settings = params if isinstance(params, MapParams) else MapParams.from_dict(params)
    settings = dataclasses.replace(settings, method="attention")
    capture = as_capture(capture)
    key = key or SampleKey("explain")
    text, spans = decode_with_offsets(tokenizer, capture.generated_ids)
    results: list[tuple[MapRecord, np.ndarray]] = []
    for index, (start, end) in enumerate(spans):
        target = MapTarget(text[start:end], "generated", generated_positions=(index,))
        token_key = dataclasses.replace(key, sample_id=f"{key.sample_id}_token{index}")
        results += compute_sample_maps(
            capture, [target], token_key, settings, aspect_ratio=capture.aspect_ratio
        )
    return results


def write_maps(
    results: Sequence[tuple[MapRecord, np.ndarray]],
    out_csv: str | os.PathLike,
    out_npz: str | os.PathLike,
) -> None:
    """Write the maps table and the float32 arrays keyed by ``map_id``, both atomically."""
    rows = [record.to_row() for record, _ in results]
    write_csv(pd.DataFrame(rows, columns=MAP_COLUMNS), out_csv)
    arrays = {record.map_id: np.asarray(grid, dtype=np.float32) for record, grid in results}
    if len(arrays) != len(results):
        raise ValueError("duplicate map ids")
    _write_npz(out_npz, **arrays)


def run_maps_shard(
    *,
    answers_csv: str | os.PathLike,
    captures_dir: str | os.PathLike,
    questions_csv: str | os.PathLike,
    model_id: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_npz: str | os.PathLike,
    failures_csv: str | os.PathLike,
    params: Mapping | None = None,
    images_csv: str | os.PathLike | None = None,
    localization_heads_json: str | os.PathLike | None = None,
) -> None:
    """Maps of one inference shard.

    For every row of the answers table: load its capture, build the answer maps and one map per
    target term of its question (``questions.csv`` ``target_terms``) by every method of
    ``maps.methods``, the cascade's pick marked (``params["method"]`` is explain's and is
    ignored here). The
    model is loaded only when a vision method is reached; its pixels come from the capture's
    ``pixel_values`` or, when absent (the workflow does not store them), from the preprocessed
    image (``images_csv``'s ``image`` column by ``dicom_id``, else the answers table's own
    ``image`` column) through the model's image processor. A missing or bad capture is a
    failures row (stage ``maps``) and the shard goes on.

    The maps stage always makes the corrected maps: a ``reference_compat`` key in ``params`` is
    ignored here (the workflow's ``reference_compat`` rule recomputes the reference's maps from
    the same captures; :func:`explain_maps` and :class:`MapParams` still accept it).

    Parameters
    ----------
    answers_csv : path
        ``inference/shard-<k>.csv``; needs ``sample_id, dicom_id, question_id, capture``.
    captures_dir : path
        Folder of the shard's captures; a relative ``capture`` path that does not exist as given
        is looked up there by file name.
    questions_csv : path
        ``questions.csv`` (``question_id, target_terms``).
    model_id : path or hub id
        The model (its tokenizer locates the terms even when no vision method runs).
    out_csv, out_npz, failures_csv : path
    params : mapping
        The ``maps`` config section (:class:`MapParams` keys, plus ``device`` and
        ``min_free_gpu_gb`` for loading the model).
    images_csv : path, optional
        ``preprocess/shard-<k>.csv`` (``dicom_id, image``): the preprocessed images.
    localization_heads_json : path, optional
        The heads chosen on the calibration split (``heads/localization_heads.json``,
        :func:`~cxr_attention.maps.methods.head_selected.write_head_selection`), for
        ``head_selected``; hand-set ``localization_heads`` in ``params`` win over it.
    """
    params = with_localization_heads(params or {}, localization_heads_json)
    if params.pop("reference_compat", False):
        logger.info("maps: reference_compat is left to the reference_compat rule")
    # The study compares the listed methods on the same samples; ``method`` is explain's.
    settings = dataclasses.replace(MapParams.from_dict(params), method="methods")
    answers = read_table(answers_csv, required=_ANSWER_COLUMNS, text=True)
    image_of: dict[str, str] = {}
    if images_csv is not None:
        images = read_table(images_csv, required=("dicom_id", "image"), text=True)
        image_of = dict(zip(images["dicom_id"], images["image"], strict=True))
    questions = read_table(questions_csv, required=("question_id", "target_terms"), text=True)
    terms_of = {
        row.question_id: [t.strip() for t in str(row.target_terms).split("|") if t.strip()]
        for row in questions.drop_duplicates("question_id").itertuples(index=False)
    }

    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(os.fspath(model_id), trust_remote_code=False)
    model_holder = _LazyModel(model_id, params)
    # Every question about an image sees the same pixels: rebuild them once per image. The
    # answers table lists an image's questions together, so the last image's pixels suffice
    # (one 896 x 896 image is ~10 MB in float32; a shard's worth would not fit).
    pixels_of: dict[str, object] = {}
    encodings = VisionEncodings()  # and the vision tower's output for them, once per image
    results: list[tuple[MapRecord, np.ndarray]] = []
    failures: list[Failure] = []
    progress = Progress("maps", total=len(answers), unit="samples")
    for row in answers.itertuples(index=False):
        capture_path = locate_capture(row.capture, captures_dir)
        try:
            capture = load_capture(capture_path)
        except InputError as error:
            logger.warning("maps: %s", error)
            failures.append(Failure.from_exception("maps", row.dicom_id, str(capture_path), error))
            progress.step()
            continue
        image_path = image_of.get(row.dicom_id) or getattr(row, "image", "") or ""
        vision = VisionSource(
            _vision_loader(model_holder, processor, capture, image_path, pixels_of),
            encodings=encodings,
            tokenizer=processor.tokenizer,
        )
        key = SampleKey(row.sample_id, row.dicom_id, row.question_id)
        targets = _sample_targets(
            processor.tokenizer, capture, terms_of.get(row.question_id, []), settings
        )
        # One sample at a time: its Grad-CAM targets share one batched forward + backward.
        try:
            results.extend(
                compute_sample_maps(
                    capture,
                    targets,
                    key,
                    settings,
                    vision=vision,
                    aspect_ratio=capture.aspect_ratio,
                )
            )
        except Exception as error:  # one sample's failure is a failures row, not a lost shard
            logger.exception("maps: sample %s failed", row.sample_id)
            failures.append(Failure.from_exception("maps", row.dicom_id, str(capture_path), error))
        progress.step()
    write_maps(results, out_csv, out_npz)
    write_failures(failures, failures_csv)


def _sample_targets(
    tokenizer, capture: Capture, terms: Sequence[str], settings: MapParams
) -> list[MapTarget]:
    """The answer's decision and every-row targets, the terms', and the decision map's
    per-layer variants (``maps.per_layer``)."""
    targets = locate_targets(tokenizer, capture.input_ids, capture.generated_ids, terms)
    if settings.per_layer and capture.layers is not None and len(capture.layers) > 1:
        targets += layer_targets(targets[0], capture.layers)
    return targets


class _LazyModel:
    """Loads the model once, on first request; remembers a failure instead of retrying."""

    def __init__(self, model_id, params: Mapping):
        self.model_id = model_id
        self.params = params
        self._model = None
        self._error: str | None = None

    def get(self):
        if self._error is not None:
            raise MapUnavailable(self._error)
        if self._model is None:
            from cxr_attention.inference.model import load_model

            try:
                self._model = load_model(
                    self.model_id,
                    device=self.params.get("device", "auto"),
                    min_free_gpu_gb=float(self.params.get("min_free_gpu_gb", 15.0)),
                )
            except (OSError, RuntimeError, ValueError) as error:
                self._error = f"model could not be loaded: {error}"
                logger.error("maps: %s", self._error)
                raise MapUnavailable(self._error) from error
        return self._model


def _vision_loader(model_holder: _LazyModel, processor, capture, image_path: str, pixels_of: dict):
    """``VisionSource.load`` of one sample; ``pixels_of`` keeps the last image's rebuilt pixels."""

    def load():
        pixel_values = capture.pixel_values
        if pixel_values is None:
            if image_path not in pixels_of:
                pixels_of.clear()
                pixels_of[image_path] = _pixels_from_image(processor, image_path)
            pixel_values = pixels_of[image_path]
        return model_holder.get().model, pixel_values

    return load


def _pixels_from_image(processor, image_path: str):
    """The pixels the model saw, rebuilt from the preprocessed image by the model's processor."""
    from cxr_attention.preprocessed import PreprocessedImage

    if not image_path:
        raise MapUnavailable("no image path (answers table lacks `image`)")
    try:
        return PreprocessedImage("", {"image": image_path}).model_pixels(processor)
    except InputError as error:
        raise MapUnavailable(f"{error.reason}: {image_path}") from error
