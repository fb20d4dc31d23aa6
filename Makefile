# The two commands a newcomer needs: `make demo` (quick offline sweep + report) and `make test`.
# Each creates .venv on first use with the CPU build of torch (never a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint ci-gate benchmark scifact controlled controlled-reduced clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lmk-eval run

test: $(STAMP)
	$(BIN)/ruff check lmk_eval tests benchmarks
	$(BIN)/python -m pytest

# The regression gate CI runs: a small offline sweep checked against the committed baseline.
ci-gate: $(STAMP)
	$(BIN)/lmk-eval run --config tasks/ci.toml --output results/ci --no-report
	$(BIN)/lmk-eval check results/ci --baseline tasks/ci.baseline.json --both-ways

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/window_reuse.py

scifact: $(STAMP)
	$(BIN)/lmk-eval run --tasks scifact --pooling mean --max-length 256 --output results/scifact-mean

# The controlled comparison (README): the full one takes many hours on 2 CPU cores and resumes
# where it stopped when run again; the reduced one takes under 30 minutes.
controlled: $(STAMP)
	$(BIN)/lmk-eval run --config tasks/controlled-minilm.toml

controlled-reduced: $(STAMP)
	$(BIN)/lmk-eval run --config tasks/controlled-minilm-reduced.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
