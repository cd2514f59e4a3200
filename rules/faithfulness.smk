# Faithfulness (faithfulness.activate): deletion / insertion curves against random orders and
# cascading randomisation on a subsample of each shard, then the study tables.


rule faithfulness:
    input:
        answers="results/{run}/inference/shard-{shard}.csv",
        captures="results/{run}/inference/shard-{shard}",
        images="results/{run}/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        heads=get_localization_heads,
        code=code("faithfulness"),
    output:
        areas="results/{run}/faithfulness/shard-{shard}.csv",
        points="results/{run}/faithfulness/shard-{shard}.points.csv",
        randomisation="results/{run}/faithfulness/shard-{shard}.randomisation.csv",
        failures="results/{run}/faithfulness/shard-{shard}.failures.csv",
    log:
        "logs/{run}/faithfulness/{shard}.log",
    benchmark:
        "benchmarks/{run}/faithfulness/{shard}.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        gpu=1,
        min_free_gpu_gb=machine("model", "min_free_gpu_gb"),
    params:
        model_id=config["model"]["id"],
        settings=config["faithfulness"],
        maps=maps_settings(),
        inference=section("inference", "layers", "max_new_tokens", "image_first"),
        seed=config["seed"],
    script:
        "../scripts/faithfulness.py"


rule faithfulness_summary:
    input:
        areas=shard_outputs("results/{run}/faithfulness/shard-{shard}.csv"),
        randomisation=shard_outputs(
            "results/{run}/faithfulness/shard-{shard}.randomisation.csv"
        ),
        maps=shard_outputs("results/{run}/maps/shard-{shard}.csv"),
        arrays=shard_outputs("results/{run}/maps/shard-{shard}.npz"),
        questions="results/{run}/questions.csv",
        manifest="results/{run}/manifest.csv",
        code=code("faithfulness_summary"),
    output:
        summary="results/{run}/metrics/faithfulness.csv",
        randomisation="results/{run}/metrics/randomisation.csv",
        question_swap="results/{run}/metrics/question_swap.csv",
        page=report(
            "results/{run}/report/tables/faithfulness.html",
            caption="../report/faithfulness.rst",
            category="Tables",
            labels={"table": "faithfulness"},
        ),
    log:
        "logs/{run}/faithfulness_summary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        bootstrap={
            "n_boot": config["metrics"]["bootstrap_samples"],
            "confidence": config["metrics"]["confidence"],
            "seed": config["seed"],
        },
    script:
        "../scripts/faithfulness_summary.py"
