# cxr-attention: where does MedGemma look when it answers a question about a chest X-ray?
# Stages: preprocess -> inference -> maps -> metrics -> figures -> report (one rules/*.smk each).
from snakemake.utils import min_version

min_version("9.0")


# The demo, unless config files are given: a study's --configfile is the whole config (plus the
# schema's defaults), never merged over the demo's values. `--config key=value` alone tunes the demo.
if not workflow.overwrite_configfiles:

    configfile: "config/demo.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    run=RUN,
    shard=r"\d{3}",


include: "rules/preprocess.smk"
include: "rules/inference.smk"
include: "rules/maps.smk"
include: "rules/metrics.smk"
include: "rules/figures.smk"
include: "rules/report.smk"
include: "rules/known_answer_model.smk"


if HEAD_CALIBRATION:

    include: "rules/heads.smk"


if config["paper"]["activate"]:

    include: "rules/paper.smk"


if config["grounding"]["activate"]:

    include: "rules/grounding.smk"


if config["faithfulness"]["activate"]:

    include: "rules/faithfulness.smk"


if config["reliance"]["activate"]:

    include: "rules/reliance.smk"


if config["known_answer"]["activate"]:

    include: "rules/known_answer.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
