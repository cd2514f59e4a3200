# The known-answer benchmark (docs/known_answer.md): lesions planted into known_answer.source's
# frontal films, written as a MIMIC-CXR-JPG download that data.root can point at; the report's
# known-answer table from the metrics.
rule known_answer_data:
    input:
        tables=expand(
            "{source}/mimic-cxr-2.0.0-{table}.csv.gz",
            source=config["known_answer"]["source"],
            table=["metadata", "split", "chexpert", "negbio"],
        ),
        code=code("known_answer_data"),
    output:
        tables=expand(
            f"{KNOWN_ANSWER_DATA}/mimic-cxr-jpg/mimic-cxr-2.0.0-{{table}}.csv.gz",
            table=["metadata", "split", "chexpert", "negbio"],
        ),
        files=directory(f"{KNOWN_ANSWER_DATA}/mimic-cxr-jpg/files"),
        boxes=f"{KNOWN_ANSWER_DATA}/boxes.csv",
        questions=f"{KNOWN_ANSWER_DATA}/nodule_questions.csv",
        plantings=f"{KNOWN_ANSWER_DATA}/plantings.csv",
        failures=f"{KNOWN_ANSWER_DATA}/failures.csv",
    log:
        "logs/known_answer_data.log",
    conda:
        "../envs/imaging.yaml"
    params:
        seed=config["known_answer"]["seed"],
    script:
        "../scripts/known_answer_data.py"


rule known_answer_report:
    input:
        answers="results/{run}/metrics/answers.csv",
        maps="results/{run}/metrics/maps.csv",
        arrays=shard_outputs("results/{run}/maps/shard-{shard}.npz"),
        preprocess=shard_outputs("results/{run}/preprocess/shard-{shard}.csv"),
        boxes=f"{KNOWN_ANSWER_DATA}/boxes.csv",
        plantings=f"{KNOWN_ANSWER_DATA}/plantings.csv",
        code=code("known_answer_report"),
    output:
        answers="results/{run}/known_answer/answers.csv",
        maps="results/{run}/known_answer/maps.csv",
        summary="results/{run}/known_answer/summary.csv",
        section="results/{run}/known_answer/section.html",
        figures=report(
            directory("results/{run}/figures/known_answer"),
            patterns=["{name}.png"],
            caption="../report/known_answer.rst",
            category="Known answer",
            labels={"figure": "{name}"},
        ),
    log:
        "logs/{run}/known_answer_report.log",
    conda:
        "../envs/analysis.yaml"
    params:
        statistics=section("metrics"),
        seed=config["seed"],
    script:
        "../scripts/known_answer_report.py"


# Every registered map method ranked on the planted held-out films: pointing game, deletion
# against random orders, |Spearman| after cascading randomisation (docs/known_answer.md).
rule known_answer_ranking:
    input:
        files=f"{KNOWN_ANSWER_DATA}/mimic-cxr-jpg/files",
        boxes=f"{KNOWN_ANSWER_DATA}/boxes.csv",
        plantings=f"{KNOWN_ANSWER_DATA}/plantings.csv",
        model=get_model_folder,
        code=code("known_answer_ranking"),
    output:
        ranking="results/{run}/known_answer/method_ranking.csv",
        samples="results/{run}/known_answer/method_ranking_samples.csv",
        section="results/{run}/known_answer/method_ranking.html",
    log:
        "logs/{run}/known_answer_ranking.log",
    benchmark:
        "benchmarks/{run}/known_answer_ranking.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        gpu=1,
        min_free_gpu_gb=machine("model", "min_free_gpu_gb"),
    params:
        model_id=config["model"]["id"],
        settings=config["known_answer"]["ranking"],
        maps=maps_settings(),
        inference=section("inference", "layers", "max_new_tokens", "image_first"),
        max_side=config["preprocess"]["max_side"],
        statistics=section("metrics"),
        seed=config["seed"],
    script:
        "../scripts/known_answer_ranking.py"
