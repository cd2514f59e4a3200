"""The app's "Question analysis" tab: one radiograph, one question, the answer and its map.

The question goes through `cxr_attention.app.run_explain` (the ``cxr-attention explain`` call)
into a fresh folder of the session; the tab shows what explain wrote (the answer, P(yes), the
yes+no mass, ``overlay.png`` and ``metrics.csv``). The radiograph is an upload, or an image of the
run's manifest when the app was given ``--results``; the question is free text, or the bank's
question of a finding and strategy (``config/questions.yaml``).

After a question, the answer's attention map is redrawn from the session's latest capture
(``attention.npz``) for one captured layer (or all) and one head (or all), with the border ring
stripped or not and the colours clipped to percentiles or not, through the library's own map,
metric and overlay code; the model is not called again. Clipping is display only: the redrawn
map's grid and metrics are those of the unclipped map.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from cxr_attention.app import (
    QUESTION_API_NAME,
    TAB_LABELS,
    ExplainSettings,
    question_box,
    radiograph_upload,
    run_explain,
    session_folder,
)
from cxr_attention.app_study import ALL
from cxr_attention.explain import DEFAULT_QUESTION_BANK, map_metrics_table
from cxr_attention.io import ConfigError, read_table
from cxr_attention.preprocessed import PreprocessedImage

__all__ = [
    "BANK_QUESTION_API_NAME",
    "DECISION_ROWS",
    "MANIFEST_IMAGE_API_NAME",
    "QUESTION_VIEW_API_NAME",
    "ManifestImages",
    "answer_attention_map",
    "bank_strategies",
    "manifest_picker",
    "open_manifest",
    "question_analysis_tab",
]

QUESTION_VIEW_API_NAME = "/question_view"
BANK_QUESTION_API_NAME = "/question_from_bank"
MANIFEST_IMAGE_API_NAME = "/question_manifest_image"

#: The capture rows of the answer's decision map: the step that chose the first answer token
#: (`cxr_attention.maps.targets`, rows ``decision``).
DECISION_ROWS = (0,)
#: Percentiles of the display clipping when it is on (`cxr_attention.figures.overlay.plot_overlay`
#: clips to its own default); off shows the full range.
_FULL_RANGE = (0.0, 100.0)
#: Width of the border ring the toggle strips (the config's boolean ``maps.strip_border``: one).
_RING = 1


class ManifestImages:
    """The run's manifest images that the preprocess stage wrote, by ``dicom_id``.

    ``manifest.csv`` lists the run's images; ``preprocess/shard-*.csv`` says where each one's
    preprocessed PNG is, relative to the repository root the run folder ``results/<run>`` lives
    in. An image the preprocess stage failed on has no file and is left out.
    """

    def __init__(self, results_dir: str | os.PathLike):
        results_dir = Path(results_dir)
        manifest = read_table(results_dir / "manifest.csv", required=("dicom_id",), text=True)
        tables = sorted((results_dir / "preprocess").glob("shard-*.csv"))
        tables = [t for t in tables if not t.name.endswith(".failures.csv")]
        frames = [read_table(t, required=("dicom_id", "image"), text=True) for t in tables]
        preprocessed = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        rows = {
            row["dicom_id"]: row for row in preprocessed.to_dict("records") if row.get("image", "")
        }
        root = results_dir.resolve().parents[1]  # results/<run> -> the repository root
        self.images: dict[str, Path] = {}
        self.labels: dict[str, str] = {}
        from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS

        for record in manifest.to_dict("records"):
            dicom_id = record["dicom_id"]
            if dicom_id not in rows:
                continue
            self.images[dicom_id] = PreprocessedImage(dicom_id, rows[dicom_id], root).path("image")
            positive = [f for f in CHEXPERT_FINDINGS if record.get(f, "") in ("1", "1.0")]
            view = record.get("view_position", "")
            self.labels[dicom_id] = " · ".join(
                part for part in (dicom_id, view, ", ".join(positive)) if part
            )
        self.left_out = len(manifest) - len(self.images)

    def choices(self) -> list[tuple[str, str]]:
        """Dropdown choices: (label, dicom_id), the label with the view and positive findings."""
        return [(self.labels[d], d) for d in self.images]


def bank_strategies(bank) -> list[tuple[str, str]]:
    """The bank's strategies as dropdown choices (label, ``<strategy>.<variant_index>``)."""
    from cxr_attention.questions.bank import STRATEGIES, build_question_table

    table = build_question_table(bank, findings=None, strategies=STRATEGIES)
    table = table.drop_duplicates(["strategy", "variant_index"])
    return [
        (
            f"{row.strategy} {row.variant_index}: {row.variant_kind}"
            if row.strategy == "hard_positive"
            else row.strategy,
            f"{row.strategy}.{row.variant_index}",
        )
        for row in table.itertuples()
    ]


def _bank_question(bank, finding: str, strategy: str) -> str:
    """The bank's question of ``finding`` and ``strategy`` (``<strategy>.<variant_index>``)."""
    from cxr_attention.questions.bank import STRATEGIES, build_question_table

    table = build_question_table(bank, findings=[finding], strategies=STRATEGIES)
    wanted = table[table["question_id"].str.endswith(f".{strategy}")]
    if wanted.empty:
        raise KeyError(f"{finding} has no {strategy} question in {bank.path}")
    return str(wanted["question"].iloc[0])


def answer_attention_map(
    capture, *, layer: int | None, head: int | None
) -> tuple[np.ndarray, float]:
    """The answer's decision-step attention map of one captured layer and head (None: all).

    Returns the grid (sums to 1) and the image mass, from
    :func:`cxr_attention.maps.attention.attention_map`.
    """
    from cxr_attention.maps.attention import attention_map, select_layers_heads

    layer_index, head_index = select_layers_heads(
        capture.layers,
        np.asarray(capture.attention).shape[1],
        layers=None if layer is None else [layer],
        heads=None if head is None else [head],
    )
    return attention_map(
        capture.attention,
        DECISION_ROWS,
        layer_index=layer_index,
        head_index=head_index,
        aspect_ratio=capture.aspect_ratio,
    )


def _explain_image(folder: Path, stem: str) -> PreprocessedImage:
    """The preprocessed radiograph and masks explain wrote into ``folder``."""
    return PreprocessedImage(
        stem,
        {
            "image": folder / f"{stem}.png",
            "body_mask": folder / f"{stem}_body.png",
            "lung_mask": folder / f"{stem}_lungs.png",
        },
    )


def _choice(value: str | None, name: str) -> int | None:
    """A layer or head dropdown value as an index (None for all)."""
    if value in (None, "", ALL):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be {ALL!r} or a number, got {value!r}") from None


@dataclass(frozen=True)
class _Asked:
    """The session's latest answered question: its explain folder and what the map needs."""

    folder: str
    stem: str
    question: str
    answer: str
    mask_flags: str


def question_analysis_tab(
    loaded_model,
    model_id: str,
    settings: ExplainSettings,
    session_dir: gr.State,
    *,
    results_dir: str | os.PathLike | None = None,
    bank_path: str | os.PathLike = DEFAULT_QUESTION_BANK,
) -> gr.Tab:
    """Build the tab inside the page's ``gr.Tabs`` (called within `build_app`'s Blocks).

    ``session_dir`` is the page's per-session folder state; every question writes a fresh
    subfolder of it, and a picked manifest image is copied into it.
    """
    manifest, manifest_note = open_manifest(results_dir)
    bank, bank_note = _open_bank(bank_path)

    def answer_question(upload, question, session, progress=gr.Progress()):  # noqa: B008
        # Gradio tracks progress for a parameter whose default is a gr.Progress()
        session = session_folder(session)
        no_result = ("", None, None, None)  # answer, P(yes), overlay, metrics
        if upload is None:
            return ("Upload a radiograph (PNG, JPEG or DICOM) first.", *no_result, session, None)
        if not (question or "").strip():
            return ("Type a yes/no question first.", *no_result, session, None)
        out_dir = Path(tempfile.mkdtemp(prefix="question-", dir=session))
        image_path = Path(upload)  # gr.File(type="filepath"): the uploaded copy
        progress(0.1, desc="preprocessing, answering and mapping")
        result = run_explain(loaded_model, model_id, settings, image_path, question, out_dir)
        if result.failure is not None:
            message = f"Cannot use {image_path.name}: {result.failure}"
            gr.Warning(message)
            return (message, *no_result, session, None)
        progress(0.9, desc="reading the outputs")
        answer_json = json.loads((out_dir / "answer.json").read_text())
        status = (
            f"Model answer: {result.generated_text!r}\n\n"
            f"yes+no mass at the first answer token: {answer_json['yes_no_mass']:.3f}"
        )
        if result.mask_flags:
            status += f"\n\nLung masks flagged ({result.mask_flags}): lung metrics left blank."
        asked = _Asked(
            str(out_dir), image_path.stem, question.strip(), result.answer, result.mask_flags
        )
        return (
            status,
            result.answer,
            result.p_yes,
            str(out_dir / "overlay.png"),
            pd.read_csv(out_dir / "metrics.csv"),
            session,
            asked,
        )

    def selectors(asked):
        """The layer and head choices of the latest capture, reset to all."""
        if asked is None:
            return gr.update(choices=[ALL], value=ALL), gr.update(choices=[ALL], value=ALL)
        from cxr_attention.captures import load_capture

        capture = load_capture(Path(asked.folder) / "attention.npz")
        layers = [str(int(v)) for v in np.asarray(capture.layers).reshape(-1)]
        heads = [str(h) for h in range(np.asarray(capture.attention).shape[1])]
        return (
            gr.update(choices=[ALL, *layers], value=ALL),
            gr.update(choices=[ALL, *heads], value=ALL),
        )

    def redraw(layer, head, strip_ring, clip, asked):
        nothing = (None, None, None)  # overlay, grid, metrics
        if asked is None:
            return ("Run a question first: the map is redrawn from its capture.", *nothing)
        from cxr_attention.captures import load_capture
        from cxr_attention.figures.overlay import plot_overlay
        from cxr_attention.maps.grid import MapUnavailable, strip_outer_ring

        folder = Path(asked.folder)
        try:
            layer_number, head_number = _choice(layer, "layer"), _choice(head, "head")
            capture = load_capture(folder / "attention.npz")
            grid, image_mass = answer_attention_map(capture, layer=layer_number, head=head_number)
            if strip_ring:
                grid = strip_outer_ring(grid, _RING)
        except (ValueError, MapUnavailable) as error:
            return (f"No map for layer {layer}, head {head}: {error}", *nothing)
        image = _explain_image(folder, asked.stem)
        body, lungs = image.body_mask() > 0, image.lung_labels()
        what = f"attention of the answer, layer {layer or ALL}, head {head or ALL}" + (
            ", border ring stripped" if strip_ring else ""
        )
        overlay = plot_overlay(
            image.image(),
            grid,
            body_mask=body,
            lung_labels=lungs,
            title=f"{asked.question} -> {asked.answer}\n({what})",
            out_path=Path(tempfile.mkdtemp(prefix="view-", dir=folder)) / "overlay.png",
            **({} if clip else {"clip": _FULL_RANGE}),
        )
        map_id = "answer__view"
        metrics = map_metrics_table([(map_id, grid)], body, lungs, mask_flags=asked.mask_flags)
        status = (
            f"{what[0].upper()}{what[1:]}: image mass {image_mass:.3f} before renormalising; "
            + ("colours clipped to percentiles (display only)." if clip else "full colour range.")
        )
        return status, str(overlay), pd.DataFrame(grid), metrics

    def from_bank(finding, strategy):
        if bank is None:
            raise gr.Error(bank_note)
        try:
            return _bank_question(bank, finding, strategy)
        except (KeyError, ConfigError) as error:
            raise gr.Error(str(error).strip("'\"")) from None

    with gr.Tab(TAB_LABELS[0], elem_id="tab-question-analysis") as tab:
        asked = gr.State(None)
        with gr.Row():
            with gr.Column():
                upload = radiograph_upload("qa-image")
                manifest_picker(
                    manifest,
                    manifest_note,
                    "qa",
                    upload,
                    session_dir,
                    api_name=MANIFEST_IMAGE_API_NAME,
                )
                question = question_box("qa-question")
                with gr.Accordion("Or choose a question of the bank", open=False):
                    gr.Markdown(bank_note, elem_id="qa-bank-note")
                    with gr.Row():
                        finding = gr.Dropdown(
                            [f.name for f in bank.findings] if bank else [],
                            label="Finding",
                            interactive=bank is not None,
                            elem_id="qa-bank-finding",
                        )
                        strategy = gr.Dropdown(
                            bank_strategies(bank) if bank else [],
                            label="Strategy",
                            interactive=bank is not None,
                            elem_id="qa-bank-strategy",
                        )
                    use_bank = gr.Button("Use this question", elem_id="qa-bank-use")
                run = gr.Button("Run", variant="primary", elem_id="qa-run")
            with gr.Column():
                status = gr.Markdown(elem_id="qa-status")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="qa-answer")
                p_yes = gr.Number(label="P(yes)", interactive=False, elem_id="qa-p-yes")
                overlay = gr.Image(label="Map of the answer", type="filepath", elem_id="qa-overlay")
        metrics = gr.Dataframe(label="Metrics", interactive=False, elem_id="qa-metrics")
        with gr.Accordion("Attention of the answer by layer and head", open=True):
            gr.Markdown(
                "Redrawn from the latest question's capture, without the model: the attention "
                "of the step that chose the first answer token, averaged over the chosen "
                "captured layer and head (or all)."
            )
            with gr.Row():
                layer = gr.Dropdown(
                    [ALL], value=ALL, label="Layer", allow_custom_value=True, elem_id="qa-layer"
                )
                head = gr.Dropdown(
                    [ALL], value=ALL, label="Head", allow_custom_value=True, elem_id="qa-head"
                )
                strip_ring = gr.Checkbox(
                    value=False, label="Strip the border ring", elem_id="qa-strip-ring"
                )
                clip = gr.Checkbox(
                    value=True,
                    label="Clip colours to percentiles (display only)",
                    elem_id="qa-clip",
                )
            view = gr.Button("Redraw", elem_id="qa-view-run")
            with gr.Row():
                view_status = gr.Markdown(elem_id="qa-view-status")
                view_overlay = gr.Image(
                    label="Attention of the answer", type="filepath", elem_id="qa-view-overlay"
                )
            view_metrics = gr.Dataframe(
                label="Metrics of the redrawn map (unclipped)",
                interactive=False,
                elem_id="qa-view-metrics",
            )
            with gr.Accordion("Token grid of the redrawn map (sums to 1)", open=False):
                view_grid = gr.Dataframe(interactive=False, elem_id="qa-view-grid")

        view_inputs = [layer, head, strip_ring, clip, asked]
        view_outputs = [view_status, view_overlay, view_grid, view_metrics]
        run.click(
            answer_question,
            inputs=[upload, question, session_dir],
            outputs=[status, answer, p_yes, overlay, metrics, session_dir, asked],
            api_name=QUESTION_API_NAME.lstrip("/"),
        ).then(selectors, inputs=asked, outputs=[layer, head], api_visibility="private").then(
            redraw, inputs=view_inputs, outputs=view_outputs, api_visibility="private"
        )
        view.click(
            redraw,
            inputs=view_inputs,
            outputs=view_outputs,
            api_name=QUESTION_VIEW_API_NAME.lstrip("/"),
        )
        for control in (layer, head, strip_ring, clip):
            control.input(
                redraw, inputs=view_inputs, outputs=view_outputs, api_visibility="private"
            )
        use_bank.click(
            from_bank,
            inputs=[finding, strategy],
            outputs=question,
            api_name=BANK_QUESTION_API_NAME.lstrip("/"),
        )
    return tab


def manifest_picker(
    manifest: ManifestImages | None,
    note: str,
    prefix: str,
    upload: gr.File,
    session_dir: gr.State,
    *,
    api_name: str,
) -> gr.Dropdown:
    """The run's manifest images in a dropdown (``<prefix>-manifest``, with its note
    ``<prefix>-manifest-note``) whose pick fills ``upload`` (every tab that offers them uses
    this one).

    The pick is a copy of the preprocessed image in the session folder: the page serves nothing
    outside it, and explain names its outputs after the file's stem (the ``dicom_id``), as for
    an upload of the same file.
    """

    def pick_image(dicom_id, session):
        session = session_folder(session)
        if manifest is None or dicom_id not in manifest.images:
            gr.Warning(f"No preprocessed image {dicom_id!r} in the run's manifest.")
            return None, session
        source = manifest.images[dicom_id]
        if not source.is_file():
            gr.Warning(f"{source}: the preprocessed image is missing.")
            return None, session
        copy = Path(tempfile.mkdtemp(prefix="manifest-", dir=session)) / source.name
        shutil.copyfile(source, copy)
        return str(copy), session

    with gr.Accordion("Or pick an image of the run's manifest", open=manifest is not None):
        gr.Markdown(note, elem_id=f"{prefix}-manifest-note")
        dropdown = gr.Dropdown(
            manifest.choices() if manifest else [],
            label="Manifest image (dicom_id · view · positive findings)",
            interactive=manifest is not None,
            elem_id=f"{prefix}-manifest",
        )
    dropdown.input(
        pick_image,
        inputs=[dropdown, session_dir],
        outputs=[upload, session_dir],
        api_name=api_name.lstrip("/"),
    )
    return dropdown


def open_manifest(results_dir) -> tuple[ManifestImages | None, str]:
    """The run's manifest images and a sentence about them (or why there are none)."""
    if results_dir is None:
        return None, "No run folder was given (`--results results/<run>`): upload a radiograph."
    path = Path(results_dir) / "manifest.csv"
    try:
        manifest = ManifestImages(results_dir)
    except ConfigError as error:
        return None, f"Cannot list the run's images: {error}"
    note = f"{len(manifest.images)} preprocessed images of `{path}`"
    if manifest.left_out:
        note += f" ({manifest.left_out} without a preprocessed file left out)"
    return manifest, note + "; the pick fills the upload."


def _open_bank(bank_path) -> tuple[object | None, str]:
    """The question bank and a sentence about it (or why it is not there)."""
    from cxr_attention.questions.bank import load_question_bank

    if not Path(bank_path).is_file():
        return None, f"No question bank at `{bank_path}` (run the app from the repository)."
    try:
        bank = load_question_bank(bank_path)
    except ConfigError as error:
        return None, f"Cannot read the question bank: {error}"
    return bank, f"Questions of `{bank_path}`; the choice fills the question box."
