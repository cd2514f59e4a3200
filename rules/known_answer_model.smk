# The known-answer model (issue 16): the committed weights, or a fresh training on request.


rule known_answer_model:
    input:
        committed="models/known-answer",
        code=code("known_answer_model"),
    output:
        directory("resources/known-answer-model"),
    log:
        "logs/known_answer_model.log",
    conda:
        "../envs/model.yaml"
    params:
        settings=config["known_answer"],
    script:
        "../scripts/known_answer_model.py"
