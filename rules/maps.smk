# Stage 3: token-conditioned maps (attention, then Grad-CAM, activation norm, uniform).


rule maps:
    input:
        answers="results/{run}/inference/shard-{shard}.csv",
        captures="results/{run}/inference/shard-{shard}",
        questions="results/{run}/questions.csv",
        images="results/{run}/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        code=MAPS_CODE,
    output:
        table="results/{run}/maps/shard-{shard}.csv",
        arrays="results/{run}/maps/shard-{shard}.npz",
        failures="results/{run}/maps/shard-{shard}.failures.csv",
    log:
        "logs/{run}/maps/{shard}.log",
    benchmark:
        "benchmarks/{run}/maps/{shard}.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        gpu=1,
    params:
        model=config["model"],
        settings=config["maps"],
        seed=config["seed"],
    script:
        "../scripts/maps.py"
