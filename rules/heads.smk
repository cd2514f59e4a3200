# head_selected's localization heads, chosen on the calibration split (maps.head_calibration):
# its images (none of a study patient's) go through the study's own preprocessing and inference
# rules, then every captured head gets its image share and spatial entropy and the best k are
# chosen; the report's page shows them. Included when a study uses head_selected without setting
# maps.localization_heads.


rule heads_manifest:
    input:
        unpack(get_mimic_tables),
        study="results/{run}/manifest.csv",
        code=code("heads_manifest"),
    output:
        "results/{run}/heads/manifest.csv",
    log:
        "logs/{run}/heads/manifest.log",
    conda:
        "../envs/imaging.yaml"
    params:
        data=section("data"),
        selection=section("selection", "views"),
        calibration=config["maps"]["head_calibration"],
        seed=config["seed"],
    script:
        "../scripts/heads_manifest.py"


use rule preprocess as heads_preprocess with:
    input:
        manifest="results/{run}/heads/manifest.csv",
        code=code("preprocess"),
    output:
        table="results/{run}/heads/preprocess/shard-{shard}.csv",
        images=directory("results/{run}/heads/preprocess/shard-{shard}"),
        failures="results/{run}/heads/preprocess/shard-{shard}.failures.csv",
    log:
        "logs/{run}/heads/preprocess/{shard}.log",


use rule inference as heads_inference with:
    input:
        manifest="results/{run}/heads/manifest.csv",
        questions="results/{run}/questions.csv",
        images="results/{run}/heads/preprocess/shard-{shard}.csv",
        model=get_model_folder,
        code=code("inference"),
    output:
        answers="results/{run}/heads/inference/shard-{shard}.csv",
        captures=directory("results/{run}/heads/inference/shard-{shard}"),
        failures="results/{run}/heads/inference/shard-{shard}.failures.csv",
    log:
        "logs/{run}/heads/inference/{shard}.log",
    benchmark:
        "benchmarks/{run}/heads/inference/{shard}.tsv"


rule heads:
    input:
        answers="results/{run}/heads/inference/shard-000.csv",
        captures="results/{run}/heads/inference/shard-000",
        code=code("heads"),
    output:
        table="results/{run}/heads/heads.csv",
        chosen="results/{run}/heads/localization_heads.json",
    log:
        "logs/{run}/heads/heads.log",
    conda:
        "../envs/analysis.yaml"
    params:
        calibration=config["maps"]["head_calibration"],
    script:
        "../scripts/heads.py"


rule heads_page:
    input:
        table="results/{run}/heads/heads.csv",
        chosen="results/{run}/heads/localization_heads.json",
        code=code("heads_page"),
    output:
        report(
            "results/{run}/report/heads.html",
            caption="../report/heads.rst",
            category="Localization heads",
            labels={"page": "localization heads"},
        ),
    log:
        "logs/{run}/heads_page.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/heads_page.py"
