"""``cxr-attention app``: the study's single-image analysis in a browser page (Gradio).

The page is a view over the library: a question about an uploaded radiograph goes through
`cxr_attention.explain.explain`, the same call as ``cxr-attention explain``, and the page shows
what it wrote (the answer, P(yes), ``overlay.png`` and ``metrics.csv``). The model is loaded
once, by the caller, and every question reuses it.

Each browser session writes into its own temporary folder, removed when the session ends; each
question gets a fresh subfolder of it, so two answers never share an overlay file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from cxr_attention.app_study import build_study_browser
from cxr_attention.explain import ExplainResult, explain

__all__ = [
    "QUESTION_API_NAME",
    "TAB_LABELS",
    "ExplainSettings",
    "build_app",
    "radiograph_upload",
    "run_explain",
    "session_folder",
]

#: The API name of the question-analysis event (``gradio_client.Client.predict(api_name=...)``).
QUESTION_API_NAME = "/question_analysis"

TAB_LABELS = (
    "Question analysis",
    "Token-conditioned",
    "Prompt sensitivity",
    "Study browser",
    "Checks",
)


@dataclass(frozen=True)
class ExplainSettings:
    """The `explain` options the page does not expose, as the CLI takes them (schema defaults)."""

    layers: int
    method: str
    max_new_tokens: int
    image_first: bool
    max_side: int


def session_folder(session_dir: str | None) -> str:
    """The browser session's temporary folder: ``session_dir``, made on the session's first run."""
    return session_dir if session_dir is not None else tempfile.mkdtemp(prefix="cxr-attention-app-")


def radiograph_upload(elem_id: str) -> gr.File:
    """The upload widget of a radiograph (every tab that takes one uses this one)."""
    return gr.File(label="Radiograph (PNG, JPEG or DICOM)", type="filepath", elem_id=elem_id)


def run_explain(
    loaded_model,
    model_id: str,
    settings: ExplainSettings,
    image_path: Path,
    question: str,
    out_dir: Path,
    *,
    terms: Sequence[str] = (),
    method: str | None = None,
    faithfulness: bool = False,
    faithfulness_perturbations: list[str] | None = None,
    reliance: bool = False,
    swap_image=None,
    boxes: str | os.PathLike | None = None,
) -> ExplainResult:
    """`explain` of one question with the page's settings (every tab asks through this).

    ``terms`` are mapped besides the question's own; ``method`` overrides the settings' (the
    token-conditioned tab asks for ``all``). The other keyword options are explain's optional
    outputs (the Checks tab asks for them).
    """
    return explain(
        image_path,
        question=question.strip(),
        model_id=model_id,
        out_dir=out_dir,
        layers=settings.layers,
        terms=terms,
        method=settings.method if method is None else method,
        max_new_tokens=settings.max_new_tokens,
        image_first=settings.image_first,
        max_side=settings.max_side,
        boxes=boxes,
        faithfulness=faithfulness,
        faithfulness_perturbations=faithfulness_perturbations,
        reliance=reliance,
        swap_image=swap_image,
        loaded_model=loaded_model,
    )


def build_app(
    loaded_model,
    model_id: str,
    settings: ExplainSettings,
    *,
    results_dir: str | os.PathLike | None = None,
) -> gr.Blocks:
    """The page: five tabs, each over the library.

    Parameters
    ----------
    loaded_model : cxr_attention.inference.model.LoadedModel
        ``model_id`` loaded once; every question reuses it.
    model_id : str
        The model folder or hub id it was loaded from (written to ``answer.json``).
    settings : ExplainSettings
    results_dir : path, optional
        A run folder for the study browser (no model needed to browse it) and for the prompt
        sensitivity tab's null band (its ``metrics/js_null.csv``).
    """

    def answer_question(upload, question, session_dir):
        session_dir = session_folder(session_dir)
        no_result = ("", None, None, None)  # answer, P(yes), overlay, metrics
        if upload is None:
            return ("Upload a radiograph (PNG, JPEG or DICOM) first.", *no_result, session_dir)
        if not (question or "").strip():
            return ("Type a yes/no question first.", *no_result, session_dir)
        out_dir = Path(tempfile.mkdtemp(prefix="question-", dir=session_dir))
        image_path = Path(upload)  # gr.File(type="filepath"): the uploaded copy
        result = run_explain(loaded_model, model_id, settings, image_path, question, out_dir)
        if result.failure is not None:
            message = f"Cannot use {image_path.name}: {result.failure}"
            gr.Warning(message)
            return (message, *no_result, session_dir)
        status = f"Model answer: {result.generated_text!r}"
        if result.mask_flags:
            status += f"\n\nLung masks flagged ({result.mask_flags}): lung metrics left blank."
        metrics = pd.read_csv(out_dir / "metrics.csv")
        return (
            status,
            result.answer,
            result.p_yes,
            str(out_dir / "overlay.png"),
            metrics,
            session_dir,
        )

    # No usage reports leave the machine: the page handles medical images.
    with gr.Blocks(title="cxr-attention", analytics_enabled=False) as app:
        gr.Markdown(f"# Where the model looks\nModel: `{model_id}`")
        session_dir = gr.State(None, delete_callback=_remove_folder)
        with gr.Tabs():
            with gr.Tab(TAB_LABELS[0], elem_id="tab-question-analysis"):
                with gr.Row():
                    with gr.Column():
                        upload = radiograph_upload("qa-image")
                        question = gr.Textbox(
                            label="Yes/no question",
                            placeholder="Is there a pleural effusion?",
                            elem_id="qa-question",
                        )
                        run = gr.Button("Run", variant="primary", elem_id="qa-run")
                    with gr.Column():
                        status = gr.Markdown(elem_id="qa-status")
                        answer = gr.Textbox(label="Answer", interactive=False, elem_id="qa-answer")
                        p_yes = gr.Number(label="P(yes)", interactive=False, elem_id="qa-p-yes")
                        overlay = gr.Image(
                            label="Map of the answer", type="filepath", elem_id="qa-overlay"
                        )
                metrics = gr.Dataframe(label="Metrics", interactive=False, elem_id="qa-metrics")
                run.click(
                    answer_question,
                    inputs=[upload, question, session_dir],
                    outputs=[status, answer, p_yes, overlay, metrics, session_dir],
                    api_name=QUESTION_API_NAME.lstrip("/"),
                )
            # imported here: the tabs' modules import run_explain from this one
            from cxr_attention.app_checks import checks_tab
            from cxr_attention.app_sensitivity import prompt_sensitivity_tab
            from cxr_attention.app_token import token_conditioned_tab

            token_conditioned_tab(loaded_model, model_id, settings, session_dir)
            prompt_sensitivity_tab(
                loaded_model, model_id, settings, session_dir, results_dir=results_dir
            )
            with gr.Tab(TAB_LABELS[3], elem_id="tab-study-browser"):
                build_study_browser(results_dir)
            checks_tab(loaded_model, model_id, settings, session_dir)
    return app


def _remove_folder(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
