"""The app's "Checks" tab: does the model use what the map shows, and the image at all?

One radiograph and one question go through `cxr_attention.app.run_explain` (the question-analysis
call) with explain's faithfulness and reliance outputs on, into a fresh folder; the tab then
reads what explain wrote:

- ``faithfulness.csv`` and ``faithfulness_points.csv``: each answer map's deletion (and insertion)
  curve against random orders, drawn by `cxr_attention.figures.faithfulness`;
- ``reliance.csv``: the answer and P(yes) with a mid-grey, another patient's (the optional swap
  upload), a lung-occluded and no image, beside the real image's
  (`cxr_attention.faithfulness.reliance_tables.against_original`);
- the annotations of this image (``image_id`` = the file's stem) outlined on the answer map's
  overlay (`cxr_attention.figures.overlay`) and scored by explain (its ``box_*`` metrics,
  `cxr_attention.grounding.single`): those of an uploaded file in one of the grounding readers'
  released formats (`cxr_attention.grounding.stage.READERS`), else, for an image of the run's
  manifest (``--results``), those the run's grounding stage recorded
  (``grounding/annotations.csv``, `cxr_attention.grounding.datasets.read_annotation_table`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from cxr_attention.app import (
    ExplainSettings,
    question_box,
    radiograph_upload,
    run_explain,
    session_folder,
)
from cxr_attention.app_question import manifest_picker, open_manifest
from cxr_attention.faithfulness.deletion import PERTURBATIONS
from cxr_attention.faithfulness.reliance import RELIANCE_CONDITIONS
from cxr_attention.faithfulness.reliance_tables import against_original
from cxr_attention.io import InputError
from cxr_attention.settings import schema_defaults

__all__ = [
    "CHECKS_API_NAME",
    "CHECKS_MANIFEST_API_NAME",
    "CURVE_API_NAME",
    "RELIANCE_API_NAME",
    "RUN_ANNOTATIONS",
    "annotations_of_image",
    "checks_tab",
    "reliance_view",
]

#: The API names of the tab's events (``gradio_client.Client.predict(api_name=...)``).
CHECKS_API_NAME = "/checks"
CURVE_API_NAME = "/checks_curve"
RELIANCE_API_NAME = "/checks_reliance"
CHECKS_MANIFEST_API_NAME = "/checks_manifest_image"

#: The run's annotations, relative to its folder (written by the grounding stage).
RUN_ANNOTATIONS = Path("grounding") / "annotations.csv"

#: The conditions the toggles switch on and off (the real image is always shown).
TOGGLED_CONDITIONS = [c for c in RELIANCE_CONDITIONS if c != "original"]
CURVES = ("deletion", "insertion")
RELIANCE_VIEW_COLUMNS = ["condition", "answer", "p_yes", "margin", "unchanged", "p_yes_shift"]
ANNOTATION_COLUMNS = ["dataset", "annotation_id", "finding", "label", "phrase", "boxes", "frame"]
_ANNOTATION_FORMATS = {
    "ms_cxr": "MS-CXR local-alignment CSV",
    "chexlocalize": "CheXlocalize segmentation JSON",
    "vindr_cxr": "VinDr-CXR annotations CSV",
    "nih": "NIH BBox_List_2017.csv",
}
# Why a condition has no answer (explain leaves its row blank).
_NOT_BUILT = {
    "swapped": "not built: upload a swap image (another patient's, same view)",
    "occluded": "not built: the lung mask was flagged",
}


def annotations_of_image(
    path: str | Path,
    dataset: str,
    image_stem: str,
    source_size: tuple[int, int] | None = None,
) -> list:
    """The annotations of ``path`` (read as ``dataset``) whose image is ``image_stem``.

    ``source_size`` (width, height) is the frame of boxes whose file gives none (VinDr's); None
    keeps the frames as read (explain gives those boxes the image's own).

    Raises
    ------
    cxr_attention.io.InputError
        The file cannot be read in that format (its message names the file and the reason).
    """
    from cxr_attention.grounding.stage import READERS

    return _of_image(READERS[dataset](path), image_stem, source_size)


def _of_image(
    annotations: list, image_stem: str, source_size: tuple[int, int] | None = None
) -> list:
    chosen = [a for a in annotations if a.image_id == image_stem]
    if source_size is None:
        return chosen
    return [a.sized_as(*source_size) for a in chosen]


def _open_run_annotations(results_dir) -> tuple[list | None, str]:
    """The run's recorded annotations, or None and why there are none (the stage they wait on)."""
    from cxr_attention.grounding.datasets import read_annotation_table

    if results_dir is None:
        return None, "no run folder was given (`--results results/<run>`)"
    path = Path(results_dir) / RUN_ANNOTATIONS
    if not path.is_file():
        return None, f"`{path}` does not exist (it waits for the run's grounding stage)"
    try:
        return read_annotation_table(path), f"`{path}`"
    except InputError as error:
        return None, f"cannot read the run's annotations: {error}"


def reliance_view(reliance_csv: str | Path, conditions: list[str]) -> pd.DataFrame:
    """The real image's row and each chosen condition's, with its change from the real image."""
    rows = pd.read_csv(reliance_csv, keep_default_na=False, na_values=[""])
    rows["answer"] = rows["answer"].fillna("")
    compared = against_original(rows.assign(sample_id="upload")).set_index("condition")
    view = rows.set_index("condition")[["answer", "p_yes", "margin"]]
    view["unchanged"] = compared["unchanged"].map({True: "yes", False: "no"})
    view["p_yes_shift"] = compared["p_yes_shift"]
    for condition, reason in _NOT_BUILT.items():
        if condition in view.index and view.loc[condition, "answer"] == "":
            view.loc[condition, "unchanged"] = reason
    view["unchanged"] = view["unchanged"].fillna("")
    shown = ["original", *[c for c in TOGGLED_CONDITIONS if c in conditions]]
    return view.loc[[c for c in shown if c in view.index]].reset_index()[RELIANCE_VIEW_COLUMNS]


def _curve_choices(areas: pd.DataFrame) -> list[tuple[str, str]]:
    maps = areas.drop_duplicates("map_id")
    return [(f"{row.map_id} ({row.method})", row.map_id) for row in maps.itertuples()]


def _curve(out_dir: Path, map_id: str, perturbation: str, curve: str):
    """The chosen curve's figure (a fresh file) and its areas row, or a sentence why not."""
    from cxr_attention.figures.faithfulness import plot_faithfulness_curve

    areas = pd.read_csv(out_dir / "faithfulness.csv")
    chosen = areas[
        (areas["map_id"] == map_id)
        & (areas["perturbation"] == perturbation)
        & (areas["curve"] == curve)
    ]
    if chosen.empty:
        return None, chosen, f"No {curve} curve of `{map_id}` under `{perturbation}`."
    area = chosen.iloc[0].to_dict()
    points = pd.read_csv(out_dir / "faithfulness_points.csv")
    figure = Path(tempfile.mkstemp(prefix=f"{curve}-", suffix=".png", dir=out_dir)[1])
    answer = json.loads((out_dir / "answer.json").read_text(encoding="utf-8"))
    plot_faithfulness_curve(
        points,
        area,
        title=(
            f"{answer['question']} -> {answer['answer']}: {curve} of the {area['method']} map, "
            f"cells removed by {perturbation}"
        ),
        out_path=figure,
    )
    lower = "a lower" if curve == "deletion" else "a higher"
    text = (
        f"{curve} AUC {area['auc']:.4f}; random orders {area['random_auc_mean']:.4f} "
        f"+- {area['random_auc_sd']:.4f} (sd, {area['n_steps']} steps). A faithful map has "
        f"{lower} area than the random orders."
    )
    return str(figure), chosen, text


def _annotated_overlay(out_dir: Path, stem: str, annotations: list) -> str:
    """The answer map's overlay with the annotations' union outlined (explain's overlay title)."""
    from cxr_attention.app_sensitivity import answer_map
    from cxr_attention.figures.overlay import plot_overlay
    from cxr_attention.preprocessed import PreprocessedImage

    image = PreprocessedImage(
        stem,
        {
            "image": out_dir / f"{stem}.png",
            "body_mask": out_dir / f"{stem}_body.png",
            "lung_mask": out_dir / f"{stem}_lungs.png",
        },
    )
    pixels = image.image()
    outline = np.zeros(pixels.shape[:2], dtype=bool)
    for annotation in annotations:
        outline |= annotation.mask_at(pixels.shape[:2])
    record, grid = answer_map(out_dir)
    answer = json.loads((out_dir / "answer.json").read_text(encoding="utf-8"))
    return str(
        plot_overlay(
            pixels,
            grid,
            body_mask=image.body_mask() > 0,
            lung_labels=image.lung_labels(),
            annotation_mask=outline,
            # explain's title: the outlined overlay differs from overlay.png by the outline
            # and its legend entry alone (the annotations' findings are in the table below)
            title=(
                f"{answer['question']} -> {answer['answer']} ({record['method']} map of the answer)"
            ),
            out_path=out_dir / "overlay_annotated.png",
        )
    )


def _annotation_table(annotations: list) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": a.dataset,
                "annotation_id": a.annotation_id,
                "finding": a.finding,
                "label": a.label,
                "phrase": a.phrase,
                "boxes": "; ".join("x {:g}, y {:g}, w {:g}, h {:g}".format(*box) for box in a.boxes)
                or "mask",
                "frame": f"{a.image_width} x {a.image_height}",
            }
            for a in annotations
        ],
        columns=ANNOTATION_COLUMNS,
    )


def checks_tab(
    loaded_model,
    model_id: str,
    settings: ExplainSettings,
    session_dir: gr.State,
    *,
    results_dir: str | os.PathLike | None = None,
) -> gr.Tab:
    """Build the tab inside the page's ``gr.Tabs`` (called within `build_app`'s Blocks).

    ``session_dir`` is the page's per-session folder state; every run writes a fresh subfolder
    of it (explain's outputs, the figures drawn from them). ``results_dir`` (a run folder)
    offers its manifest images, outlined with the annotations its grounding stage recorded.
    """
    defaults = schema_defaults()["faithfulness"]
    manifest, manifest_note = open_manifest(results_dir)
    run_annotations, run_annotations_note = _open_run_annotations(results_dir)

    def run_checks(
        upload,
        question,
        perturbations,
        conditions,
        swap_upload,
        annotation_file,
        annotation_format,
        session,
        # Gradio tracks progress for a parameter whose default is a gr.Progress()
        progress=gr.Progress(),  # noqa: B008
    ):
        session = session_folder(session)
        nothing = (None,) * 12  # answer .. metrics, and the run folder

        def refuse(message):
            return (message, *nothing, session)

        if upload is None:
            return refuse("Upload a radiograph (PNG, JPEG or DICOM) first.")
        if not (question or "").strip():
            return refuse("Type a yes/no question first.")
        if annotation_file and annotation_format not in _ANNOTATION_FORMATS:
            return refuse("Choose the annotation file's format.")
        image_path = Path(upload)
        swap_image = None
        if swap_upload is not None:
            from cxr_attention.faithfulness.explain_outputs import read_swap_image

            try:
                swap_image = read_swap_image(swap_upload, settings.max_side)
            except ValueError as error:
                return refuse(f"Cannot use the swap image: {error}")
        # The image's annotations (None: no source of them) are scored by explain (box_*).
        annotations, annotation_notes = _image_annotations(
            annotation_file, annotation_format, image_path.stem
        )
        out_dir = Path(tempfile.mkdtemp(prefix="checks-", dir=session))
        progress(0.1, desc="answering, deletion curves and reliance conditions")
        result = run_explain(
            loaded_model,
            model_id,
            settings,
            image_path,
            question,
            out_dir,
            faithfulness=bool(perturbations),
            faithfulness_perturbations=list(perturbations or []),
            reliance=True,
            swap_image=swap_image,
            annotations=annotations,
        )
        if result.failure is not None:
            message = f"Cannot use {image_path.name}: {result.failure}"
            gr.Warning(message)
            return refuse(message)
        progress(0.9, desc="figures")
        status = [f"Model answer: {result.generated_text!r}"]

        curve_figure, curve_text, map_choice = None, "", gr.update(choices=[])
        perturbation_choice = gr.update(choices=[])
        areas = pd.read_csv(out_dir / "faithfulness.csv") if perturbations else None
        if areas is not None and not areas.empty:
            first = areas.iloc[0]
            curve_figure, _, curve_text = _curve(
                out_dir, first["map_id"], first["perturbation"], "deletion"
            )
            map_choice = gr.update(choices=_curve_choices(areas), value=first["map_id"])
            perturbation_choice = gr.update(
                choices=list(dict.fromkeys(areas["perturbation"])), value=first["perturbation"]
            )
        elif areas is not None:
            status.append("explain made no map of the answer: no deletion curve.")
        else:
            status.append("No perturbation chosen: no deletion curve.")

        overlay = str(out_dir / "overlay.png")
        status.extend(annotation_notes)
        if annotations:
            stem = image_path.stem
            meta = json.loads((out_dir / f"{stem}.json").read_text(encoding="utf-8"))
            source_size = (int(meta["source_width"]), int(meta["source_height"]))
            annotations = _of_image(annotations, stem, source_size)  # VinDr's take its size
            overlay = _annotated_overlay(out_dir, stem, annotations)
            status.append(
                f"{len(annotations)} annotation(s) of `{stem}` outlined on the map and scored "
                "(the `box_*` metrics)."
            )
        metrics = pd.read_csv(out_dir / "metrics.csv")
        return (
            "\n\n".join(status),
            result.answer,
            result.p_yes,
            curve_figure,
            curve_text,
            areas,
            map_choice,
            perturbation_choice,
            reliance_view(out_dir / "reliance.csv", conditions or []),
            overlay,
            _annotation_table(annotations or []),
            metrics,
            str(out_dir),
            session,
        )

    def _image_annotations(annotation_file, annotation_format, stem):
        """The annotations of ``stem`` (frames as recorded) and what the page says about them:
        an uploaded file's, else, for a manifest image, the run's; None when neither applies."""
        if annotation_file:
            try:
                annotations = annotations_of_image(annotation_file, annotation_format, stem)
            except (InputError, ValueError) as error:
                return None, [f"Cannot read the annotation file: {error}"]
            if not annotations:
                return annotations, [
                    f"The annotation file has no annotation of `{stem}` "
                    "(its image id must be the upload's file name without the suffix)."
                ]
            return annotations, []
        if manifest is None or stem not in manifest.images:
            return None, []
        if run_annotations is None:
            return None, [f"No annotation of the run: {run_annotations_note}."]
        annotations = _of_image(run_annotations, stem)
        if not annotations:
            return annotations, [f"No annotation for this image in {run_annotations_note}."]
        return annotations, []

    def redraw_curve(map_id, perturbation, curve, run_dir):
        if not run_dir or not (Path(run_dir) / "faithfulness.csv").is_file():
            return None, "Run the checks first (with at least one perturbation)."
        figure, _, text = _curve(Path(run_dir), map_id, perturbation, curve)
        return figure, text

    def toggle_conditions(conditions, run_dir):
        if not run_dir:
            return None
        return reliance_view(Path(run_dir) / "reliance.csv", conditions or [])

    with gr.Tab("Checks", elem_id="tab-checks") as tab:
        gr.Markdown(
            "Does the model use what the map shows, and the image at all? The deletion curve of "
            "the answer's map against random orders of the cells; the answer with a blank, "
            "another patient's and a lung-occluded image, and with no image; and the "
            "radiologists' annotation outlined on the map: an uploaded annotation file's, or for "
            "an image of the run's manifest the run's own."
        )
        with gr.Row():
            with gr.Column():
                upload = radiograph_upload("chk-image")
                manifest_picker(
                    manifest,
                    manifest_note
                    + f" Annotations outlined without an upload: {run_annotations_note}.",
                    "chk",
                    upload,
                    session_dir,
                    api_name=CHECKS_MANIFEST_API_NAME,
                )
                question = question_box("chk-question")
                perturbations = gr.CheckboxGroup(
                    choices=list(PERTURBATIONS),
                    value=list(defaults["perturbations"]),
                    label="Remove cells by (each adds a set of curves; road is slow on a CPU)",
                    elem_id="chk-perturbations",
                )
                swap = gr.File(
                    label="Swap image (optional): another patient's, same view",
                    type="filepath",
                    elem_id="chk-swap-image",
                )
                with gr.Row():
                    annotation_file = gr.File(
                        label="Annotation file (optional; replaces the run's annotations)",
                        type="filepath",
                        elem_id="chk-annotation-file",
                    )
                    annotation_format = gr.Dropdown(
                        choices=[(label, key) for key, label in _ANNOTATION_FORMATS.items()],
                        value="ms_cxr",
                        label="Annotation format",
                        elem_id="chk-annotation-format",
                    )
                run = gr.Button("Run checks", variant="primary", elem_id="chk-run")
            with gr.Column():
                status = gr.Markdown(elem_id="chk-status")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="chk-answer")
                p_yes = gr.Number(label="P(yes)", interactive=False, elem_id="chk-p-yes")
                overlay = gr.Image(
                    label="Map of the answer (annotation outlined)",
                    type="filepath",
                    elem_id="chk-overlay",
                )
        gr.Markdown("### Deletion curve")
        with gr.Row():
            curve_map = gr.Dropdown(label="Map", choices=[], elem_id="chk-curve-map")
            curve_perturbation = gr.Dropdown(
                label="Removed by", choices=[], elem_id="chk-curve-perturbation"
            )
            curve_kind = gr.Dropdown(
                label="Curve", choices=list(CURVES), value="deletion", elem_id="chk-curve-kind"
            )
        curve_plot = gr.Image(label="Curve", type="filepath", elem_id="chk-curve")
        curve_text = gr.Markdown(elem_id="chk-curve-auc")
        areas = gr.Dataframe(
            label="Areas (faithfulness.csv)", interactive=False, elem_id="chk-areas"
        )
        gr.Markdown("### Image reliance")
        conditions = gr.CheckboxGroup(
            choices=TOGGLED_CONDITIONS,
            value=TOGGLED_CONDITIONS,
            label="Compare the real image with",
            elem_id="chk-conditions",
        )
        reliance = gr.Dataframe(
            headers=RELIANCE_VIEW_COLUMNS,
            # Teacher-forced decisions, which may differ from the parsed free-text answer.
            label="First-token decision under each condition (yes when P(yes) >= 0.5; the "
            "answer above is the parsed generated text)",
            interactive=False,
            elem_id="chk-reliance",
        )
        gr.Markdown("### Annotations and metrics")
        annotations = gr.Dataframe(
            headers=ANNOTATION_COLUMNS,
            label="Annotations of this image",
            interactive=False,
            elem_id="chk-annotations",
        )
        metrics = gr.Dataframe(label="Metrics", interactive=False, elem_id="chk-metrics")
        run_dir = gr.State(None)

        run.click(
            run_checks,
            inputs=[
                upload,
                question,
                perturbations,
                conditions,
                swap,
                annotation_file,
                annotation_format,
                session_dir,
            ],
            outputs=[
                status,
                answer,
                p_yes,
                curve_plot,
                curve_text,
                areas,
                curve_map,
                curve_perturbation,
                reliance,
                overlay,
                annotations,
                metrics,
                run_dir,
                session_dir,
            ],
            api_name=CHECKS_API_NAME.lstrip("/"),
        )
        gr.on(
            [curve_map.input, curve_perturbation.input, curve_kind.input],
            redraw_curve,
            inputs=[curve_map, curve_perturbation, curve_kind, run_dir],
            outputs=[curve_plot, curve_text],
            api_name=CURVE_API_NAME.lstrip("/"),
        )
        conditions.input(
            toggle_conditions,
            inputs=[conditions, run_dir],
            outputs=[reliance],
            api_name=RELIANCE_API_NAME.lstrip("/"),
        )
    return tab
