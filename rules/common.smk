# Configuration checks and input functions. No rules here: one .smk per stage holds those.
import dataclasses
import os
import sys
from pathlib import Path

from snakemake.utils import validate

from cxr_attention.codegraph import library_closure
from cxr_attention.figures.report_samples import report_sample_quota
from cxr_attention.io import ConfigError
from cxr_attention.maps.params import WORKFLOW_KEYS
from cxr_attention.model_source import check_model_source
from cxr_attention.preprocess.selection import calibration_images
from cxr_attention.settings import MACHINE_KNOBS, study_settings, without_machine_knobs

validate(config, "../config/config.schema.json")
SETTINGS = study_settings(config)

# The model folder that this workflow writes itself (known_answer_model.smk), an output to wait
# for and not a source to check at the start.
KNOWN_ANSWER_MODEL = "resources/known-answer-model"
# The planted known-answer data (known_answer.smk), as a MIMIC-CXR-JPG download plus its boxes.
KNOWN_ANSWER_DATA = "resources/known-answer-data"
MODEL_IS_BUILT = (
    config["model"]["build_tiny"] or config["model"]["id"] == KNOWN_ANSWER_MODEL
)

# A model that cannot be found stops the run before any job, in one line. Only the main process
# checks: a cluster job parses this file again on a node that may have no hub access.
if workflow.is_main_process and not MODEL_IS_BUILT:
    try:
        check_model_source(config["model"]["id"])
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)

# head_selected's heads chosen on the calibration split (rules/heads.smk): when a study's maps or
# faithfulness use the method and maps.localization_heads does not set them by hand.
HEAD_CALIBRATION = config["maps"]["localization_heads"] is None and (
    "head_selected" in config["maps"]["methods"] + config["maps"]["cascade"]
    or (
        config["faithfulness"]["activate"]
        and "head_selected" in config["faithfulness"]["methods"]
    )
)
# A calibration split without images stops the run before any job, naming the key. Tables the
# workflow writes itself (the known-answer data) are checked by the calibration job instead.
if (
    workflow.is_main_process
    and HEAD_CALIBRATION
    and not config["data"]["root"].startswith(KNOWN_ANSWER_DATA)
):
    try:
        calibration_images(
            config["data"],
            config["selection"],
            config["maps"]["head_calibration"],
            config["seed"],
        )
    except ConfigError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        sys.exit(2)

RUN = config["run"]
SHARDS = [f"{k:03d}" for k in range(config["selection"]["shards"])]
MIMIC_TABLES = ["metadata", "split", config["data"]["labels"]]
# Per-sample figure kinds: one folder, one report entry each (rules/figures.smk).
SAMPLE_FIGURE_KINDS = ("overlay", "panels", "sensitivity", "layers")
# The method label of a figure showing the map the study chose (the cascade's pick, or the one
# method asked for).
MAP_METHOD_LABEL = config["maps"].get("method", "cascade")


def code(script):
    """The library modules that a rule's script imports, as inputs: editing one reruns the job.

    Read from the script's import graph (cxr_attention.codegraph), never listed by hand.
    """
    return library_closure(f"scripts/{script}.py", src="src")


def section(name, *keys):
    """Params for a script: the given keys of a config section (all when none).

    Only what a job uses: a changed params value reruns the job. Machine knobs never appear here
    (settings.MACHINE_KNOBS): they are resources, see `machine`.
    """
    values = dataclasses.asdict(SETTINGS[name])
    return {key: values[key] for key in keys} if keys else values


def machine(section_name, key):
    """A machine knob as a resource: it tunes the job to the machine and reruns nothing."""
    assert key in MACHINE_KNOBS[section_name], key
    return str(config[section_name][key])


def maps_settings():
    """The maps section as the maps code takes it (maps.params.MapParams): without the machine
    knobs (resources) and the keys the workflow alone reads (maps.params.WORKFLOW_KEYS).
    """
    skipped = set(MACHINE_KNOBS["maps"]) | set(WORKFLOW_KEYS)
    return {key: value for key, value in config["maps"].items() if key not in skipped}


def get_localization_heads(wildcards):
    """The heads chosen on the calibration split, when head_selected needs them."""
    if HEAD_CALIBRATION:
        return f"results/{RUN}/heads/localization_heads.json"
    return []


def get_head_calibration_failures(wildcards):
    """The calibration images' preprocessing and inference failures, when heads are chosen."""
    if HEAD_CALIBRATION:
        return [
            f"results/{RUN}/heads/{stage}/shard-000.failures.csv"
            for stage in ("preprocess", "inference")
        ]
    return []


def mimic_table(name):
    """A MIMIC-CXR table as the download has it: .csv.gz, or .csv when unpacked."""
    root = Path(config["data"]["root"])
    gz = root / f"mimic-cxr-2.0.0-{name}.csv.gz"
    plain = root / f"mimic-cxr-2.0.0-{name}.csv"
    return str(plain if plain.exists() and not gz.exists() else gz)


def get_mimic_tables(wildcards):
    if config["data"]["layout"] == "table":
        return {"table": config["data"]["table"]}
    return {name: mimic_table(name) for name in MIMIC_TABLES}


def get_selection_table(wildcards):
    """The VQA table whose images the study asks about, when the selection follows it."""
    if config["selection"].get("from_vqa_table"):
        return config["questions"]["vqa_table"]
    return []


def get_question_source(wildcards):
    source = config["questions"]["source"]
    files = [config["questions"]["bank"]] if source != "vqa_table" else []
    return files + ([config["questions"]["vqa_table"]] if "vqa_table" in source else [])


def get_model_folder(wildcards):
    """The model folder when the workflow builds it or it is local; a hub id is no file input."""
    model_id = config["model"]["id"]
    if MODEL_IS_BUILT or Path(model_id).is_dir():
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
    if config["grounding"]["activate"]:
        outputs.append(f"results/{RUN}/grounding/summary.csv")
    outputs += get_faithfulness_pages(None)
    return outputs


def get_faithfulness_pages(wildcards):
    """The faithfulness and reliance pages, when their sections are active."""
    pages = []
    if config["faithfulness"]["activate"]:
        pages.append(f"results/{RUN}/report/tables/faithfulness.html")
    if config["reliance"]["activate"]:
        pages.append(f"results/{RUN}/report/tables/reliance.html")
    return pages


def get_reference_compat_tables(wildcards):
    """The reference's maps and metrics recomputed per shard, when the comparison asks for them."""
    if config["paper"]["reference_compat"]:
        return shard_outputs("results/{run}/reference_compat/shard-{shard}.csv")
    return []


def get_reference_compat_failures(wildcards):
    if config["paper"]["activate"] and config["paper"]["reference_compat"]:
        return shard_outputs(
            "results/{run}/reference_compat/shard-{shard}.failures.csv"
        )
    return []


def optional_failures(section, pattern):
    """The failure tables of a stage that runs only when `<section>.activate` is on."""

    def get_failures(wildcards):
        if not config[section]["activate"]:
            return []
        return sorted(set(shard_outputs(pattern)))

    return get_failures


def get_report_inputs(wildcards):
    """Every file the HTML report shows (the report rule runs `snakemake --report` over them)."""
    inputs = [
        path
        for kind in SAMPLE_FIGURE_KINDS
        for path in shard_outputs(
            f"results/{{run}}/figures/samples/shard-{{shard}}/{kind}"
        )
    ] + [
        f"results/{RUN}/figures/summary",
        f"results/{RUN}/report/summary.html",
        f"results/{RUN}/metrics/maps.csv",
        f"results/{RUN}/failures.csv",
        f"results/{RUN}/report/tables/maps.html",
        f"results/{RUN}/report/tables/failures.html",
    ]
    if config["paper"]["activate"]:
        inputs.append(f"results/{RUN}/report/paper_comparison.html")
    if config["grounding"]["activate"]:
        inputs.append(f"results/{RUN}/report/grounding.html")
    if config["known_answer"]["activate"]:
        inputs.append(f"results/{RUN}/figures/known_answer")
    if HEAD_CALIBRATION:
        inputs.append(f"results/{RUN}/report/heads.html")
    return inputs + get_faithfulness_pages(wildcards)


def get_known_answer_section(wildcards):
    """The known-answer table and method ranking for the summary page, when lesions were
    planted."""
    if config["known_answer"]["activate"]:
        return [
            f"results/{RUN}/known_answer/section.html",
            f"results/{RUN}/known_answer/method_ranking.html",
        ]
    return []


# The annotation datasets the grounding stage reads (config keys of section grounding).
GROUNDING_DATASETS = ("ms_cxr", "chexlocalize", "vindr_cxr", "nih")


def get_phrase_questions(wildcards):
    """MS-CXR's file when its phrases are asked (grounding.ms_cxr_phrases), else nothing."""
    grounding = config["grounding"]
    if grounding["activate"] and grounding["ms_cxr"] and grounding["ms_cxr_phrases"]:
        return {"phrases": grounding["ms_cxr"]}
    return {}


def get_phrase_question(wildcards):
    """The phrase question's template when phrases are asked (else no params change reruns)."""
    if get_phrase_questions(wildcards):
        return config["grounding"]["phrase_question"]
    return ""


def get_grounding_annotations(wildcards):
    """The annotation files the config names (dataset -> path)."""
    return {
        name: config["grounding"][name]
        for name in GROUNDING_DATASETS
        if config["grounding"][name]
    }
