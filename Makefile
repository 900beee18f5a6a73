# Two entry points for a fresh machine (Python 3.11, pip, make; apt for the test tools):
#   make demo   set up .venv and run the whole pipeline on the embedded synthetic cohort
#   make test   set up .venv with the test extras and reference tools, then run the tests
#   make test-heavy  the heavy tests: torch (nnU-Net v2 and MONAI read the exports) and a
#               one-node SLURM cluster (needs root); CI runs make test, then make test-heavy
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test test-heavy lint test-tools benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-ml: pyproject.toml $(VENV)/.installed-test
	$(BIN)/pip install --quiet -e '.[test,slurm,ml]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "metsprep demo finished. Outputs are in $(CURDIR)/results/:"
	@echo "  results/bids/                BIDS dataset (+ derivatives/metsprep/)"
	@echo "  results/catalog/*.parquet    inventory, series, cases, lesions (data dictionary: catalog/README.md)"
	@echo "  results/qc/index.html        QC report"

test-tools:
	bash tools/install-test-tools.sh

# Static checks: ruff, mypy --strict on src/metsprep, snakemake --lint, snakefmt.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/mypy
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --quiet all

test: $(VENV)/.installed-test test-tools lint
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/pytest -m "not ml and not slurm and not heavy"

# Heavy tests: the exports checked by nnU-Net v2 and MONAI themselves (torch: ~2 min and
# 1.9 GB to install), the pipeline on a one-node SLURM cluster (~3.5 min, needs root) and
# the long end-to-end runs (hostile corpus, SIGKILL and resume, incremental runs, longitudinal
# patients: ~7 min).
test-heavy: $(VENV)/.installed-ml test-tools
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/pytest -m "ml or slurm or heavy"

benchmark: $(VENV)/.installed-test test-tools
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/python benchmarks/run_pipeline.py

clean:
	rm -rf results .snakemake
