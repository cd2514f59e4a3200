# Stage 4: per-map metrics per shard, then study-level statistics over every shard.


rule map_metrics:
    input:
        maps="results/{run}/maps/shard-{shard}.csv",
        arrays="results/{run}/maps/shard-{shard}.npz",
        images="results/{run}/preprocess/shard-{shard}.csv",
        code=code("map_metrics"),
    output:
        table="results/{run}/metrics/shard-{shard}.csv",
        failures="results/{run}/metrics/shard-{shard}.failures.csv",
    log:
        "logs/{run}/map_metrics/{shard}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/map_metrics.py"


rule gather:
    input:
        answers=shard_outputs("results/{run}/inference/shard-{shard}.csv"),
        maps=shard_outputs("results/{run}/maps/shard-{shard}.csv"),
        metrics=shard_outputs("results/{run}/metrics/shard-{shard}.csv"),
        manifest="results/{run}/manifest.csv",
        code=code("gather"),
    output:
        answers="results/{run}/metrics/answers.csv",
        # Not embedded in the report: it grows with the study (the report's table page shows its
        # first rows).
        maps="results/{run}/metrics/maps.csv",
    log:
        "logs/{run}/gather.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/gather.py"


rule study_statistics:
    input:
        answers="results/{run}/metrics/answers.csv",
        maps="results/{run}/metrics/maps.csv",
        arrays=shard_outputs("results/{run}/maps/shard-{shard}.npz"),
        code=code("study_statistics"),
    output:
        summary="results/{run}/metrics/summary.json",
        accuracy_by_strategy="results/{run}/metrics/accuracy_by_strategy.csv",
        accuracy_by_finding="results/{run}/metrics/accuracy_by_finding.csv",
        auroc="results/{run}/metrics/auroc.csv",
        consistency="results/{run}/metrics/consistency.csv",
        js_divergence="results/{run}/metrics/js_divergence.csv",
        correct_vs_incorrect="results/{run}/metrics/correct_vs_incorrect.csv",
        paired_tests="results/{run}/metrics/paired_tests.csv",
        quality_by_method="results/{run}/metrics/map_quality_by_method.csv",
        js_by_method="results/{run}/metrics/js_by_method.csv",
        js_null="results/{run}/metrics/js_null.csv",
        entropy_null="results/{run}/metrics/entropy_null.csv",
        fallbacks="results/{run}/metrics/fallbacks.csv",
        label_policy="results/{run}/metrics/label_policy.csv",
    log:
        "logs/{run}/study_statistics.log",
    conda:
        "../envs/analysis.yaml"
    params:
        settings=section("metrics"),
        seed=config["seed"],
        label_policy=[config["questions"]["uncertain"], config["questions"]["blank"]],
    script:
        "../scripts/study_statistics.py"


rule failures:
    input:
        preprocess=shard_outputs("results/{run}/preprocess/shard-{shard}.failures.csv"),
        inference=shard_outputs("results/{run}/inference/shard-{shard}.failures.csv"),
        maps=shard_outputs("results/{run}/maps/shard-{shard}.failures.csv"),
        metrics=shard_outputs("results/{run}/metrics/shard-{shard}.failures.csv"),
        reference_compat=get_reference_compat_failures,
        grounding=optional_failures("grounding", "results/{run}/grounding/failures.csv"),
        faithfulness=optional_failures(
            "faithfulness", "results/{run}/faithfulness/shard-{shard}.failures.csv"
        ),
        reliance=optional_failures(
            "reliance", "results/{run}/reliance/shard-{shard}.failures.csv"
        ),
        known_answer_data=optional_failures(
            "known_answer", f"{KNOWN_ANSWER_DATA}/failures.csv"
        ),
        head_calibration=get_head_calibration_failures,
        code=code("failures"),
    # Not in the report: the table grows with the study; the report shows its page of first rows
    # (report/tables/failures.html), which names this file.
    output:
        "results/{run}/failures.csv",
    log:
        "logs/{run}/failures.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/failures.py"
