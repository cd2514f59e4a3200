"""Rank every registered map method on the known-answer benchmark by three criteria.

On a few planted films (the held-out films' lesions, ``Is there a nodule?``), each method's answer
map (the decision map, `cxr_attention.maps.shard.explain_maps` with ``method="all"``) gets:

- ``pointing_game``: the share of the map's maximum inside the planted box
  (`cxr_attention.known_answer.scores.lesion_map_scores`); chance is the box's area share (what a
  uniform map scores). Higher is better.
- ``deletion_vs_random``: the deletion curve's area (cells removed in the map's order, removed
  image tokens set to the mean image token: ``token_mean``) minus the mean area of random orders
  (`cxr_attention.faithfulness.deletion.sample_curves`); 0 is chance, lower is better (removing
  what the map ranks first lowers the decision margin faster than random removal).
- ``randomisation_spearman``: the absolute Spearman correlation between the map and the same
  method's map after every decoder layer is redrawn, and after every vision-tower layer is
  redrawn (`cxr_attention.faithfulness.randomisation.cascading_randomisation`, its last step of
  each part), averaged over the two parts (``spearman_decoder`` and ``spearman_vision`` keep each
  part's signed value). A map that explains the model changes when its weights do, so lower is
  better. Absolute, because a map whose sign flips after randomisation keeps the original's
  structure (`cxr_attention.faithfulness.similarity.abs_spearman`; Adebayo et al. 2018 take the
  absolute value of the maps, a different thing, for signed gradients), so -0.5 resembles the
  original as much as +0.5 (a constant map has no ranking: NaN). The chance reference is 0, the
  floor, "no resemblance left": two unrelated maps score a little above it (for 256
  independent cells the mean |rho| is sqrt(2 / (pi * 255)), about 0.05; more for smooth maps,
  whose cells are fewer independent draws), so a value of about 0.05 already means none.

Each criterion's mean has a 95% cluster-bootstrap interval over patients
(`cxr_attention.metrics.bootstrap.bootstrap_mean`); methods are ranked per criterion (1 = best;
values equal to the 3 significant digits shown share a rank; a method without a value ranks
last) and overall by the mean of their three ranks. A method that gives no answer map keeps its
rows, with the reason (`cxr_attention.maps.cascade.fallback_steps`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.faithfulness.similarity import abs_spearman
from cxr_attention.io import InputError, read_table, write_csv, write_html
from cxr_attention.known_answer.benchmark import QUESTIONS
from cxr_attention.known_answer.scores import lesion_map_scores
from cxr_attention.maps.registry import METHODS
from cxr_attention.metrics.bootstrap import bootstrap_mean
from cxr_attention.settings import build_settings

__all__ = [
    "CRITERIA",
    "RANKING_COLUMNS",
    "SAMPLE_COLUMNS",
    "RankingSettings",
    "SampleRanking",
    "method_ranking",
    "randomisation_spearman",
    "ranking_samples",
    "ranking_settings",
    "render_ranking_section",
    "run_method_ranking",
    "sample_method_scores",
]

logger = logging.getLogger(__name__)

#: Criterion -> (``higher`` or ``lower`` is better, its display name).
CRITERIA = {
    "pointing_game": ("higher", "pointing game"),
    "deletion_vs_random": ("lower", "deletion AUC - random AUC"),
    "randomisation_spearman": ("lower", "|Spearman| after randomisation"),
}
#: The one perturbation of the ranking's deletion curves (the cheapest: one vision pass).
PERTURBATION = "token_mean"
RANDOMISED_PARTS = ("decoder", "vision")
SAMPLE_COLUMNS = [
    "dicom_id",
    "subject_id",
    "side",
    "method",
    "reason",
    "pointing_game",
    "area_share",
    "deletion_auc",
    "random_deletion_auc",
    "deletion_vs_random",
    "spearman_decoder",
    "spearman_vision",
    "randomisation_spearman",
]
RANKING_COLUMNS = [
    "method",
    "criterion",
    "better",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_patients",
    "chance",
    "rank",
    "reason",
]


@dataclass(frozen=True)
class RankingSettings:
    """The ranking's settings (schema section ``known_answer.ranking``; no defaults here)."""

    samples: int
    steps: list[float]
    n_random: int
    cascade_steps: int
    ig_steps: int
    rise_masks: int
    batch_size: int


def ranking_settings(values: Mapping[str, Any]) -> RankingSettings:
    return build_settings(RankingSettings, "known_answer.ranking", values)


@dataclass
class SampleRanking:
    """One planted film's per-method scores and the maps they came from.

    Attributes
    ----------
    rows : list of dict
        One per registered method (`SAMPLE_COLUMNS` less the film's identifiers).
    maps : dict
        Method -> its answer map (16 x 16).
    randomised : dict
        ``(method, part)`` -> its answer map with every layer of ``part`` redrawn.
    """

    rows: list[dict] = field(default_factory=list)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    randomised: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def sample_method_scores(
    loaded,
    image: np.ndarray,
    box: Mapping,
    *,
    settings: RankingSettings,
    maps_params: Mapping,
    inference: Mapping,
    seed: int,
    question: str = QUESTIONS["any"],
) -> SampleRanking:
    """Every registered method's three criteria on one planted film (see the module docstring).

    Parameters
    ----------
    loaded : cxr_attention.inference.model.LoadedModel
    image : ndarray, uint8
        The film with its lesion, as the model is shown it.
    box : mapping
        The lesion's MS-CXR row (``x, y, w, h, image_width, image_height``).
    settings : RankingSettings
    maps_params : mapping
        The ``maps`` config section; ``ig_steps`` and ``rise_masks`` are replaced by the
        ranking's, and per-layer maps are not made.
    inference : mapping
        ``layers``, ``max_new_tokens``, ``image_first`` (as the inference stage answered).
    seed : int
    """
    from cxr_attention.faithfulness.deletion import CurveSettings, sample_curves
    from cxr_attention.faithfulness.randomisation import cascading_randomisation
    from cxr_attention.faithfulness.scoring import DecisionScorer
    from cxr_attention.faithfulness.shard import capture_inputs
    from cxr_attention.inference.runner import answer_one
    from cxr_attention.inference.writing import capture_arrays
    from cxr_attention.maps.cascade import fallback_steps
    from cxr_attention.maps.registry import LAST_RESORT
    from cxr_attention.maps.shard import explain_maps

    params = {
        **maps_params,
        "ig_steps": settings.ig_steps,
        "rise_masks": settings.rise_masks,
        "per_layer": False,
        "seed": seed,
    }
    answer = dict(
        layers=int(inference["layers"]),
        max_new_tokens=int(inference["max_new_tokens"]),
        image_first=bool(inference["image_first"]),
    )
    capture = answer_one(loaded, image, question, **answer, include_pixel_values=True)
    arrays = capture_arrays(capture, dtype=np.float32, include_pixel_values=True)
    maps = explain_maps(arrays, terms=[], loaded_model=loaded, method="all", params=params)
    result = SampleRanking()
    reasons: dict[str, str] = {}
    for record, grid in maps:
        if record.is_answer_decision_map:
            result.maps[record.method] = grid
            if record.method == LAST_RESORT:  # its map records why the others gave none
                reasons = dict(fallback_steps(record.fallback_reason))
    ordered = [method for method in METHODS if method in result.maps]
    pixels = arrays["pixel_values"]
    # what a uniform map scores on the pointing game; the box's, whatever the method
    area = lesion_map_scores(result.maps[LAST_RESORT], box, result.maps[LAST_RESORT].shape)

    scorer = DecisionScorer(
        loaded.model,
        loaded.tokenizer,
        capture_inputs(loaded, capture, pixels.reshape(1, *pixels.shape[-3:])),
        batch_size=settings.batch_size,
    )
    curve_settings = CurveSettings(
        perturbations=(PERTURBATION,),
        steps=tuple(float(step) for step in settings.steps),
        n_random=settings.n_random,
        blur_sigma_cells=1.0,  # unused by token_mean
        road_noise=0.0,
        road_side=1,
        seed=seed,
    )
    areas, _ = sample_curves(
        scorer, [(method, method, result.maps[method]) for method in ordered], curve_settings
    )
    deletion = areas[areas["curve"] == "deletion"].set_index("method")

    similarity = cascading_randomisation(
        loaded,
        image,
        question,
        result.maps,
        **answer,
        maps_params=params,
        steps=settings.cascade_steps,
        seed=seed,
        kept_maps=result.randomised,
    )
    full = {
        (row["method"], row["part"]): row["spearman"]
        for row in similarity
        if row["layers_randomised"] == row["n_layers"]
    }
    result.randomised = {
        (method, part): grid
        for (method, part, count), grid in result.randomised.items()
        if count == max(c for m, p, c in result.randomised if (m, p) == (method, part))
    }

    for method in METHODS:
        if method not in result.maps:
            row = dict.fromkeys(SAMPLE_COLUMNS[5:], math.nan)
            reason = reasons.get(method, "no answer map")
            row["area_share"] = area["area_share"]
            result.rows.append({"method": method, "reason": reason, **row})
            continue
        scores = lesion_map_scores(result.maps[method], box, result.maps[method].shape)
        spearman = {part: full.get((method, part), math.nan) for part in RANDOMISED_PARTS}
        auc, random_auc = deletion.loc[method, ["auc", "random_auc_mean"]]
        result.rows.append(
            {
                "method": method,
                "reason": "",
                "pointing_game": scores["pointing_game"],
                "area_share": scores["area_share"],
                "deletion_auc": float(auc),
                "random_deletion_auc": float(random_auc),
                "deletion_vs_random": float(auc - random_auc),
                **{f"spearman_{part}": value for part, value in spearman.items()},
                "randomisation_spearman": randomisation_spearman(spearman.values()),
            }
        )
    return result


def randomisation_spearman(part_spearmans: Iterable[float]) -> float:
    """The film's randomisation criterion: the mean absolute Spearman over the randomised parts.

    Absolute because a map whose sign flips keeps the original's structure
    (`cxr_attention.faithfulness.similarity.abs_spearman`, as the faithfulness stage's
    randomisation table reads it). A part without a value (NaN: a constant map) is left out; NaN
    when none has one.
    """
    finite = [abs_spearman(value) for value in part_spearmans if np.isfinite(value)]
    return float(np.mean(finite)) if finite else math.nan


def method_ranking(
    samples: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """The ranking table (`RANKING_COLUMNS`) from the per-film rows (`SAMPLE_COLUMNS`).

        One row per (method, criterion), methods in registry order, then one ``overall`` row per
        method (value: the mean of its three ranks). ``chance``: the mean box area share for the
        pointing game, 0 for the other two. ``reason``: why a method gave no map (its first film's
    reason, and on how many films when it gave maps on others).
    """
    rows = []
    chance = {
        "pointing_game": float(samples.groupby("dicom_id")["area_share"].max().mean()),
        "deletion_vs_random": 0.0,
        "randomisation_spearman": 0.0,
    }
    for method in METHODS:
        of_method = samples[samples["method"] == method]
        reasons = [r for r in of_method["reason"].fillna("").astype(str) if r]
        reason = ""
        if reasons:  # every film's reason would repeat one: the first, and how many films
            some = f"no map on {len(reasons)} of {len(of_method)} films: "
            reason = reasons[0] if len(reasons) == len(of_method) else some + reasons[0]
        for criterion, (better, _) in CRITERIA.items():
            estimate = bootstrap_mean(
                pd.to_numeric(of_method[criterion], errors="coerce").to_numpy(),
                of_method["subject_id"].astype(str).to_numpy(),
                n_boot=n_boot,
                confidence=confidence,
                seed=seed,
            )
            rows.append(
                {
                    "method": method,
                    "criterion": criterion,
                    "better": better,
                    "value": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n": estimate.n,
                    "n_patients": estimate.n_clusters,
                    "chance": chance[criterion],
                    "reason": reason,
                }
            )
    table = pd.DataFrame(rows)
    table["rank"] = np.nan
    for criterion, (better, _) in CRITERIA.items():
        chosen = table["criterion"] == criterion
        # values equal to the 3 significant digits shown share a rank: the last digits of a
        # curve's area are float noise, not an order
        shown = table.loc[chosen, "value"].map(lambda v: float(f"{v:.3g}"))
        table.loc[chosen, "rank"] = shown.rank(
            ascending=better == "lower", method="min", na_option="bottom"
        ).to_numpy()
    mean_rank = table.groupby("method", sort=False)["rank"].mean()
    overall = pd.DataFrame(
        {
            "method": mean_rank.index,
            "criterion": "overall",
            "better": "lower",
            "value": mean_rank.to_numpy(),
            "rank": mean_rank.rank(method="min").to_numpy(),
            "reason": [
                next(iter(table.loc[table["method"] == m, "reason"].loc[lambda r: r != ""]), "")
                for m in mean_rank.index
            ],
        }
    )
    return pd.concat([table, overall], ignore_index=True)[RANKING_COLUMNS]


def ranking_samples(
    plantings: pd.DataFrame, held_out: Sequence[str], samples: int, seed: int
) -> pd.DataFrame:
    """The planted films of held-out source films, at most ``samples`` (seeded, by dicom_id)."""
    from cxr_attention.faithfulness.samples import subsample

    planted = plantings[
        (plantings["side"] != "none") & plantings["source_dicom_id"].isin(set(held_out))
    ]
    return subsample(planted.assign(sample_id=planted["dicom_id"]), samples, seed)


def render_ranking_section(ranking: pd.DataFrame) -> str:
    """The ranking as an HTML fragment: overall order first, each criterion with its CI."""
    from cxr_attention.report._html import html_table

    overall = ranking[ranking["criterion"] == "overall"].sort_values(["rank", "method"])
    by_method = ranking.set_index(["method", "criterion"])
    rows = []
    for row in overall.itertuples(index=False):
        cells = [int(row.rank), row.method]
        for criterion in CRITERIA:
            estimate = by_method.loc[(row.method, criterion)]
            cells.append(_estimate_text(estimate))
            cells.append(int(estimate["rank"]))
        cells.append(row.reason)
        rows.append(cells)
    header = ["overall rank", "map method"]
    for better, name in CRITERIA.values():
        header += [f"{name} ({better} is better)", "rank"]
    header.append("no map because")
    chance = ranking.drop_duplicates("criterion").set_index("criterion")["chance"]
    n_films = int(ranking["n"].max()) if len(ranking) else 0
    text = (
        "<h3>Method ranking on the planted lesions</h3>\n"
        f"<p>Every registered map method's answer map of <em>{QUESTIONS['any']}</em> on "
        f'{n_films} planted held-out film(s) (docs/known_answer.md, "Method ranking"). '
        "Pointing game: the map's maximum in the lesion's box (chance, the box's area share: "
        f"{chance['pointing_game']:.3g}). Deletion: area under the decision margin as image "
        "tokens are replaced by the mean image token in the map's order, minus the mean area of "
        "random orders (chance 0; below 0, the map's first cells matter more than random ones). "
        "|Spearman|: the absolute rank correlation between the map and the same method's map "
        "after every decoder layer, and after every vision-tower layer, is redrawn, averaged "
        "over the two (a map that does not change when the model does explains the input, not "
        "the model; absolute, because a map whose sign flips keeps the original's "
        "structure; 0 is no resemblance left, and unrelated maps score "
        "about 0.05 or more). "
        "Means with 95% bootstrap intervals over patients; overall rank: by the mean of the "
        "three ranks.</p>\n"
    )
    numeric = [True, False] + [True, True] * len(CRITERIA) + [False]
    return text + html_table(header, rows, numeric=numeric)


def _estimate_text(estimate) -> str:
    value, low, high = (float(estimate[k]) for k in ("value", "ci_low", "ci_high"))
    if not np.isfinite(value):
        return ""
    interval = f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:.3g}{interval} (n={int(estimate['n'])})"


def run_method_ranking(
    *,
    files_dir: str | os.PathLike,
    max_side: int | None,
    plantings_csv: str | os.PathLike,
    boxes_csv: str | os.PathLike,
    model_id: str,
    held_out: Sequence[str],
    out_ranking: str | os.PathLike,
    out_samples: str | os.PathLike,
    out_section: str | os.PathLike,
    settings: Mapping,
    maps_params: Mapping,
    inference: Mapping,
    statistics: Mapping,
    seed: int,
    min_free_gpu_gb: float = 15.0,
) -> pd.DataFrame:
    """The workflow's ranking job: score the chosen films, write the tables and the section.

    Parameters
    ----------
    files_dir : path-like
        The known-answer dataset's ``files/`` tree (MIMIC-CXR-JPG layout): the planted films,
        whether or not the run's selection drew them.
    max_side : int or None
        The films' long side as the preprocessing decodes them (``preprocess.max_side``).
    plantings_csv, boxes_csv : path-like
        The known-answer dataset's ``plantings.csv`` and ``boxes.csv``.
    held_out : sequence of str
        ``dicom_id`` of the source films not used in training.
    statistics : mapping
        ``bootstrap_samples`` and ``confidence`` (the ``metrics`` section).

    Returns
    -------
    pandas.DataFrame
        The ranking table.
    """
    from cxr_attention.inference.model import load_model
    from cxr_attention.preprocess.decode import decode_image
    from cxr_attention.preprocess.mimic import image_path

    options = ranking_settings(settings)
    plantings = read_table(
        plantings_csv, required=["dicom_id", "subject_id", "study_id", "side"], text=True
    )
    boxes = read_table(boxes_csv, text=True).drop_duplicates("dicom_id").set_index("dicom_id")
    chosen = ranking_samples(plantings, held_out, options.samples, seed)
    loaded = load_model(model_id, min_free_gpu_gb=min_free_gpu_gb) if len(chosen) else None
    frames = []
    for film in chosen.itertuples(index=False):
        if film.dicom_id not in boxes.index:
            raise InputError(f"{boxes_csv}: no box of the planted film {film.dicom_id}")
        box = boxes.loc[film.dicom_id]
        path = image_path(
            Path(files_dir).parent, "jpg", film.subject_id, film.study_id, film.dicom_id
        )
        scored = sample_method_scores(
            loaded,
            decode_image(path, max_side=max_side)[0],
            {key: float(box[key]) for key in ("x", "y", "w", "h", "image_width", "image_height")},
            settings=options,
            maps_params=maps_params,
            inference=inference,
            seed=seed,
        )
        frame = pd.DataFrame(scored.rows)
        frames.append(
            frame.assign(dicom_id=film.dicom_id, subject_id=film.subject_id, side=film.side)
        )
    samples = (
        pd.concat(frames, ignore_index=True)[SAMPLE_COLUMNS]
        if frames
        else pd.DataFrame(columns=SAMPLE_COLUMNS)
    )
    ranking = method_ranking(
        samples,
        n_boot=int(statistics["bootstrap_samples"]),
        confidence=float(statistics["confidence"]),
        seed=seed,
    )
    write_csv(samples, out_samples)
    write_csv(ranking, out_ranking)
    write_html(render_ranking_section(ranking), out_section)
    return ranking
