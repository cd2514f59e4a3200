# Stage 6: the run summary page, the paper comparison page and the HTML report itself.


rule run_summary:
    input:
        manifest="results/{run}/manifest.csv",
        questions="results/{run}/questions.csv",
        answers="results/{run}/metrics/answers.csv",
        maps="results/{run}/metrics/maps.csv",
        failures="results/{run}/failures.csv",
        summary="results/{run}/metrics/summary.json",
        code=REPORT_CODE,
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
        config=config,
    script:
        "../scripts/run_summary.py"


rule paper_page:
    input:
        comparison="results/{run}/paper_comparison.csv",
        reference_compat=get_reference_compat_tables,
        code=REPORT_CODE,
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
        note=config["paper"].get("note"),
    script:
        "../scripts/paper_page.py"


rule table_pages:
    input:
        maps="results/{run}/metrics/maps.csv",
        failures="results/{run}/failures.csv",
        code=REPORT_CODE,
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
        code=library(),
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
