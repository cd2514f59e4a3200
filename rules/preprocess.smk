# Stage 1: select the images (manifest), decode them to normalised PNGs, draw body and lung masks.


rule manifest:
    input:
        unpack(get_mimic_tables),
        named=get_selection_table,
        code=code("manifest"),
    output:
        manifest="results/{run}/manifest.csv",
        exclusions="results/{run}/exclusions.csv",
    log:
        "logs/{run}/manifest.log",
    conda:
        "../envs/imaging.yaml"
    params:
        data=section("data"),
        selection=section("selection"),
        vqa_table=config["questions"]["vqa_table"],
        questions=section("questions", "source", "findings", "uncertain", "blank"),
        seed=config["seed"],
    script:
        "../scripts/manifest.py"


rule preprocess:
    input:
        manifest="results/{run}/manifest.csv",
        code=code("preprocess"),
    output:
        table="results/{run}/preprocess/shard-{shard}.csv",
        images=directory("results/{run}/preprocess/shard-{shard}"),
        failures="results/{run}/preprocess/shard-{shard}.failures.csv",
    log:
        "logs/{run}/preprocess/{shard}.log",
    conda:
        "../envs/imaging.yaml"
    params:
        max_side=config["preprocess"]["max_side"],
    script:
        "../scripts/preprocess.py"
