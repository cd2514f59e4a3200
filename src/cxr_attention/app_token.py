"""The app's "Token-conditioned" tab: one term's map by every method, and each generated token's.

The question goes through `cxr_attention.app.run_explain` (the question-analysis call) with the
term added to the question's own and ``method`` ``all`` (without a term, the page's own method:
only the answer and the generated tokens' maps are shown): explain then writes every registered
method's map of the term to ``maps.csv`` / ``maps.npz``, the cascade's pick marked with the
cascade's reasons and the ``uniform`` map listing why the other methods gave none
(`cxr_attention.maps.cascade`). The tab shows exactly those rows, one overlay per map, and a
table of every method with what became of it. The map of each generated token comes from the
capture explain wrote (``attention.npz``) through
`cxr_attention.maps.shard.generated_token_maps`.

A term is typed, or picked from the question's words and the answer's tokens; picking one maps
it at once (the answer is regenerated with it: explain always answers).
"""

from __future__ import annotations

import re
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
from cxr_attention.captures import load_capture
from cxr_attention.maps.cascade import fallback_steps
from cxr_attention.maps.registry import LAST_RESORT, METHODS
from cxr_attention.maps.shard import generated_token_maps
from cxr_attention.maps.targets import term_slug

__all__ = [
    "TERM_METHOD_COLUMNS",
    "TOKEN_API_NAME",
    "TOKEN_MAP_COLUMNS",
    "TOKEN_PICK_API_NAME",
    "cascade_label",
    "method_outcomes",
    "render_map",
    "term_map_title",
    "token_choices",
    "token_conditioned_tab",
]

#: The API names of the tab's events (``gradio_client.Client.predict(api_name=...)``).
TOKEN_API_NAME = "/token_conditioned"
TOKEN_PICK_API_NAME = "/token_pick"

#: Every map method explain computes for the term (its ``--method all``).
EVERY_METHOD = "all"

TERM_METHOD_COLUMNS = [
    "method",
    "reason",
    "map_id",
    "source",
    "cascade",
    "image_mass",
    "counterfactual",
]
TOKEN_MAP_COLUMNS = ["position", "token", "method", "image_mass", "fallback_reason", "map_id"]

_WORD = re.compile(r"\w[\w'-]*")


def cascade_label(record: dict) -> str:
    """What made a map: its method, and for the cascade's pick the path the cascade took.

    ``"gradcam (the cascade's pick: attention -> gradcam; attention: term not found)"``.
    """
    method = record["method"]
    if not _true(record["cascade"]):
        return method
    steps = fallback_steps(record["fallback_reason"])
    if method == LAST_RESORT:  # in ``all`` its reasons are every other method's, not a path
        return f"{method} (the cascade's pick: no other method gave a map)"
    if not steps:
        return f"{method} (the cascade's pick: its first choice)"
    path = " -> ".join([*(name for name, _ in steps), method])
    reasons = "; ".join(f"{name}: {reason}" for name, reason in steps)
    return f"{method} (the cascade's pick: {path}; {reasons})"


def term_map_title(term: str, method: str, cascade: bool) -> str:
    """The title drawn over a term's map (short: the gallery's caption has the reasons)."""
    return f"{term}: {method}" + (" (the cascade's pick)" if cascade else "")


def method_outcomes(maps: pd.DataFrame, term: str) -> pd.DataFrame:
    """One row per registered method: the term's map it made (with the cascade's mark and
    reasons), or why it made none (from the last resort's list of failures).

    ``maps`` is an ``explain --method all`` ``maps.csv`` (read as text); the term's rows are
    those of its slug (explain keeps one spelling per slug, :func:`term_slug`).
    """
    rows = maps[(maps["source"] != "answer") & (maps["term"].map(term_slug) == term_slug(term))]
    failed: dict[str, str] = {}
    last_resort = rows[rows["method"] == LAST_RESORT]
    if not last_resort.empty:
        failed = dict(fallback_steps(last_resort["fallback_reason"].iloc[0]))
    made = rows.set_index("method")
    table = []
    for method in METHODS:
        if method in made.index:
            record = made.loc[method]
            is_pick = _true(record["cascade"])
            reason = cascade_label({**record.to_dict(), "method": method}) if is_pick else ""
            table.append(
                {
                    "method": method,
                    "map_id": record["map_id"],
                    "source": record["source"],
                    "cascade": is_pick,
                    "image_mass": record["image_mass"],
                    "counterfactual": _true(record["counterfactual"]),
                    "reason": reason,
                }
            )
        else:
            table.append(
                {
                    "method": method,
                    "map_id": "",
                    "source": "",
                    "cascade": False,
                    "image_mass": "",
                    "counterfactual": False,
                    "reason": f"no map: {failed.get(method, 'not computed')}",
                }
            )
    return pd.DataFrame(table, columns=TERM_METHOD_COLUMNS)


def token_choices(question: str, token_records) -> list[tuple[str, str]]:
    """The pickable terms: each word of the question, then each generated token with text.

    ``(label, term)`` pairs; a token that decodes to no word character (punctuation, a space)
    is left out: no term can match it.
    """
    choices = [(f"question: {word}", word) for word in _WORD.findall(question)]
    for record, _ in token_records:
        text = record.term.strip()
        if _WORD.search(text):
            choices.append((f"answer {record.token_positions[0]}: {text}", text))
    return choices


def render_map(out_dir: Path, grid: np.ndarray, title: str, out_path: Path) -> str:
    """One map over the preprocessed radiograph explain wrote to ``out_dir``, with its contours
    (`cxr_attention.figures.overlay.plot_overlay`); small, for a gallery."""
    from cxr_attention.figures.overlay import plot_overlay
    from cxr_attention.preprocessed import PreprocessedImage

    stem = next(out_dir.glob("*_body.png")).name.removesuffix("_body.png")
    image = PreprocessedImage(
        stem,
        {
            "image": out_dir / f"{stem}.png",
            "body_mask": out_dir / f"{stem}_body.png",
            "lung_mask": out_dir / f"{stem}_lungs.png",
        },
    )
    return str(
        plot_overlay(
            image.image(),
            grid,
            body_mask=image.body_mask() > 0,
            lung_labels=image.lung_labels(),
            title=title,
            value_label="share of map mass per token",
            dpi=72,
            out_path=out_path,
        )
    )


def token_conditioned_tab(
    loaded_model, model_id: str, settings: ExplainSettings, session_dir: gr.State
) -> gr.Tab:
    """Build the tab inside the page's ``gr.Tabs`` (called within `build_app`'s Blocks).

    ``session_dir`` is the page's per-session folder state; every run writes a fresh explain
    folder in it.
    """

    def analyse(upload, question, term, session):
        session = session_folder(session)
        term = (term or "").strip()
        nothing = (gr.update(choices=[], value=None), None, None, None, None)
        if upload is None:
            return ("Upload a radiograph (PNG, JPEG or DICOM) first.", "", None, *nothing, session)
        if not (question or "").strip():
            return ("Type a yes/no question first.", "", None, *nothing, session)
        out_dir = Path(tempfile.mkdtemp(prefix="token-", dir=session))
        image_path = Path(upload)
        result = run_explain(
            loaded_model,
            model_id,
            settings,
            image_path,
            question,
            out_dir,
            terms=[term] if term else [],
            # every method only for a term (the slow part); without one, the page's own method
            method=EVERY_METHOD if term else None,
        )
        if result.failure is not None:
            message = f"Cannot use {image_path.name}: {result.failure}"
            gr.Warning(message)
            return (message, "", None, *nothing, session)

        capture = load_capture(out_dir / "attention.npz")
        token_maps = generated_token_maps(capture, tokenizer=loaded_model.tokenizer)
        token_gallery, token_rows = [], []
        for record, grid in token_maps:
            position = record.token_positions[0]
            caption = f"{position}: {record.term!r} ({record.method})"
            title = f"answer token {position}: {record.term.strip()!r} ({record.method})"
            path = out_dir / f"token-{position:03d}.png"
            token_gallery.append((render_map(out_dir, grid, title, path), caption))
            token_rows.append(
                {
                    "position": position,
                    "token": record.term,
                    "method": record.method,
                    "image_mass": record.image_mass,
                    "fallback_reason": record.fallback_reason,
                    "map_id": record.map_id,
                }
            )
        choices = token_choices(question, token_maps)
        status = f"Model answer: {result.generated_text!r} ({len(token_maps)} generated tokens)."
        term_gallery, outcomes = None, None
        if not term:
            status += "\n\nType a term, or pick a word of the question or the answer, to map it."
        else:
            maps = pd.read_csv(out_dir / "maps.csv", dtype=str, keep_default_na=False)
            outcomes = method_outcomes(maps, term)
            made = outcomes[outcomes["map_id"] != ""]
            if made.empty:
                # locate_targets skips a term with no letter or digit, or one named like a map
                # of the answer: explain made no target of it
                status += f"\n\nNo map of `{term}`: explain makes no target of it."
            else:
                status += (
                    f"\n\n`{term}` ({made['source'].iloc[0]}): {len(made)} of "
                    f"{len(METHODS)} methods made a map."
                )
                term_gallery = []
                records = maps.set_index("map_id")
                with np.load(out_dir / "maps.npz") as arrays:
                    for row in made.itertuples(index=False):
                        label = cascade_label(records.loc[row.map_id].to_dict())
                        title = term_map_title(term, row.method, row.cascade)
                        path = out_dir / f"term-{row.method}.png"
                        grid = arrays[row.map_id]
                        term_gallery.append((render_map(out_dir, grid, title, path), label))
        return (
            status,
            result.answer,
            result.p_yes,
            gr.update(choices=choices, value=term if term in dict(choices).values() else None),
            term_gallery,
            outcomes,
            token_gallery,
            pd.DataFrame(token_rows, columns=TOKEN_MAP_COLUMNS),
            session,
        )

    def pick(upload, question, picked, session):
        return (picked, *analyse(upload, question, picked, session))

    with gr.Tab("Token-conditioned", elem_id="tab-token-conditioned") as tab:
        gr.Markdown(
            "One term's map by every method, each with the method that made it and, for the "
            "cascade's pick, the path the cascade took; and the map of each generated token "
            "(where the model looked while choosing to say it)."
        )
        with gr.Row():
            with gr.Column():
                upload = radiograph_upload("tok-image")
                question = question_box("tok-question")
                term = gr.Textbox(
                    label="Term (typed, or picked below)",
                    placeholder="effusion",
                    elem_id="tok-term",
                )
                run = gr.Button("Map the term", variant="primary", elem_id="tok-run")
            with gr.Column():
                status = gr.Markdown(elem_id="tok-status")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="tok-answer")
                p_yes = gr.Number(label="P(yes)", interactive=False, elem_id="tok-p-yes")
                tokens = gr.Radio(
                    label="Pick a word of the question or a token of the answer",
                    choices=[],
                    elem_id="tok-tokens",
                )
        term_maps = gr.Gallery(
            label="The term's map by every method", columns=4, elem_id="tok-term-maps"
        )
        term_methods = gr.Dataframe(
            headers=TERM_METHOD_COLUMNS,
            label="Every method: its map, or why none",
            interactive=False,
            wrap=True,  # the reasons are long: every column stays in view
            column_widths=["13%", "37%", "26%", "6%", "6%", "6%", "6%"],
            max_height=1000,  # every method in view, without scrolling the table
            elem_id="tok-methods",
        )
        token_maps = gr.Gallery(
            label="The map of each generated token",
            columns=6,
            height=240,  # about one row of small maps (Gradio's default leaves an empty panel)
            object_fit="contain",
            elem_id="tok-token-maps",
        )
        token_table = gr.Dataframe(
            headers=TOKEN_MAP_COLUMNS,
            label="Generated tokens",
            interactive=False,
            elem_id="tok-token-table",
        )
        outputs = [
            status,
            answer,
            p_yes,
            tokens,
            term_maps,
            term_methods,
            token_maps,
            token_table,
            session_dir,
        ]
        run.click(
            analyse,
            inputs=[upload, question, term, session_dir],
            outputs=outputs,
            api_name=TOKEN_API_NAME.lstrip("/"),
        )
        tokens.input(
            pick,
            inputs=[upload, question, tokens, session_dir],
            outputs=[term, *outputs],
            api_name=TOKEN_PICK_API_NAME.lstrip("/"),
        )
    return tab


def _true(value) -> bool:
    """A maps table boolean, read as text (``"True"``) or as a bool."""
    return value is True or str(value) == "True"
