# The comparison with the reference paper (paper.activate): its headline numbers beside ours, the
# reference's maps and metrics recomputed its way (paper.reference_compat), and the report page.


rule paper_comparison:
    input:
        answers="results/{run}/metrics/answers.csv",
        maps="results/{run}/metrics/maps.csv",
        arrays=shard_outputs("results/{run}/maps/shard-{shard}.npz"),
        reference=config["paper"]["reference"],
        code=code("paper_comparison"),
    output:
        "results/{run}/paper_comparison.csv",
    log:
        "logs/{run}/paper_comparison.log",
    conda:
        "../envs/analysis.yaml"
    params:
        settings=section("metrics"),
        seed=config["seed"],
    script:
        "../scripts/paper_comparison.py"


if config["paper"]["reference_compat"]:

    rule reference_compat:
        input:
            answers="results/{run}/inference/shard-{shard}.csv",
            captures="results/{run}/inference/shard-{shard}",
            images="results/{run}/preprocess/shard-{shard}.csv",
            maps="results/{run}/maps/shard-{shard}.csv",
            maps_npz="results/{run}/maps/shard-{shard}.npz",
            model=get_model_folder,
            code=code("reference_compat"),
        output:
            table="results/{run}/reference_compat/shard-{shard}.csv",
            failures="results/{run}/reference_compat/shard-{shard}.failures.csv",
        log:
            "logs/{run}/reference_compat/{shard}.log",
        conda:
            "../envs/analysis.yaml"
        params:
            model_id=config["model"]["id"],
        script:
            "../scripts/reference_compat.py"


rule paper_page:
    input:
        comparison="results/{run}/paper_comparison.csv",
        reference_compat=get_reference_compat_tables,
        code=code("paper_page"),
    output:
        report(
            "results/{run}/report/paper_comparison.html",
            caption="../report/paper_comparison.rst",
            category="Paper comparison",
            labels={"page": "paper comparison"},
        ),
    log:
        "logs/{run}/paper_page.log",
    conda:
        "../envs/analysis.yaml"
    params:
        note=config["paper"]["note"],
    script:
        "../scripts/paper_page.py"
