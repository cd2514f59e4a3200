# Configuration checks and input functions. No rules here: one .smk per stage holds those.
import os
from pathlib import Path

from snakemake.utils import validate

validate(config, "../config/config.schema.json")

RUN = config["run"]
SHARDS = [f"{k:03d}" for k in range(config["selection"]["shards"])]
MIMIC_TABLES = ["metadata", "split", config["data"]["labels"]]


def library(*modules):
    """The src/cxr_attention modules that a job imports, as inputs: editing one reruns the job.

    tests/workflow/test_rule_code_inputs.py checks these lists against each script's imports.
    """
    base = ("__init__.py", "io.py", "workflow.py")
    return list(
        dict.fromkeys(f"src/cxr_attention/{module}" for module in (*base, *modules))
    )


MIMIC = ("preprocess/__init__.py", "preprocess/mimic.py")
IMAGES = ("preprocess/__init__.py", "preprocess/decode.py", "preprocess/masks.py")
QUESTIONS = (*MIMIC, "inference/__init__.py", "inference/questions.py")
MODEL = ("inference/__init__.py", "inference/model.py", "inference/prompting.py")
CAPTURE = (
    *MODEL,
    *QUESTIONS,
    "inference/capture.py",
    "inference/scoring.py",
    "inference/answers.py",
    "captures.py",
    "inference/runner.py",
)
# The map-method registry (figures and the report read its names, labels and colours), with
# every module its methods import, lazily or not.
MAP_METHODS = (
    "captures.py",
    "geometry.py",
    "maps/__init__.py",
    "maps/grid.py",
    "maps/terms.py",
    "maps/attention.py",
    "maps/records.py",
    "maps/targets.py",
    # Every map method's file: adding a method needs no edit here.
    *sorted(
        f"maps/methods/{path.name}"
        for path in Path("src/cxr_attention/maps/methods").glob("*.py")
    ),
    "maps/hooks.py",
    "maps/gradcam.py",
    "maps/activation.py",
    "maps/params.py",
    "maps/registry.py",
)
MAPS = (
    *MODEL,
    *MAP_METHODS,
    "maps/cascade.py",
    "maps/shard.py",
)
PER_MAP = ("geometry.py", "metrics/__init__.py", "metrics/per_map.py")
STUDY = (*PER_MAP, "metrics/pairwise.py", "metrics/study.py")
PAPER = (*STUDY, "metrics/paper.py")
FIGURES = (
    *PER_MAP,
    *MAP_METHODS,
    "metrics/pairwise.py",
    "figures/__init__.py",
    "figures/_style.py",
    "figures/overlay.py",
    "figures/panels.py",
    "figures/sensitivity.py",
    "figures/summary.py",
    "figures/samples.py",
)
REPORT = (
    *PAPER,
    *MAP_METHODS,
    "maps/__init__.py",
    "maps/grid.py",
    "maps/attention.py",
    "captures.py",
    "reference_compat.py",
    "figures/__init__.py",
    "figures/_style.py",
    "report/__init__.py",
    "report/_html.py",
    "report/summary.py",
    "report/paper.py",
)

MANIFEST_CODE = library(*MIMIC)
PREPROCESS_CODE = library(*IMAGES, "preprocess/pipeline.py")
QUESTIONS_CODE = library(*QUESTIONS)
INFERENCE_CODE = library(*CAPTURE)
MAPS_CODE = library(*MAPS)
PER_MAP_METRICS_CODE = library(*PER_MAP)
STUDY_CODE = library(*STUDY)
PAPER_CODE = library(*PAPER)
FIGURES_CODE = library(*FIGURES)
REFERENCE_COMPAT_CODE = library(*MAPS, *PER_MAP, "reference_compat.py")
REPORT_CODE = library(*REPORT)


def mimic_table(name):
    """A MIMIC-CXR table as the download has it: .csv.gz, or .csv when unpacked."""
    root = Path(config["data"]["root"])
    gz = root / f"mimic-cxr-2.0.0-{name}.csv.gz"
    plain = root / f"mimic-cxr-2.0.0-{name}.csv"
    return str(plain if plain.exists() and not gz.exists() else gz)


def get_mimic_tables(wildcards):
    return {name: mimic_table(name) for name in MIMIC_TABLES}


def get_selection_table(wildcards):
    """The VQA table whose images the study asks about, when the selection follows it."""
    if config["selection"].get("from_vqa_table"):
        return config["questions"]["vqa_table"]
    return []


def get_question_source(wildcards):
    if config["questions"]["source"] == "vqa_table":
        return config["questions"]["vqa_table"]
    return config["questions"]["bank"]


def get_model_folder(wildcards):
    """The model folder when the workflow builds it or it is local; a hub id is no file input."""
    model_id = config["model"]["id"]
    if config["model"]["build_tiny"] or Path(model_id).is_dir():
        return model_id
    return []


def shard_outputs(pattern):
    return expand(pattern, run=RUN, shard=SHARDS)


def get_final_output():
    outputs = [
        f"results/{RUN}/metrics/summary.json",
        f"results/{RUN}/failures.csv",
        f"results/{RUN}/report.html",
    ]
    if config["paper"]["activate"]:
        outputs.append(f"results/{RUN}/paper_comparison.csv")
    return outputs


def get_reference_compat_tables(wildcards):
    """The reference's maps and metrics recomputed per shard, when the comparison asks for them."""
    if config["paper"]["reference_compat"]:
        return shard_outputs("results/{run}/reference_compat/shard-{shard}.csv")
    return []


def get_reference_compat_failures(wildcards):
    if config["paper"]["reference_compat"]:
        return shard_outputs(
            "results/{run}/reference_compat/shard-{shard}.failures.csv"
        )
    return []


def get_report_inputs(wildcards):
    """Every file the HTML report shows (the report rule runs `snakemake --report` over them)."""
    inputs = shard_outputs("results/{run}/figures/samples/shard-{shard}") + [
        f"results/{RUN}/figures/summary",
        f"results/{RUN}/report/summary.html",
        f"results/{RUN}/metrics/maps.csv",
        f"results/{RUN}/failures.csv",
    ]
    if config["paper"]["activate"]:
        inputs.append(f"results/{RUN}/report/paper_comparison.html")
    return inputs
