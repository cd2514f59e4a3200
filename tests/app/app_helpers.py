"""What the app's tests share: the page's settings for the tiny model, serving a page, and a
synthetic run folder for the study browser."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.app import ExplainSettings
from cxr_attention.settings import schema_defaults


def explain_settings() -> ExplainSettings:
    """The schema's explain settings, with a short answer (the tiny model's answer is noise)."""
    defaults = schema_defaults()
    return ExplainSettings(
        layers=defaults["inference"]["layers"],
        method=defaults["maps"]["method"],
        max_new_tokens=6,
        image_first=defaults["inference"]["image_first"],
        max_side=defaults["preprocess"]["max_side"],
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(page) -> Iterator:
    """A `gradio_client.Client` of ``page`` launched on a free local port, closed afterwards."""
    from gradio_client import Client

    page.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True)
    try:
        yield Client(page.local_url, verbose=False)
    finally:
        page.close()


def explain_directly(
    radiograph, question: str, out_dir, loaded, model_dir, *, terms=(), method=None, **options
):
    """The oracle: `explain()` called as the CLI calls it, outside the page, with its settings
    (``terms`` and ``method`` as ``--term`` and ``--method`` change them; ``options``: explain's
    optional outputs, ``faithfulness=True``, ``reliance=True``, ...)."""
    from cxr_attention.explain import explain

    settings = explain_settings()
    result = explain(
        radiograph,
        question=question,
        model_id=str(model_dir),
        out_dir=out_dir,
        layers=settings.layers,
        terms=terms,
        method=settings.method if method is None else method,
        max_new_tokens=settings.max_new_tokens,
        image_first=settings.image_first,
        max_side=settings.max_side,
        loaded_model=loaded,
        **options,
    )
    assert result.failure is None, result.failure
    return result


# sample: (finding, strategy, answer, expected); the last one has no expected answer (unscored)
SAMPLES = {
    "s1": ("Edema", "baseline", "yes", "yes"),
    "s2": ("Edema", "paraphrase", "no", "yes"),
    "s3": ("Pneumothorax", "baseline", "no", "no"),
    "s4": ("Pneumothorax", "paraphrase", "unclear", "no"),
    "s5": ("Pneumothorax", "baseline", "yes", ""),
}
METHODS = ("attention", "gradcam")


def planted_cell(index: int) -> tuple[int, int]:
    return (3 * index + 1) % 16, (5 * index + 2) % 16


# The synthetic run's manifest images (with ``radiograph``): one annotated, one not.
ANNOTATED, UNANNOTATED = "ds1", "ds2"


def annotated_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The box (x, y, w, h) the synthetic run records on ``ANNOTATED``, in its source frame."""
    return width // 4, height // 4, width // 2, height // 3


def write_synthetic_run(run: Path, radiograph: Path | None = None) -> Path:
    """A run folder written with pandas in the run's real column names: ``SAMPLES`` with an
    answer map per method of ``METHODS`` and a prompt map, each grid's maximum planted at
    `planted_cell`, one summary table and a ``report.html``.

    With ``radiograph``, the run (``<root>/results/<run>``) also has manifest images:
    ``ANNOTATED`` and ``UNANNOTATED``, both that radiograph as their preprocessed file, and the
    grounding stage's ``annotations.csv`` with one box (`annotated_box`) on ``ANNOTATED``."""
    (run / "metrics").mkdir(parents=True)
    if radiograph is not None:
        _write_manifest_images(run, radiograph)
    (run / "maps").mkdir()
    answers = pd.DataFrame(
        [
            {
                "sample_id": sid,
                "dicom_id": f"d{sid}",
                "subject_id": "100",
                "question_id": f"q.{strategy}",
                "finding": finding,
                "strategy": strategy,
                "answer": answer,
                "expected": expected,
                "correct": "" if not expected else str(answer == expected),
                "p_yes": 0.1 * (i + 1),
            }
            for i, (sid, (finding, strategy, answer, expected)) in enumerate(SAMPLES.items())
        ]
    )
    answers.to_csv(run / "metrics" / "answers.csv", index=False)
    rows, grids = [], {}
    for i, sid in enumerate(SAMPLES):
        for k, (source, method) in enumerate(
            [*(("answer", m) for m in METHODS), ("prompt", "attention")]
        ):
            map_id = f"{sid}__{source}__{method}"
            grid = np.full((16, 16), 1.0 / 256, dtype=np.float32)
            grid[planted_cell(2 * i + k)] = 0.5
            grids[map_id] = grid
            rows.append(
                {
                    "map_id": map_id,
                    "sample_id": sid,
                    "dicom_id": f"d{sid}",
                    "term": "",
                    "source": source,
                    "method": method,
                    "entropy": 1.0 + i + 0.1 * k,
                    "inside_body": 0.5 + 0.01 * i,
                }
            )
    pd.DataFrame(rows).to_csv(run / "metrics" / "maps.csv", index=False)
    np.savez(run / "maps" / "shard-000.npz", **grids)
    pd.DataFrame({"finding": ["Edema", "Pneumothorax"], "accuracy": [0.5, 0.5]}).to_csv(
        run / "metrics" / "accuracy_by_finding.csv", index=False
    )
    (run / "report.html").write_text("<html><body>synthetic report</body></html>")
    return run


def _write_manifest_images(run: Path, radiograph: Path) -> None:
    from PIL import Image

    from cxr_attention.grounding.datasets import Annotation, write_annotation_table

    root = run.parents[1]  # results/<run> -> the repository root, as the workflow writes
    shard = run / "preprocess" / "shard-000"
    shard.mkdir(parents=True)
    images = []
    for dicom_id in (ANNOTATED, UNANNOTATED):
        image = shard / f"{dicom_id}{radiograph.suffix}"
        shutil.copyfile(radiograph, image)
        images.append(str(image.relative_to(root)))
    pd.DataFrame(
        {"dicom_id": [ANNOTATED, UNANNOTATED], "view_position": ["PA", "PA"], "shard": [0, 0]}
    ).to_csv(run / "manifest.csv", index=False)
    pd.DataFrame(
        {"dicom_id": [ANNOTATED, UNANNOTATED], "image": images, "mask_flags": ["", ""]}
    ).to_csv(run / "preprocess" / "shard-000.csv", index=False)
    with Image.open(radiograph) as opened:
        width, height = opened.size
    (run / "grounding").mkdir()
    box = Annotation(
        dataset="ms_cxr",
        annotation_id="ms_cxr.0",
        image_id=ANNOTATED,
        patient_id="100",
        finding="Pleural Effusion",
        label="Pleural Effusion",
        phrase="right effusion",
        image_width=width,
        image_height=height,
        boxes=(tuple(float(v) for v in annotated_box(width, height)),),
    )
    write_annotation_table([box], run / "grounding" / "annotations.csv")
