# Stage 2: build the questions, then let the model answer them while capturing its attention.


# The tiny random model, when the config asks the workflow to build it (model.build_tiny).
if config["model"]["build_tiny"]:

    rule build_tiny_model:
        input:
            code=code("build_tiny_model"),
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
        unpack(get_phrase_questions),
        source=get_question_source,
        code=code("questions"),
    output:
        "results/{run}/questions.csv",
    log:
        "logs/{run}/questions.log",
    conda:
        "../envs/model.yaml"
    params:
        settings=section("questions"),
        phrase_question=get_phrase_question,
    script:
        "../scripts/questions.py"


rule inference:
    input:
        manifest="results/{run}/manifest.csv",
        questions="results/{run}/questions.csv",
        images="results/{run}/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        code=code("inference"),
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
    threads: 4
    resources:
        gpu=1,
        min_free_gpu_gb=machine("model", "min_free_gpu_gb"),
    params:
        model_id=config["model"]["id"],
        settings=section("inference"),
        labels=section("questions", "uncertain", "blank"),
        seed=config["seed"],
    script:
        "../scripts/inference.py"
