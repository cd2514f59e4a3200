# Stage 5: figures. Per-sample overlays, panels and prompt-sensitivity figures for a few images
# of each shard, and study-level summary plots.


rule sample_figures:
    input:
        answers="results/{run}/inference/shard-{shard}.csv",
        maps="results/{run}/maps/shard-{shard}.csv",
        arrays="results/{run}/maps/shard-{shard}.npz",
        images="results/{run}/preprocess/shard-{shard}.csv",
        code=code("sample_figures"),
    # One report entry per figure kind, each figure labelled by image, finding, strategy and
    # method (file names: src/cxr_attention/figures/samples.py).
    output:
        overlay=report(
            directory("results/{run}/figures/samples/shard-{shard}/overlay"),
            patterns=["overlay__{image}__{finding}.png"],
            caption="../report/overlay.rst",
            category="Samples",
            subcategory="overlays",
            labels={
                "image": "{image}",
                "finding": "{finding}",
                "strategy": "baseline",
                "method": MAP_METHOD_LABEL,
            },
        ),
        panels=report(
            directory("results/{run}/figures/samples/shard-{shard}/panels"),
            patterns=["panels__{image}__{finding}.png"],
            caption="../report/panels.rst",
            category="Samples",
            subcategory="strategy x method panels",
            labels={
                "image": "{image}",
                "finding": "{finding}",
                "strategy": "all",
                "method": "all",
            },
        ),
        sensitivity=report(
            directory("results/{run}/figures/samples/shard-{shard}/sensitivity"),
            patterns=["sensitivity__{image}__{finding}__{strategy}.png"],
            caption="../report/sensitivity.rst",
            category="Samples",
            subcategory="prompt sensitivity",
            labels={
                "image": "{image}",
                "finding": "{finding}",
                "strategy": "baseline vs {strategy}",
                "method": MAP_METHOD_LABEL,
            },
        ),
        layers=report(
            directory("results/{run}/figures/samples/shard-{shard}/layers"),
            patterns=["layers__{image}__{finding}.png"],
            caption="../report/layers.rst",
            category="Samples",
            subcategory="answer map per layer",
            labels={
                "image": "{image}",
                "finding": "{finding}",
                "strategy": "baseline",
                "method": "attention",
            },
        ),
    log:
        "logs/{run}/sample_figures/{shard}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        samples_per_shard=config["figures"]["samples_per_shard"],
        # This shard's share of the study-wide cap on samples figured in the report.
        max_samples=lambda wildcards: report_sample_quota(
            config["figures"]["report_samples"],
            SHARDS.index(wildcards.shard),
            len(SHARDS),
        ),
    script:
        "../scripts/sample_figures.py"


rule summary_figures:
    input:
        maps="results/{run}/metrics/maps.csv",
        accuracy_by_strategy="results/{run}/metrics/accuracy_by_strategy.csv",
        accuracy_by_finding="results/{run}/metrics/accuracy_by_finding.csv",
        js_divergence="results/{run}/metrics/js_divergence.csv",
        code=code("summary_figures"),
    output:
        report(
            directory("results/{run}/figures/summary"),
            patterns=["{name}.png"],
            caption="../report/summary_figures.rst",
            category="Summary plots",
            labels={"figure": "{name}"},
        ),
    log:
        "logs/{run}/summary_figures.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/summary_figures.py"
