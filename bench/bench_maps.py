"""Maps of a sample's targets: one target at a time against Grad-CAM batched across targets.

Both paths (:func:`~cxr_attention.maps.cascade.compute_maps` per target and
:func:`~cxr_attention.maps.cascade.compute_sample_maps`) run side by side in one run, interleaved
per sample, on the same captures and model, so the ratio does not depend on the machine. They
must give the same maps; the bench checks that too.

Run: ``.venv/bin/python bench/bench_maps.py [SAMPLES]`` after ``make demo`` (uses the demo's
inference shard 000 and the tiny model; default 40 samples).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "results" / "demo"
MODEL = REPO_ROOT / "resources" / "tiny-medgemma"
REPEATS = 3
PARAMS = {"method": "cascade", "min_image_mass": 0.05}


def _best_time(function, repeats: int = REPEATS) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str]) -> int:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.captures import load_capture, locate_capture
    from cxr_attention.io import read_table
    from cxr_attention.maps.cascade import compute_maps, compute_sample_maps
    from cxr_attention.maps.methods.base import VisionSource
    from cxr_attention.maps.params import MapParams
    from cxr_attention.maps.records import SampleKey
    from cxr_attention.maps.shard import _pixels_from_image
    from cxr_attention.maps.targets import locate_targets

    n_samples = int(argv[0]) if argv else 40
    answers_csv = DEMO / "inference" / "shard-000.csv"
    if not answers_csv.is_file() or not MODEL.is_dir():
        print("no demo results or tiny model: run `make demo` first")
        return 2
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(MODEL)
    model = AutoModelForImageTextToText.from_pretrained(MODEL).eval()
    answers = read_table(answers_csv, text=True).head(n_samples)
    image_of = dict(
        read_table(DEMO / "preprocess" / "shard-000.csv", text=True)[["dicom_id", "image"]].values
    )
    questions = read_table(DEMO / "questions.csv", text=True).drop_duplicates("question_id")
    terms_of = dict(zip(questions["question_id"], questions["target_terms"], strict=True))
    params = MapParams.from_dict(PARAMS)
    single_total = batched_total = 0.0
    n_gradcam = 0
    for row in answers.itertuples(index=False):
        capture = load_capture(locate_capture(row.capture, DEMO / "inference" / "shard-000"))
        pixels = _pixels_from_image(processor, image_of[row.dicom_id])
        terms = [t.strip() for t in terms_of[row.question_id].split("|") if t.strip()]
        targets = locate_targets(
            processor.tokenizer, capture["input_ids"], capture["generated_ids"], terms
        )
        key = SampleKey(row.sample_id)

        def one_at_a_time(capture=capture, pixels=pixels, targets=targets, key=key):
            vision = VisionSource(lambda: (model, pixels))
            return [
                result
                for target in targets
                for result in compute_maps(capture, target, key, params, vision=vision)
            ]

        def batched(capture=capture, pixels=pixels, targets=targets, key=key):
            vision = VisionSource(lambda: (model, pixels))
            return compute_sample_maps(capture, targets, key, params, vision=vision)

        # Interleaved per sample, so that machine load affects both alike.
        single_seconds, single = _best_time(one_at_a_time)
        batched_seconds, together = _best_time(batched)
        assert [r for r, _ in single] == [r for r, _ in together]
        for (_, a), (_, b) in zip(single, together, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        single_total += single_seconds
        batched_total += batched_seconds
        n_gradcam += sum(r.method == "gradcam" for r, _ in together)
    print(f"{len(answers)} samples, {n_gradcam} Grad-CAM maps (best of {REPEATS} each)")
    print(f"one target at a time: {single_total:8.3f} s")
    print(f"batched Grad-CAM:     {batched_total:8.3f} s")
    print(f"one at a time / batched: {single_total / batched_total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
