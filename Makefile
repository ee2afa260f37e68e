# dsdi — every target creates .venv and installs the package on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-fast demo bench study lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The full suite; test-fast leaves out the tests marked slow (the edit loop, about a minute on 2 cores).
test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -m "not slow" tests

# The end-to-end demo (synth -> labels -> train -> rank -> eval -> report) and the speed benchmarks.
demo: $(STAMP)
	PATH=$(CURDIR)/.venv/bin:$$PATH bash scripts/demo.sh runs/demo

bench: $(STAMP)
	.venv/bin/python bench/bench.py

# The claims study: a pretrained trunk, a world with LADI's long tail and crowd noise, 30 members x 10 seeds as heads on
# cached features, ten pre-registered claims -> docs/study.md and docs/study.svg. Under an hour on 2 CPU cores (not part
# of make test); run it again to resume. Replicate with other seeds: make study SEEDS=10-19 (report under runs/study/).
SEEDS ?= 0-9
STUDY_REPORT ?= $(if $(filter 0-9,$(SEEDS)),docs/study.md,runs/study/study-$(SEEDS).md)
study: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/dsdi study --out runs/study --seeds $(SEEDS) --report $(STUDY_REPORT)

lint: $(STAMP)
	$(BIN)/ruff check dsdi tests bench scripts

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
