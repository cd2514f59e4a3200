"""One inference shard: outputs, resume after a kill, out-of-memory halving, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from inference_helpers import run_params
from PIL import Image

from cxr_attention.inference import runner
from cxr_attention.inference.batching import capture_images
from cxr_attention.inference.model import load_model
from cxr_attention.inference.prompting import build_inputs
from cxr_attention.inference.runner import answer_one, is_out_of_memory, run_inference_shard
from cxr_attention.inference.writing import ANSWER_COLUMNS, SampleWriter, write_capture

QUESTIONS = [
    (
        "pleural_effusion.baseline.0",
        "Pleural Effusion",
        "baseline",
        "Is there a pleural effusion?",
        "pleural effusion|effusion|fluid",
    ),
    (
        "pleural_effusion.plain.0",
        "Pleural Effusion",
        "plain",
        "Is there fluid around the lungs?",
        "pleural effusion|effusion|fluid",
    ),
    (
        "cardiomegaly.baseline.0",
        "Cardiomegaly",
        "baseline",
        "Is there cardiomegaly?",
        "cardiomegaly|heart",
    ),
]
PARAMS = run_params(
    max_new_tokens=3, batch_size=2, image_first=True, prompt_image_rows="all", layers=3
)
# What cxr-attention explain passes to answer_one (max_new_tokens given per test).
EXPLAIN = {"layers": 3, "image_first": False, "include_pixel_values": True}


class Stop(Exception):
    """Stands in for a kill -9 in the middle of a shard."""


@pytest.fixture()
def run_tables(tmp_path):
    """Manifest, questions and preprocess tables: shard 0 has two good images and a broken one."""
    rng = np.random.default_rng(0)
    rows, pre = [], []
    for index, (dicom_id, shard) in enumerate([("d1", 0), ("d2", 0), ("d3", 1), ("bad", 0)]):
        path = tmp_path / "pre" / f"{dicom_id}.png"
        path.parent.mkdir(exist_ok=True)
        if dicom_id == "bad":
            path.write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 256, (80 + index, 64), dtype=np.uint8)).save(path)
        rows.append(
            {
                "dicom_id": dicom_id,
                "subject_id": "10",
                "study_id": f"5{index}",
                "split": "test",
                "view_position": "PA",
                "image_path": f"x/{dicom_id}.jpg",
                "shard": shard,
                "Pleural Effusion": [1.0, 0.0, -1.0, 1.0][index],
                "Cardiomegaly": [None, 1.0, 0.0, 0.0][index],
            }
        )
        if shard == 0:
            pre.append({"dicom_id": dicom_id, "image": str(path)})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    questions = tmp_path / "questions.csv"
    pd.DataFrame(
        [
            {
                "question_id": qid,
                "dicom_id": "",
                "finding": finding,
                "strategy": strategy,
                "baseline_question_id": qid.rsplit(".", 2)[0] + ".baseline.0",
                "variant_index": 0,
                "variant_kind": "",
                "question": text,
                "target_terms": terms,
                "expected_answer": "",
                "answer_terms": terms.split("|")[0],
            }
            for qid, finding, strategy, text, terms in QUESTIONS
        ]
    ).to_csv(questions, index=False)
    preprocess = tmp_path / "preprocess.csv"
    pd.DataFrame(pre).to_csv(preprocess, index=False)
    return {"manifest_csv": manifest, "questions_csv": questions, "preprocess_csv": preprocess}


def _run(tables, tiny_model_dir, out, **extra):
    kwargs = {
        **tables,
        "shard": 0,
        "model_id": tiny_model_dir,
        "out_csv": out / "shard-0.csv",
        "out_dir": out / "shard-0",
        "failures_csv": out / "shard-0.failures.csv",
        "params": PARAMS,
        "device": "cpu",
        "progress": False,
    }
    kwargs.update(extra)
    run_inference_shard(**kwargs)
    return pd.read_csv(kwargs["out_csv"], dtype=str, keep_default_na=False)


class Counting:
    """Wraps capture_images: counts the questions the model is asked, optionally stops or OOMs."""

    def __init__(self, stop_after_batches=None, oom=None):
        self.questions = 0
        self.batch_sizes = []
        self.calls = []  # per call, the number of questions of each image
        self.batches = 0
        self.stop_after_batches = stop_after_batches
        self.oom = oom

    def __call__(self, model, processor, requests, **kwargs):
        self.batch_sizes.append(kwargs["batch_size"])
        self.calls.append([len(questions) for _, questions in requests])
        if self.oom is not None:
            self.oom([q for _, questions in requests for q in questions], kwargs["batch_size"])
        inner = kwargs.pop("on_batch")

        def on_batch(captures, seconds):
            self.questions += len(captures)
            inner(captures, seconds)
            self.batches += 1
            if self.stop_after_batches is not None and self.batches >= self.stop_after_batches:
                raise Stop

        return capture_images(model, processor, requests, on_batch=on_batch, **kwargs)


def _strip(table):
    """The table without timings and paths, P(yes) as numbers (compared with a tolerance)."""
    return table.drop(columns=["seconds", "capture"]).astype({"p_yes": float, "yes_no_mass": float})


def _arrays(folder):
    return {p.name: dict(np.load(p)) for p in sorted(folder.glob("*.npz"))}


def test_shard_outputs(run_tables, tiny_model_dir, tmp_path, monkeypatch):
    loads = []

    def counting_load(*args, **kwargs):
        loads.append(args)
        return load_model(*args, **kwargs)

    table = _run(run_tables, tiny_model_dir, tmp_path / "out", load=counting_load)
    assert len(loads) == 1  # the model loads once per job
    assert list(table.columns) == ANSWER_COLUMNS
    assert sorted(table["dicom_id"].unique()) == ["d1", "d2"]  # shard 0 only; "bad" failed
    assert len(table) == 2 * len(QUESTIONS)
    assert set(table["answer"]) <= {"yes", "no", "unclear"}
    assert all(0 < float(p) < 1 for p in table["p_yes"])
    # Labels and expected answers: d1 effusion 1.0 -> yes; d1 cardiomegaly blank -> excluded.
    d1 = table[table["dicom_id"] == "d1"].set_index("question_id")
    assert d1.loc["pleural_effusion.baseline.0", "expected"] == "yes"
    assert d1.loc["cardiomegaly.baseline.0", "expected"] == ""
    assert d1.loc["cardiomegaly.baseline.0", "correct"] == ""
    effusion = d1.loc["pleural_effusion.baseline.0"]
    assert effusion["correct"] == str(effusion["answer"] == "yes")

    failures = pd.read_csv(tmp_path / "out" / "shard-0.failures.csv", dtype=str)
    assert list(failures["dicom_id"]) == ["bad"]
    assert set(failures["stage"]) == {"inference"}
    assert not (tmp_path / "out" / "shard-0.partial").exists()

    # The stored arrays are the capture of that question asked alone (float16 storage).
    sample = table.iloc[0]
    stored = np.load(sample["capture"])
    assert stored["attention"].dtype == np.float16
    assert stored["attention"].shape[:2] == (3, 8) and stored["attention"].shape[-1] == 256
    assert list(stored["grid_shape"]) == [16, 16]
    assert len(stored["generated_tokens"]) == len(stored["generated_ids"])
    assert int(sample["n_generated_tokens"]) == len(stored["generated_ids"])
    loaded = load_model(tiny_model_dir, device="cpu")
    image = Image.open(tmp_path / "pre" / f"{sample['dicom_id']}.png")
    options = {**EXPLAIN, "image_first": True}
    alone = answer_one(loaded, image, sample["question"], max_new_tokens=3, **options)
    np.testing.assert_allclose(stored["attention"], alone.attention, atol=1e-3)
    np.testing.assert_array_equal(stored["input_ids"], alone.input_ids)
    assert sample["generated_text"] == alone.generated_text
    assert abs(float(sample["p_yes"]) - alone.p_yes) < 1e-6
    assert abs(float(sample["yes_no_mass"]) - alone.yes_no_mass) < 1e-6
    masses = table["yes_no_mass"].astype(float)
    flagged = table["low_yes_no_mass"].map({"True": True, "False": False, True: True, False: False})
    threshold = PARAMS["min_yes_no_mass"]
    assert (flagged == (masses < threshold)).all()


def test_resume_after_kill_skips_finished_samples(
    run_tables, tiny_model_dir, tmp_path, monkeypatch
):
    reference = _run(run_tables, tiny_model_dir, tmp_path / "whole")

    interrupted = Counting(stop_after_batches=1)
    monkeypatch.setattr(runner, "capture_images", interrupted)
    with pytest.raises(Stop):
        _run(run_tables, tiny_model_dir, tmp_path / "resumed")
    partial = tmp_path / "resumed" / "shard-0.partial"
    finished = sorted(p.stem for p in partial.glob("*.json"))
    assert len(finished) == 2  # one batch of two questions
    mtimes = {p.name: p.stat().st_mtime_ns for p in partial.iterdir()}

    resumed = Counting()
    monkeypatch.setattr(runner, "capture_images", resumed)
    table = _run(run_tables, tiny_model_dir, tmp_path / "resumed")
    assert resumed.questions == len(reference) - len(finished)  # finished ones not recomputed
    # Exactly equal: a resumed job asks each question in the same batch as an uninterrupted one.
    pd.testing.assert_frame_equal(_strip(table), _strip(reference), check_exact=True)
    whole = _arrays(tmp_path / "whole" / "shard-0")
    again = _arrays(tmp_path / "resumed" / "shard-0")
    assert whole.keys() == again.keys()
    for name in whole:
        for key, value in whole[name].items():
            np.testing.assert_array_equal(value, again[name][key])
    for name in (f"{sample_id}.npz" for sample_id in finished):
        assert (tmp_path / "resumed" / "shard-0" / name).stat().st_mtime_ns == mtimes[name]


def test_images_answered_together_equal_one_image_at_a_time_and_resume_exactly(
    run_tables, tiny_model_dir, tmp_path, monkeypatch
):
    """Three images per group (one unreadable), 4 rows per batch: the first batch spans two
    images; answers equal those of one image at a time, and a job killed after that batch
    resumes to exactly the whole job's tables and arrays."""
    reference = _run(run_tables, tiny_model_dir, tmp_path / "alone")
    grouped = {**PARAMS, "images_per_batch": 3, "batch_size": 4}

    whole_calls = Counting()
    monkeypatch.setattr(runner, "capture_images", whole_calls)
    whole = _run(run_tables, tiny_model_dir, tmp_path / "whole", params=grouped)
    assert whole_calls.calls == [[3, 3]]  # d1 and d2 in one call; "bad" failed to load
    pd.testing.assert_frame_equal(_strip(whole), _strip(reference), atol=1e-5)
    failures = pd.read_csv(tmp_path / "whole" / "shard-0.failures.csv", dtype=str)
    assert list(failures["dicom_id"]) == ["bad"]
    alone_arrays = _arrays(tmp_path / "alone" / "shard-0")
    for name, arrays in _arrays(tmp_path / "whole" / "shard-0").items():
        for key in ("attention", "text_attention", "prompt_image_attention"):
            np.testing.assert_allclose(arrays[key], alone_arrays[name][key], atol=1e-3)

    monkeypatch.setattr(runner, "capture_images", Counting(stop_after_batches=1))
    with pytest.raises(Stop):
        _run(run_tables, tiny_model_dir, tmp_path / "resumed", params=grouped)
    resumed_calls = Counting()
    monkeypatch.setattr(runner, "capture_images", resumed_calls)
    resumed = _run(run_tables, tiny_model_dir, tmp_path / "resumed", params=grouped)
    assert resumed_calls.calls == [[2]]  # only the second batch: d2's last two questions
    pd.testing.assert_frame_equal(_strip(resumed), _strip(whole), check_exact=True)
    again = _arrays(tmp_path / "resumed" / "shard-0")
    for name, arrays in _arrays(tmp_path / "whole" / "shard-0").items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, again[name][key])


def test_out_of_memory_halves_the_batch(run_tables, tiny_model_dir, tmp_path, monkeypatch):
    def oom_above_one(questions, batch_size):
        if batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    fake = Counting(oom=oom_above_one)
    monkeypatch.setattr(runner, "capture_images", fake)
    table = _run(run_tables, tiny_model_dir, tmp_path / "oom", params={**PARAMS, "batch_size": 4})
    assert fake.batch_sizes[:3] == [4, 2, 1]
    assert len(table) == 2 * len(QUESTIONS)
    reference = _run(run_tables, tiny_model_dir, tmp_path / "plain")
    pd.testing.assert_frame_equal(_strip(table), _strip(reference), atol=1e-6)


def test_sample_still_out_of_memory_at_batch_one_fails_alone(
    run_tables, tiny_model_dir, tmp_path, monkeypatch
):
    from cxr_attention.inference import batching

    real_batch = batching.capture_batch

    def poisoned_batch(*args, questions, **kwargs):
        if "Is there fluid around the lungs?" in questions:
            raise RuntimeError("CUDA error: out of memory")
        return real_batch(*args, questions=questions, **kwargs)

    monkeypatch.setattr(batching, "capture_batch", poisoned_batch)
    table = _run(run_tables, tiny_model_dir, tmp_path / "poison")
    assert len(table) == 2 * (len(QUESTIONS) - 1)
    assert "pleural_effusion.plain.0" not in set(table["question_id"])
    failures = pd.read_csv(tmp_path / "poison" / "shard-0.failures.csv", dtype=str)
    oom = failures[failures["error_type"] == "out_of_memory"]
    assert sorted(oom["dicom_id"]) == ["d1", "d2"]
    assert (failures["error_type"] != "out_of_memory").sum() == 1  # the unreadable image


def test_sample_writer_writes_in_the_background_and_bounds_what_waits():
    import threading

    release = threading.Event()
    written, reported = [], []

    def write(name, wait):
        if wait:
            assert release.wait(timeout=30)
        written.append(name)

    with SampleWriter(lambda: reported.append(1), threads=2, max_pending=2) as writer:
        writer.submit(write, "first", True)  # blocked until released ...
        writer.submit(write, "second", False)  # ... and submitting went on meanwhile
        assert "first" not in written
        release.set()
        writer.submit(write, "third", False)  # three waiting > 2: the oldest is waited for
        assert "first" in written
    assert sorted(written) == ["first", "second", "third"]
    assert len(reported) == 3


def test_sample_writer_finishes_submitted_writes_when_the_job_fails(tmp_path, caplog):
    import threading

    release = threading.Event()

    def write(name, fail=False):
        assert release.wait(timeout=30)
        if fail:
            raise OSError(f"disk full writing {name}")
        (tmp_path / name).write_text("done")

    with pytest.raises(Stop), SampleWriter(lambda: None, threads=1) as writer:
        writer.submit(write, "a")
        writer.submit(write, "b")
        writer.submit(write, "b2", True)
        release.set()
        raise Stop  # the job's own error is what propagates, after the writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert "disk full writing b2" in caplog.text  # the write error is logged, not lost

    release.clear()
    with pytest.raises(OSError, match="disk full writing c"), SampleWriter(lambda: None) as writer:
        writer.submit(write, "c", True)
        writer.submit(write, "d")
        release.set()
    assert (tmp_path / "d").exists()  # a failed write does not drop the others submitted


def test_other_errors_are_not_taken_for_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_explain_arrays_are_float32_with_pixels(tiny_model_dir, tmp_path):
    loaded = load_model(tiny_model_dir, device="cpu")
    image = np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8)
    capture = answer_one(loaded, image, "Is there a pneumothorax?", max_new_tokens=2, **EXPLAIN)
    write_capture(capture, tmp_path / "attention.npz", dtype=np.float32, include_pixel_values=True)
    stored = np.load(tmp_path / "attention.npz")
    assert stored["attention"].dtype == np.float32
    np.testing.assert_array_equal(stored["attention"], capture.attention)
    assert stored["pixel_values"].dtype == np.float32
    assert stored["pixel_values"].shape == (3, 448, 448)
    inputs = build_inputs(loaded.processor, image, "Is there a pneumothorax?", image_first=False)
    np.testing.assert_array_equal(stored["pixel_values"], inputs["pixel_values"][0].numpy())
    assert "<start_of_image>" in capture.prompt and capture.prompt.count("<image_soft_token>") == 0


def test_load_model_on_cpu_in_float32_eval(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="auto")  # no GPU here: the CPU
    assert loaded.device == torch.device("cpu")
    assert loaded.model.dtype == torch.float32
    assert not loaded.model.training
    assert loaded.model.config._attn_implementation == "sdpa"


def test_gpu_with_most_free_memory_is_chosen(monkeypatch, tmp_path):
    from cxr_attention.inference.gpu_claim import LOCK_DIR_VARIABLE
    from cxr_attention.inference.model import choose_device

    monkeypatch.setenv(LOCK_DIR_VARIABLE, str(tmp_path))  # the card claims' lock files
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    free_gib = [5, 40, 20]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free_gib))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free_gib[i] * 2**30, 80 * 2**30))
    assert choose_device("auto", min_free_gpu_gb=15) == torch.device("cuda:1")
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no GPU has 50 GiB free"):
        choose_device("auto", min_free_gpu_gb=50)


@pytest.mark.parametrize("image_first", [False, True])
def test_text_only_prompt_rows_keep_the_text_after_the_image(tiny_model_dir, image_first):
    from cxr_attention.inference.writing import capture_arrays

    loaded = load_model(tiny_model_dir, device="cpu")
    image = np.random.default_rng(2).integers(0, 256, (60, 60), dtype=np.uint8)
    question = "Is there an effusion?"
    options = {**EXPLAIN, "image_first": image_first}
    capture = answer_one(loaded, image, question, max_new_tokens=1, **options)
    full = capture_arrays(capture)
    text = capture_arrays(capture, prompt_image_rows="text")
    n_prompt = len(capture.input_ids)
    np.testing.assert_array_equal(full["prompt_image_positions"], np.arange(n_prompt))
    # The text after the image is kept (with the question first, only the turn's closing
    # tokens); the image tokens' own rows are dropped.
    image_rows = capture.image_token_positions
    expected = [p for p in range(image_rows[0], n_prompt) if p not in set(image_rows)]
    assert text["prompt_image_positions"].tolist() == expected
    after_image = "".join(capture.input_tokens[p] for p in expected)
    assert ("effusion" in after_image) == image_first
    np.testing.assert_array_equal(
        text["prompt_image_attention"], full["prompt_image_attention"][:, :, expected]
    )
    # Every row left out is an image row or one that attends to no image token at all.
    left_out = np.setdiff1d(np.arange(n_prompt), expected)
    before_image = left_out[left_out < image_rows[0]]
    assert np.all(full["prompt_image_attention"][:, :, before_image] == 0)
    with pytest.raises(ValueError, match="prompt_image_rows"):
        capture_arrays(capture, prompt_image_rows="some")


def test_question_longer_than_the_sliding_window_fails_alone(run_tables, tiny_model_dir, tmp_path):
    # The tiny model's captured layers 3 and 4 slide over 512 keys: this question alone does
    # not fit, and padded beside it neither do the others of its batch.
    long_question = "Is there a pleural effusion" + " or an effusion" * 200 + "?"
    questions = pd.read_csv(run_tables["questions_csv"], dtype=str, keep_default_na=False)
    extra = questions.iloc[[0]].assign(question_id="long.baseline.0", question=long_question)
    tables = {**run_tables, "questions_csv": tmp_path / "questions_long.csv"}
    pd.concat([questions.iloc[:1], extra, questions.iloc[1:]]).to_csv(
        tables["questions_csv"], index=False
    )
    table = _run(tables, tiny_model_dir, tmp_path / "long")
    assert len(table) == 2 * len(QUESTIONS)
    assert "long.baseline.0" not in set(table["question_id"])
    failures = pd.read_csv(tmp_path / "long" / "shard-0.failures.csv", dtype=str)
    too_long = failures[failures["error_type"] == "prompt_too_long"]
    assert sorted(too_long["dicom_id"]) == ["d1", "d2"]
    assert too_long["message"].str.contains("sliding window").all()
    # The other questions' answers are those of a run without the long one.
    reference = _run(run_tables, tiny_model_dir, tmp_path / "plain")
    pd.testing.assert_frame_equal(
        _strip(table).sort_values("sample_id", ignore_index=True),
        _strip(reference).sort_values("sample_id", ignore_index=True),
        atol=1e-5,
    )
