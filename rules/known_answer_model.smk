# The known-answer model (issue 16): the committed weights, or a fresh training on request.


rule known_answer_model:
    input:
        committed="models/known-answer",
        code=code("known_answer_model"),
    output:
        directory(KNOWN_ANSWER_MODEL),
    log:
        "logs/known_answer_model.log",
    conda:
        "../envs/model.yaml"
    params:
        retrain=config["known_answer"]["retrain"],
        steps=config["known_answer"]["steps"],
        seed=config["known_answer"]["training_seed"],
    script:
        "../scripts/known_answer_model.py"
