"""The MIMIC-CXR test split on one GPU: every stage's rate measured in one run, and the split's
wall time projected from them (issue 21).

One process and one model (random weights), the demo's real radiographs, the schema's defaults
unless named below:

- **answers**: the inference job itself (`run_inference_shard`, the bench's model handed in
  through its ``load``) on ``--images`` images x 42 questions (each finding's baseline, plain
  and first paraphrase, config/questions.yaml), ``--images-per-batch`` images per batch,
  finished rows leaving the batch, every capture written as the job writes it. Two answer
  lengths, as the study asks: ``one_word``, the paper's wrapper (config/paper.yaml's
  ``prompt_template``) with every answer one word and the end token; ``sentences``, the
  schema's template with every answer ``inference.max_new_tokens`` (100) tokens long, the bound
  of sentence answers. A random model never ends an answer by itself, so the lengths are planted
  (`bench_compaction.planted_answer_lengths`); every step still runs the whole model. Each order
  of ``--orders`` (image or question first in the user turn) is measured. Also the bytes the job
  writes per answer (capture and answers row).
- **maps**: every registered method on one answered sample, its answer and ``--terms`` terms
  (`bench_methods.time_methods`): seconds per map and peak GPU memory.
- **faithfulness**: the schema's default curves (``faithfulness``: perturbations, steps, random
  orders) of one map (`faithfulness.deletion.sample_curves`): seconds per map (three curves per
  perturbation; the same for every method, since each ranks the same 256 cells) and per sample
  (its random orders).

The projections are arithmetic on those rates, printed with their inputs:

- answers for the test split, 5,159 images x 42 questions (and x the bank's questions per image),
  at each length and order: goal under 30 minutes on one H100;
- maps by every method for 1,000 answer maps: goal under 2 hours;
- faithfulness of every method, both curves, on 500 maps (500 samples, each method's answer map
  and the sample's random orders; the maps made too): goal under 1 hour;
- the test split's wall time with the default config: the slowest answers measured, every
  sample's answer map and ``--terms`` term maps by ``maps.methods``, and the faithfulness stage
  (its samples per shard, shards of 500 images).

Phases print as they finish, so a run cut short keeps what it measured; ``--json`` writes every
number for RESULTS.md.

Run: ``.venv/bin/python bench/bench_test_split.py --model tiny --images 2 --images-per-batch 1``;
on a GPU: ``python bench/bench_test_split.py --model medgemma-4b --device cuda`` (or
``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _models import (
    MODEL_KINDS,
    REPO_ROOT,
    bench_image,
    bench_images,
    describe_machine,
    load_bench_model,
    peak_memory_gib,
    reset_peak_memory,
    timed,
)
from bench_compaction import planted_answer_lengths
from bench_methods import (
    METHOD_HEADER,
    QUESTION,
    TERMS,
    answered_capture,
    method_line,
    time_methods,
)

#: MIMIC-CXR-JPG 2.x's official test split: frontal and lateral films.
TEST_SPLIT_IMAGES = 5_159
#: Questions per image of the issue's plan: each finding's baseline, plain and first paraphrase.
QUESTIONS_PER_IMAGE = 42
GOALS = {"answers_minutes": 30.0, "maps_1000_hours": 2.0, "faithfulness_500_hours": 1.0}
ORDERS = {"image-first": True, "question-first": False}
#: Images per shard of the dry rehearsal (bench_planning.py's default), for the faithfulness stage.
IMAGES_PER_SHARD = 500
#: An answer of one word, then the end token.
ONE_WORD_TOKENS = 2


def study_questions(per_finding_variants: int = 1) -> tuple[pd.DataFrame, int]:
    """The 42 questions of the plan, and how many the bank's default strategies ask per image."""
    from cxr_attention.questions.bank import build_question_table, load_question_bank
    from cxr_attention.settings import schema_defaults

    defaults = schema_defaults()["questions"]
    bank = load_question_bank(REPO_ROOT / defaults["bank"])
    table = build_question_table(bank, findings=None, strategies=defaults["strategies"])
    chosen = table[table["variant_index"] <= per_finding_variants].reset_index(drop=True)
    return chosen, len(table)


def paper_prompt_template() -> str:
    """The reference study's one-word wrapper, read where the project keeps it."""
    paper = yaml.safe_load((REPO_ROOT / "config" / "paper.yaml").read_text())
    return paper["inference"]["prompt_template"]


def write_run_tables(folder: Path, images: list, questions: pd.DataFrame) -> dict:
    """Manifest, questions and preprocess tables of one shard, every label set (no sample left
    out for an unknown label), the images as the preprocessing stage writes them (grey PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    findings = sorted(set(questions["finding"]))
    manifest, preprocess = [], []
    for index, image in enumerate(images):
        dicom_id = f"bench{index:04d}"
        path = folder / f"{dicom_id}.png"
        image.save(path)
        labels = {finding: float((index + k) % 2) for k, finding in enumerate(findings)}
        manifest.append(
            {
                "dicom_id": dicom_id,
                "subject_id": str(10_000_000 + index),
                "study_id": str(50_000_000 + index),
                "split": "test",
                "view_position": "PA",
                "image_path": f"files/{dicom_id}.jpg",
                "shard": 0,
                **labels,
            }
        )
        preprocess.append({"dicom_id": dicom_id, "image": str(path)})
    tables = {
        "manifest_csv": folder / "manifest.csv",
        "questions_csv": folder / "questions.csv",
        "preprocess_csv": folder / "preprocess.csv",
    }
    pd.DataFrame(manifest).to_csv(tables["manifest_csv"], index=False)
    questions.to_csv(tables["questions_csv"], index=False)
    pd.DataFrame(preprocess).to_csv(tables["preprocess_csv"], index=False)
    return tables


def inference_params(**overrides) -> dict:
    """``run_inference_shard``'s params as the workflow passes them, from the schema's defaults."""
    from cxr_attention.inference.runner import PARAMS
    from cxr_attention.settings import schema_defaults

    defaults = schema_defaults()
    params = {
        **defaults["inference"],
        "seed": defaults["seed"],
        "min_free_gpu_gb": defaults["model"]["min_free_gpu_gb"],
        "uncertain": defaults["questions"]["uncertain"],
        "blank": defaults["questions"]["blank"],
        **overrides,
    }
    return {key: params[key] for key in PARAMS}


def answer_rate(loaded, tables: dict, workdir: Path, params: dict, *, answer_tokens: int) -> dict:
    """One run of the inference job with every answer planted at ``answer_tokens`` tokens:
    seconds, answers, answers per second, bytes written per answer, peak GPU memory."""
    from cxr_attention.inference.runner import run_inference_shard

    out = workdir / "shard-0"
    shutil.rmtree(out, ignore_errors=True)
    answers_csv = workdir / "shard-0.csv"
    eos = loaded.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos

    def run():
        run_inference_shard(
            **tables,
            shard=0,
            model_id="bench",
            out_csv=answers_csv,
            out_dir=out,
            failures_csv=workdir / "shard-0.failures.csv",
            params=params,
            device=str(loaded.device),
            progress=False,
            load=lambda *_, **__: loaded,
        )

    reset_peak_memory()
    with planted_answer_lengths(loaded.model, lambda _: answer_tokens, answer_tokens, eos):
        seconds, _ = timed(run)
    answers = pd.read_csv(answers_csv)
    lengths = set(answers["n_generated_tokens"].astype(int))
    if lengths != {answer_tokens}:
        raise SystemExit(f"answer lengths {sorted(lengths)} differ from the plan ({answer_tokens})")
    written = sum(p.stat().st_size for p in out.glob("*.npz")) + answers_csv.stat().st_size
    return {
        "seconds": seconds,
        "answers": len(answers),
        "answers_per_second": len(answers) / seconds,
        "bytes_per_answer": written / len(answers),
        "peak_gib": peak_memory_gib(),
    }


def faithfulness_seconds(loaded, *, seed: int) -> dict:
    """Seconds of the default curves per map, and of one sample's random orders."""
    from cxr_attention.faithfulness.deletion import sample_curves
    from cxr_attention.faithfulness.scoring import DecisionScorer
    from cxr_attention.faithfulness.settings import faithfulness_settings
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.settings import schema_defaults

    settings = faithfulness_settings(schema_defaults()["faithfulness"])
    curves = settings.curve_settings(seed)
    inputs = build_inputs(loaded.processor, np.asarray(bench_image()), QUESTION, image_first=False)
    scorer = DecisionScorer(
        loaded.model, loaded.tokenizer, inputs, batch_size=int(settings.batch_size)
    )
    grid = np.random.default_rng(seed).random((16, 16))

    def run(settings=curves):
        return sample_curves(scorer, [("bench", "random", grid)], settings)

    # Warm-up of every perturbation's code path on the first and last steps only.
    run(dataclasses.replace(curves, steps=(curves.steps[0], curves.steps[-1])))
    reset_peak_memory()
    seconds, _ = timed(run)
    per_order = seconds / (1 + curves.n_random)
    return {
        "perturbations": list(curves.perturbations),
        "steps": len(curves.steps),
        "n_random": curves.n_random,
        "seconds_per_map": per_order,
        "random_seconds_per_sample": per_order * curves.n_random,
        "peak_gib": peak_memory_gib(),
    }


def projections(results: dict, *, terms: int) -> dict:
    """The goals' quantities and the test split's wall time, from the measured rates.

    The split's wall time adds the slowest answers measured, every sample's maps by the default
    ``maps.methods`` (the answer and ``terms`` term maps), and the default faithfulness stage
    (``faithfulness.max_samples`` per shard, shards of `IMAGES_PER_SHARD` images as in the dry
    rehearsal, ``faithfulness.methods``' maps and curves and the random orders).
    """
    from cxr_attention.settings import schema_defaults

    defaults = schema_defaults()
    per_map = {row["method"]: row["seconds_per_map"] for row in results.get("maps", [])}
    faithfulness = results.get("faithfulness")
    out: dict = {"answers_minutes": {}, "split_hours": {}}
    split_answers = TEST_SPLIT_IMAGES * QUESTIONS_PER_IMAGE
    for key, run in results.get("answers", {}).items():
        out["answers_minutes"][key] = split_answers / run["answers_per_second"] / 60
    if out["answers_minutes"]:
        out["split_hours"]["answers (slowest measured)"] = max(out["answers_minutes"].values()) / 60
    if per_map:
        out["maps_1000_hours"] = 1000 * sum(per_map.values()) / 3600
        chosen = [m for m in defaults["maps"]["methods"] if m in per_map]
        per_sample = (1 + terms) * sum(per_map[m] for m in chosen)
        out["split_hours"]["maps (default maps.methods)"] = split_answers * per_sample / 3600
    if faithfulness and per_map:

        def sample_seconds(methods) -> float:
            curves = len(methods) * faithfulness["seconds_per_map"]
            return (
                faithfulness["random_seconds_per_sample"] + curves + sum(map(per_map.get, methods))
            )

        out["faithfulness_500_hours"] = 500 * sample_seconds(list(per_map)) / 3600
        chosen = [m for m in defaults["faithfulness"]["methods"] if m in per_map]
        shards = math.ceil(TEST_SPLIT_IMAGES / IMAGES_PER_SHARD)
        samples = shards * defaults["faithfulness"]["max_samples"]
        out["split_hours"]["faithfulness (default)"] = samples * sample_seconds(chosen) / 3600
    return out


def print_projections(projected: dict, results: dict, *, bank_questions: int) -> None:
    split_answers = TEST_SPLIT_IMAGES * QUESTIONS_PER_IMAGE
    print(f"\n## Projections (test split: {TEST_SPLIT_IMAGES:,} images)")
    for key, minutes in projected["answers_minutes"].items():
        bank = minutes * bank_questions / QUESTIONS_PER_IMAGE
        print(
            f"- answers, {key}: {minutes:.1f} min for {split_answers:,} answers "
            f"(goal < {GOALS['answers_minutes']:.0f} min); {bank:.1f} min at the bank's "
            f"{bank_questions} questions per image"
        )
        run = results["answers"][key]
        gb = run["bytes_per_answer"] * split_answers / 1e9
        print(f"  written: {run['bytes_per_answer'] / 1e3:.0f} kB per answer, {gb:.1f} GB")
    methods = f"the {len(results.get('maps', []))} methods measured"
    units = {
        "maps_1000_hours": f"maps by {methods}, 1,000 answer maps",
        "faithfulness_500_hours": f"faithfulness of {methods}, 500 samples",
    }
    for key, unit in units.items():
        if key in projected:
            print(f"- {unit}: {projected[key]:.2f} h (goal < {GOALS[key]:.0f} h)")
    stages = projected["split_hours"]
    if stages:
        parts = ", ".join(f"{stage} {hours:.2f} h" for stage, hours in stages.items())
        print(f"- the test split: {sum(stages.values()):.2f} h ({parts})")


def main(argv: list[str]) -> int:
    from cxr_attention.inference.model import LoadedModel
    from cxr_attention.maps.registry import METHODS
    from cxr_attention.settings import schema_defaults

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=16, help="images answered per run")
    parser.add_argument("--images-per-batch", type=int, default=8)
    parser.add_argument("--orders", nargs="+", choices=list(ORDERS), default=list(ORDERS))
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--terms", type=int, default=1, help="term maps per sample")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--skip", nargs="*", default=[], choices=["answers", "maps", "faith"])
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)

    seed = int(schema_defaults()["seed"])
    model, processor, description = load_bench_model(args.model, args.device)
    loaded = LoadedModel(model=model, processor=processor, device=model.device)
    questions, bank_questions = study_questions()
    if len(questions) != QUESTIONS_PER_IMAGE:
        plan = f"the plan asks {QUESTIONS_PER_IMAGE} questions per image"
        raise SystemExit(f"{plan}, the bank's first variants are {len(questions)}")
    print(*describe_machine(model), f"model: {description}", sep="\n", flush=True)
    results: dict = {"machine": describe_machine(model), "model": description, "answers": {}}

    def record():
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    if "answers" not in args.skip:
        demo = bench_images(min(args.images, 14))
        images = [demo[i % len(demo)] for i in range(args.images)]
        workdir = Path(tempfile.mkdtemp(prefix="bench-test-split-"))
        tables = write_run_tables(workdir / "tables", images, questions)
        warm = write_run_tables(workdir / "warm", images[:1], questions.head(2))
        rows = args.images_per_batch * QUESTIONS_PER_IMAGE
        max_new_tokens = int(schema_defaults()["inference"]["max_new_tokens"])
        plans = {
            "one_word": (paper_prompt_template(), ONE_WORD_TOKENS),
            "sentences": (schema_defaults()["inference"]["prompt_template"], max_new_tokens),
        }
        print(
            f"\n## Answers: the inference job, {args.images} images x {QUESTIONS_PER_IMAGE} "
            f"questions, {args.images_per_batch} images per batch ({rows} rows), best of "
            f"{args.repeats}\n"
            "| order | answers | tokens per answer | seconds | answers/s | kB written per answer "
            "| peak GPU memory (GiB) |\n|---|---|---|---|---|---|---|",
            flush=True,
        )
        for order in args.orders:
            for plan, (template, tokens) in plans.items():
                params = inference_params(
                    batch_size=rows,
                    images_per_batch=args.images_per_batch,
                    image_first=ORDERS[order],
                    prompt_template=template,
                )
                answer_rate(loaded, warm, workdir / "warm", params, answer_tokens=tokens)
                runs = [
                    answer_rate(loaded, tables, workdir, params, answer_tokens=tokens)
                    for _ in range(args.repeats)
                ]
                best = min(runs, key=lambda run: run["seconds"])
                results["answers"][f"{plan}, {order}"] = best
                print(
                    f"| {order} | {best['answers']} | {tokens} ({plan}) | {best['seconds']:.2f} | "
                    f"{best['answers_per_second']:.1f} | {best['bytes_per_answer'] / 1e3:.1f} | "
                    f"{best['peak_gib']:.1f} |",
                    flush=True,
                )
                record()
        shutil.rmtree(workdir, ignore_errors=True)

    if "faith" not in args.skip:
        faithfulness = faithfulness_seconds(loaded, seed=seed)
        results["faithfulness"] = faithfulness
        print(
            f"\n## Faithfulness: {faithfulness['perturbations']}, {faithfulness['steps']} steps, "
            f"{faithfulness['n_random']} random orders per sample\n"
            f"{faithfulness['seconds_per_map']:.3f} s per map (every perturbation, 3 curves), "
            f"{faithfulness['random_seconds_per_sample']:.3f} s per sample for its random orders, "
            f"peak GPU memory {faithfulness['peak_gib']:.1f} GiB",
            flush=True,
        )
        record()

    if "maps" not in args.skip:
        terms = TERMS[: args.terms]
        print(f"\n## Maps: the answer and {terms}, per method\n{METHOD_HEADER}", flush=True)
        results["maps"] = []

        def report(row):
            results["maps"].append(row)
            print(method_line(row), flush=True)
            record()

        time_methods(
            loaded,
            answered_capture(loaded),
            terms=terms,
            methods=args.methods or list(METHODS),
            repeats=args.repeats,
            report=report,
        )

    results["projections"] = projections(results, terms=args.terms)
    record()
    print_projections(results["projections"], results, bank_questions=bank_questions)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
