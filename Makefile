# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing, install the pinned project into it, and are idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every core of the machine (override: make demo CORES=4).
CORES ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
RUN ?= demo

.PHONY: demo test lint install pull slurm clean-demo app screenshots

# Ends with the report's path and the run's counts (images, failures, exclusions).
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1
	@$(BIN)/cxr-attention summary results/$(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

install: $(STAMP)

# The interactive app on the demo, on the CPU: the known-answer model the demo trained, else the
# committed one, with the demo run's results when `make demo` has made them.
APP_MODEL := $(firstword $(wildcard resources/known-answer-model) models/known-answer)
app: $(STAMP)
	CUDA_VISIBLE_DEVICES= $(BIN)/cxr-attention app --model $(APP_MODEL) \
		$(if $(wildcard results/$(RUN)),--results results/$(RUN))

# docs/app/*.png, the screenshot of each tab in docs/app.md, taken by the app's browser tests
# (Debian's chromium, the tiny model); `make test` runs the same tests without writing them.
screenshots: $(STAMP)
	CXR_ATTENTION_SCREENSHOTS=docs/app $(BIN)/python -m pytest -q tests/app/test_app_browser.py

# Results from the DVC remote, marked up to date for Snakemake (DVC gives restored files new
# modification times); `dvc status` first checks that they match dvc.lock.
pull: $(STAMP)
	$(BIN)/dvc pull
	$(BIN)/dvc status --quiet
	$(BIN)/snakemake --touch --cores 1

# The workflow on a SLURM cluster (edit profiles/slurm/config.yaml for yours).
slurm: $(STAMP)
	$(BIN)/snakemake --profile profiles/slurm

# torch is pinned in pyproject.toml (2.13.0); requirements.lock pins everything else that the
# resolver picked, so that a clean checkout installs the same versions.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

clean-demo:
	rm -rf results/demo resources/known-answer-data resources/known-answer-model logs/demo benchmarks/demo
