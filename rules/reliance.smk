# Image reliance (reliance.activate, on by default): every sampled question asked again with a
# mid-grey image, another patient's image, the lungs occluded and no image; then the tables.


rule reliance:
    input:
        answers="results/{run}/inference/shard-{shard}.csv",
        manifest="results/{run}/manifest.csv",
        images=shard_outputs("results/{run}/preprocess/shard-{shard}.csv"),
        model=get_model_folder,
        code=code("reliance"),
    output:
        table="results/{run}/reliance/shard-{shard}.csv",
        failures="results/{run}/reliance/shard-{shard}.failures.csv",
    log:
        "logs/{run}/reliance/{shard}.log",
    benchmark:
        "benchmarks/{run}/reliance/{shard}.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        gpu=1,
        min_free_gpu_gb=machine("model", "min_free_gpu_gb"),
    params:
        model_id=config["model"]["id"],
        settings=config["reliance"],
        image_first=config["inference"]["image_first"],
        seed=config["seed"],
    script:
        "../scripts/reliance.py"


rule reliance_summary:
    input:
        tables=shard_outputs("results/{run}/reliance/shard-{shard}.csv"),
        code=code("reliance_summary"),
    output:
        summary="results/{run}/metrics/reliance.csv",
        four_way="results/{run}/metrics/reliance_four_way.csv",
        page=report(
            "results/{run}/report/tables/reliance.html",
            caption="../report/reliance.rst",
            category="Tables",
            labels={"table": "image reliance"},
        ),
    log:
        "logs/{run}/reliance_summary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        bootstrap={
            "n_boot": config["metrics"]["bootstrap_samples"],
            "confidence": config["metrics"]["confidence"],
            "seed": config["seed"],
        },
    script:
        "../scripts/reliance_summary.py"
