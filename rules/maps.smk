# Stage 3: token-conditioned maps (attention, then Grad-CAM, activation norm, uniform).


rule maps:
    input:
        answers="results/{run}/inference/shard-{shard}.csv",
        captures="results/{run}/inference/shard-{shard}",
        questions="results/{run}/questions.csv",
        images="results/{run}/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        heads=get_localization_heads,
        code=code("maps"),
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
        min_free_gpu_gb=machine("model", "min_free_gpu_gb"),
        gradcam_max_rows=machine("maps", "gradcam_max_rows"),
    params:
        model_id=config["model"]["id"],
        # The maps stage's own settings (maps.params.MapParams), less the machine knobs; the
        # heads chosen on the calibration split come as the input `heads`.
        settings=maps_settings(),
        seed=config["seed"],
    script:
        "../scripts/maps.py"
