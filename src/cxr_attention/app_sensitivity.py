"""The app's "Prompt sensitivity" tab: one radiograph, two or three phrasings of a question.

Each phrasing goes through `cxr_attention.app.run_explain` (the question-analysis call) into its
own folder; the tab then reads what explain wrote: each answer, P(yes) and the answer's decision
map (``maps.csv`` / ``maps.npz``). Phrasing 1 is compared with each other one by the study's
base-2 Jensen-Shannon divergence and its fixed band, and, when the page was given a run folder
with ``metrics/js_null.csv``, by the run's calibrated null band (paraphrase / other image). The
answers are consistent by the study's rule (`cxr_attention.metrics.answer_stats`): all the same
yes or no; an unclear answer is not consistent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from cxr_attention.app import (
    ExplainSettings,
    radiograph_upload,
    run_explain,
    session_folder,
)
from cxr_attention.metrics.answer_stats import consistency_table
from cxr_attention.metrics.null_bands import calibrate_js_bands
from cxr_attention.metrics.pairwise import js_band, js_divergence

__all__ = ["PROMPT_SENSITIVITY_API_NAME", "answer_map", "prompt_sensitivity_tab"]

#: The API name of the tab's event (``gradio_client.Client.predict(api_name=...)``).
PROMPT_SENSITIVITY_API_NAME = "/prompt_sensitivity"

#: The map explain draws in ``overlay.png``: the answer's, from the decision rows.
_ANSWER_SOURCE, _ANSWER_ROWS = "answer", "decision"

_PAIR_COLUMNS = ["pair", "js_divergence", "band", "band_calibrated", "paraphrase_q95"]
_PAIR_COLUMNS += ["image_median"]


def answer_map(out_dir: str | os.PathLike) -> tuple[dict, np.ndarray]:
    """The answer's decision map of an explain folder: its ``maps.csv`` row and its grid."""
    out_dir = Path(out_dir)
    maps = pd.read_csv(out_dir / "maps.csv", keep_default_na=False)
    chosen = maps[(maps["source"] == _ANSWER_SOURCE) & (maps["rows"] == _ANSWER_ROWS)]
    if chosen.empty:
        raise ValueError(f"{out_dir / 'maps.csv'}: no answer map of the decision rows")
    record = chosen.iloc[0].to_dict()
    with np.load(out_dir / "maps.npz") as arrays:
        return record, np.asarray(arrays[record["map_id"]], dtype=np.float64)


def _null_js(results_dir: str | os.PathLike | None) -> tuple[pd.DataFrame | None, str]:
    """The run's JS null pairs and a sentence saying where they come from (or that none is)."""
    if results_dir is None:
        return None, "No null band loaded (start the app with a run folder to calibrate)."
    path = Path(results_dir) / "metrics" / "js_null.csv"
    if not path.is_file():
        return None, f"No null band loaded: `{path}` does not exist."
    return pd.read_csv(path), f"Null band from `{path}`."


def _null_band_text(pair: pd.Series, null_source: str) -> str:
    """Where the pair's JS lies against the run's null distributions, or that none is loaded."""
    if pair["band_calibrated"] == "not loaded":
        return null_source
    return (
        f"{pair['band_calibrated']} (paraphrase null 95th percentile "
        f"{pair['paraphrase_q95']:.4f}, other-image null median {pair['image_median']:.4f}). "
        f"{null_source}"
    )


def _consistent(answers: list[str]) -> bool:
    """The study's consistency of one question group (all the same yes or no)."""
    group = pd.DataFrame(
        {
            "dicom_id": "upload",
            "subject_id": "upload",
            "finding": "asked",
            "strategy": "phrasing",
            "question_id": [f"phrasing-{i}" for i in range(len(answers))],
            "baseline_question_id": "phrasing-0",
            "answer": answers,
        }
    )
    table = consistency_table(group)
    return bool(table.loc[table["kind"] == "strategies", "consistent"].iloc[0])


def prompt_sensitivity_tab(
    loaded_model,
    model_id: str,
    settings: ExplainSettings,
    session_dir: gr.State,
    *,
    results_dir: str | os.PathLike | None = None,
) -> gr.Tab:
    """Build the tab inside the page's ``gr.Tabs`` (called within `build_app`'s Blocks).

    ``session_dir`` is the page's per-session folder state; every run writes a fresh subfolder
    of it with one explain folder per phrasing.
    """
    nulls, null_source = _null_js(results_dir)

    def compare(upload, first, second, third, session):
        session = session_folder(session)
        no_result = (None, None, None, None, None, None, None)
        if upload is None:
            return ("Upload a radiograph (PNG, JPEG or DICOM) first.", *no_result, session)
        phrasings = [text.strip() for text in (first, second, third) if (text or "").strip()]
        if len(phrasings) < 2:
            return ("Type at least two phrasings of the question.", *no_result, session)
        run_dir = Path(tempfile.mkdtemp(prefix="sensitivity-", dir=session))
        image_path = Path(upload)
        rows, grids, overlays = [], [], []
        for number, question in enumerate(phrasings, start=1):
            out_dir = run_dir / f"phrasing-{number}"
            result = run_explain(loaded_model, model_id, settings, image_path, question, out_dir)
            if result.failure is not None:
                message = f"Cannot use {image_path.name}: {result.failure}"
                gr.Warning(message)
                return (message, *no_result, session)
            record, grid = answer_map(out_dir)
            rows.append(
                {
                    "phrasing": number,
                    "question": question,
                    "answer": result.answer,
                    "p_yes": result.p_yes,
                    "generated_text": result.generated_text,
                }
            )
            grids.append((record, grid))
            overlays.append((str(out_dir / "overlay.png"), f"{number}: {question}"))

        pairs = []
        for number in range(2, len(phrasings) + 1):
            (record, first_map), (_, other_map) = grids[0], grids[number - 1]
            value = js_divergence(first_map, other_map, base=2)
            pairs.append(
                {
                    "pair": f"1 vs {number}",
                    "source": record["source"],
                    "method": record["method"],
                    "rows": record["rows"],
                    "js_divergence": value,
                    "band": js_band(value),
                }
            )
        pairs = pd.DataFrame(pairs)
        if nulls is not None:
            pairs = calibrate_js_bands(pairs, nulls)
        else:
            pairs = pairs.assign(band_calibrated="not loaded", paraphrase_q95=np.nan)
            pairs = pairs.assign(image_median=np.nan)
        pairs = pairs[_PAIR_COLUMNS]

        difference = _difference_figure(run_dir, image_path.stem, grids, rows, pairs)
        consistent = _consistent([row["answer"] for row in rows])
        status = (
            f"{len(phrasings)} phrasings: answers "
            + ("consistent" if consistent else "**not consistent**")
            + f"; JS 1 vs 2 (base 2) = {pairs['js_divergence'].iloc[0]:.4f} "
            f"({pairs['band'].iloc[0]}).\n\n{null_source}"
        )
        return (
            status,
            pd.DataFrame(rows),
            overlays,
            difference,
            float(pairs["js_divergence"].iloc[0]),
            pairs,
            consistent,
            _null_band_text(pairs.iloc[0], null_source),
            session,
        )

    with gr.Tab("Prompt sensitivity", elem_id="tab-prompt-sensitivity") as tab:
        gr.Markdown(
            "The same question in other words: each phrasing's answer, P(yes) and map, the "
            "difference map (2 - 1), the Jensen-Shannon divergence (base 2) and whether the "
            "answers agree."
        )
        with gr.Row():
            with gr.Column():
                upload = radiograph_upload("ps-image")
                first = gr.Textbox(
                    label="Phrasing 1",
                    placeholder="Is there a pleural effusion?",
                    elem_id="ps-phrasing-1",
                )
                second = gr.Textbox(
                    label="Phrasing 2",
                    placeholder="Is fluid present in the pleural space?",
                    elem_id="ps-phrasing-2",
                )
                third = gr.Textbox(label="Phrasing 3 (optional)", elem_id="ps-phrasing-3")
                run = gr.Button("Compare", variant="primary", elem_id="ps-run")
            with gr.Column():
                status = gr.Markdown(elem_id="ps-status")
                js = gr.Number(
                    label="JS divergence 1 vs 2 (base 2)", interactive=False, elem_id="ps-js"
                )
                consistent = gr.Checkbox(
                    label="Answers consistent", interactive=False, elem_id="ps-consistent"
                )
                null_band = gr.Textbox(
                    label="Null band of 1 vs 2 (the run's calibration)",
                    value=null_source,
                    interactive=False,
                    elem_id="ps-null-band",
                )
        answers = gr.Dataframe(label="Answers", interactive=False, elem_id="ps-answers")
        overlays = gr.Gallery(label="Map of each answer", columns=3, elem_id="ps-overlays")
        difference = gr.Image(label="Maps and difference", type="filepath", elem_id="ps-difference")
        pairs = gr.Dataframe(label="Phrasing 1 against each other", elem_id="ps-pairs")
        run.click(
            compare,
            inputs=[upload, first, second, third, session_dir],
            outputs=[
                status,
                answers,
                overlays,
                difference,
                js,
                pairs,
                consistent,
                null_band,
                session_dir,
            ],
            api_name=PROMPT_SENSITIVITY_API_NAME.lstrip("/"),
        )
    return tab


def _difference_figure(run_dir, stem, grids, rows, pairs) -> str:
    """Phrasing 1 and 2's maps and their difference over the preprocessed radiograph."""
    from cxr_attention.figures.sensitivity import plot_prompt_sensitivity
    from cxr_attention.preprocessed import PreprocessedImage

    folder = run_dir / "phrasing-1"
    image = PreprocessedImage(
        stem,
        {
            "image": folder / f"{stem}.png",
            "body_mask": folder / f"{stem}_body.png",
            "lung_mask": folder / f"{stem}_lungs.png",
        },
    )
    labels = [f"{rows[i]['question']} -> {rows[i]['answer']}" for i in (0, 1)]
    return str(
        plot_prompt_sensitivity(
            image.image(),
            grids[0][1],
            grids[1][1],
            label_a=labels[0],
            label_b=labels[1],
            title=f"{stem}: {grids[0][0]['method']} map of the answer",
            js=float(pairs["js_divergence"].iloc[0]),
            body_mask=image.body_mask() > 0,
            lung_labels=image.lung_labels(),
            out_path=run_dir / "difference.png",
        )
    )
