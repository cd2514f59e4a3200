# Stage 2: build the questions, then let the model answer them while capturing its attention.


rule build_tiny_model:
    input:
        code=TINY_MODEL_CODE,
    output:
        directory(config["model"]["id"]),
    log:
        "logs/build_tiny_model.log",
    conda:
        "../envs/model.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/build_tiny_model.py"


rule questions:
    input:
        source=get_question_source,
        code=QUESTIONS_CODE,
    output:
        "results/{run}/questions.csv",
    log:
        "logs/{run}/questions.log",
    conda:
        "../envs/model.yaml"
    params:
        settings=config["questions"],
    script:
        "../scripts/questions.py"


rule inference:
    input:
        manifest="results/{run}/manifest.csv",
        questions="results/{run}/questions.csv",
        images="results/{run}/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        code=INFERENCE_CODE,
    output:
        answers="results/{run}/inference/shard-{shard}.csv",
        captures=directory("results/{run}/inference/shard-{shard}"),
        failures="results/{run}/inference/shard-{shard}.failures.csv",
    log:
        "logs/{run}/inference/{shard}.log",
    benchmark:
        "benchmarks/{run}/inference/{shard}.tsv"
    conda:
        "../envs/model.yaml"
    resources:
        gpu=1,
    params:
        model=config["model"],
        settings=config["inference"],
        questions=config["questions"],
        seed=config["seed"],
    script:
        "../scripts/inference.py"
