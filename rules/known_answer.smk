# The known-answer benchmark (docs/known_answer.md): lesions planted into known_answer.source's
# frontal films, written as a MIMIC-CXR-JPG download that data.root can point at; the report's
# known-answer table from the metrics.
KNOWN_ANSWER_DATA = "resources/known-answer-data"


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
        source=config["known_answer"]["source"],
        seed=config["known_answer"]["seed"],
    script:
        "../scripts/known_answer_data.py"
