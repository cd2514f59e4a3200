# Stage 6: the run summary page, the paper comparison page and the HTML report itself.


rule run_summary:
    input:
        manifest="results/{run}/manifest.csv",
        exclusions="results/{run}/exclusions.csv",
        preprocess=shard_outputs("results/{run}/preprocess/shard-{shard}.csv"),
        questions="results/{run}/questions.csv",
        answers="results/{run}/metrics/answers.csv",
        maps="results/{run}/metrics/maps.csv",
        failures="results/{run}/failures.csv",
        summary="results/{run}/metrics/summary.json",
        known_answer=get_known_answer_section,
        code=code("run_summary"),
    output:
        report(
            "results/{run}/report/summary.html",
            caption="../report/run_summary.rst",
            category="Run summary",
            labels={"page": "summary"},
        ),
    log:
        "logs/{run}/run_summary.log",
    conda:
        "../envs/analysis.yaml"
    params:
        # Machine knobs left out: changing them reruns nothing (settings.MACHINE_KNOBS).
        config=without_machine_knobs(config),
    script:
        "../scripts/run_summary.py"


rule table_pages:
    input:
        maps="results/{run}/metrics/maps.csv",
        failures="results/{run}/failures.csv",
        code=code("table_pages"),
    output:
        maps=report(
            "results/{run}/report/tables/maps.html",
            caption="../report/maps_table.rst",
            category="Tables",
            labels={"table": "maps and metrics"},
        ),
        failures=report(
            "results/{run}/report/tables/failures.html",
            caption="../report/failures.rst",
            category="Tables",
            labels={"table": "failures"},
        ),
    log:
        "logs/{run}/table_pages.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/table_pages.py"


rule report:
    input:
        pages=get_report_inputs,
        code=code("report"),
    output:
        "results/{run}/report.html",
    log:
        "logs/{run}/report.log",
    conda:
        "../envs/analysis.yaml"
    params:
        # Relative: params are recorded, and a moved or cloned run must not look stale.
        snakefile=os.path.relpath(workflow.main_snakefile),
    script:
        "../scripts/report.py"


rule report_items:
    input:
        get_report_inputs,
    localrule: True
