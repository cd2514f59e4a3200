# Grounding (grounding.activate): every map of an annotated image against the radiologists'
# annotation of its finding, with baselines and patient-level intervals (docs/grounding.md).


rule grounding:
    input:
        unpack(get_grounding_annotations),
        maps="results/{run}/metrics/maps.csv",
        questions="results/{run}/questions.csv",
        arrays=shard_outputs("results/{run}/maps/shard-{shard}.npz"),
        preprocess=shard_outputs("results/{run}/preprocess/shard-{shard}.csv"),
        code=code("grounding"),
    output:
        scores="results/{run}/grounding/scores.csv",
        summary="results/{run}/grounding/summary.csv",
        failures="results/{run}/grounding/failures.csv",
        annotations="results/{run}/grounding/annotations.csv",
    log:
        "logs/{run}/grounding.log",
    conda:
        "../envs/analysis.yaml"
    params:
        datasets=GROUNDING_DATASETS,
        settings={
            key: value
            for key, value in config["grounding"].items()
            if key not in GROUNDING_DATASETS
        },
        metrics=section("metrics"),
        seed=config["seed"],
    script:
        "../scripts/grounding.py"


rule grounding_page:
    input:
        summary="results/{run}/grounding/summary.csv",
        code=code("grounding_page"),
    output:
        report(
            "results/{run}/report/grounding.html",
            caption="../report/grounding.rst",
            category="Grounding",
            labels={"page": "grounding"},
        ),
    log:
        "logs/{run}/grounding_page.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/grounding_page.py"
