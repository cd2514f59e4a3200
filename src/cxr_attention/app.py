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

from cxr_attention.app_study import build_study_browser
from cxr_attention.explain import ExplainResult, explain

__all__ = [
    "QUESTION_API_NAME",
    "TAB_LABELS",
    "ExplainSettings",
    "build_app",
    "question_box",
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


def question_box(elem_id: str) -> gr.Textbox:
    """The free-text yes/no question (every tab that asks one uses this one)."""
    return gr.Textbox(
        label="Yes/no question", placeholder="Is there a pleural effusion?", elem_id=elem_id
    )


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
    annotations=None,
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
        annotations=annotations,
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
        A run folder for the study browser (no model needed to browse it), for the question
        analysis and Checks tabs' manifest images (the Checks tab outlines the annotations its
        grounding stage recorded, ``grounding/annotations.csv``) and for the prompt sensitivity
        tab's null band (its ``metrics/js_null.csv``).
    """

    # No usage reports leave the machine: the page handles medical images.
    with gr.Blocks(title="cxr-attention", analytics_enabled=False) as app:
        gr.Markdown(f"# Where the model looks\nModel: `{model_id}`")
        session_dir = gr.State(None, delete_callback=_remove_folder)
        with gr.Tabs():
            # imported here: the tabs' modules import run_explain from this one
            from cxr_attention.app_checks import checks_tab
            from cxr_attention.app_question import question_analysis_tab
            from cxr_attention.app_sensitivity import prompt_sensitivity_tab
            from cxr_attention.app_token import token_conditioned_tab

            question_analysis_tab(
                loaded_model, model_id, settings, session_dir, results_dir=results_dir
            )
            token_conditioned_tab(loaded_model, model_id, settings, session_dir)
            prompt_sensitivity_tab(
                loaded_model, model_id, settings, session_dir, results_dir=results_dir
            )
            with gr.Tab(TAB_LABELS[3], elem_id="tab-study-browser"):
                build_study_browser(results_dir)
            checks_tab(loaded_model, model_id, settings, session_dir, results_dir=results_dir)
    return app


def _remove_folder(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
