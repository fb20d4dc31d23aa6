# The two commands a newcomer needs: `make demo` (quick offline sweep, report, reproduction check)
# and `make test`.
# Each creates .venv on first use with the CPU build of torch (never a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint ci-gate install-check benchmark scifact controlled controlled-reduced clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The demo computes the quick suite afresh (results/demo, not committed) and says whether it
# reproduced the shipped reference run results/quick.
demo: $(STAMP)
	$(BIN)/lmk-eval run --config quick --output results/demo --recompute --report-dir results/demo-report
	@$(BIN)/lmk-eval check results/demo --baseline results/quick --decimals 4 \
	  && echo "demo: reproduced the shipped results/quick (every main score equal to 4 decimals)" \
	  || echo "demo: differs from the shipped results/quick in the scores listed above"

# `make test` runs everything (as CI does); a bare `pytest` skips the e2e tests (pyproject.toml).
test: $(STAMP)
	$(BIN)/ruff format --check lmk_eval tests benchmarks
	$(BIN)/ruff check lmk_eval tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m ""

# The regression gate CI runs: a small offline sweep checked against the committed baseline.
ci-gate: $(STAMP)
	$(BIN)/lmk-eval run --config ci --output results/ci --recompute --no-report
	$(BIN)/lmk-eval check results/ci --baseline tasks/ci.baseline.json --both-ways

# What CI runs first: the wheel built, installed into a fresh venv, and the ci gate, its report,
# check and export run from an empty folder with it (.ci/install-check).
install-check: $(STAMP)
	BIN=$(BIN) bash .ci/install-check

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/window_reuse.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/end_to_end.py --profile

scifact: $(STAMP)
	$(BIN)/lmk-eval run --tasks scifact --pooling mean --max-length 256 --output results/scifact-mean

# The controlled comparison (README): the full one takes many hours on 2 CPU cores and resumes
# where it stopped when run again; the reduced one takes under 30 minutes.
controlled: $(STAMP)
	$(BIN)/lmk-eval run --config controlled-minilm

controlled-reduced: $(STAMP)
	$(BIN)/lmk-eval run --config controlled-minilm-reduced

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
