# Developer entry points. The lifecycle itself is recipes/lifecycle.mk (see recipes/README.md).
#
#   make quickstart     create .venv, install mlsys into it, run the lifecycle on the sample data
#   make lifecycle      run the lifecycle recipe with the mlsys already on PATH (or MLSYS=...)
#   make test           the test suite (python -m pytest -q)
#   make completions    regenerate completions/ after changing a command's options
#   make bench          run every benchmark script in benchmarks/ (slow; not part of the tests)

PYTHON ?= python
MLSYS ?= mlsys
OUT ?= build/lifecycle
SEED ?= 7
BUDGET ?= 20s
BENCH_ARGS ?=

.PHONY: quickstart lifecycle test completions bench clean

quickstart:
	OUT='$(OUT)' SEED='$(SEED)' BUDGET='$(BUDGET)' bash scripts/quickstart.sh

lifecycle:
	$(MAKE) -f recipes/lifecycle.mk MLSYS='$(MLSYS)' OUT='$(OUT)' SEED='$(SEED)' BUDGET='$(BUDGET)'

test:
	$(PYTHON) -m pytest -q

completions:
	$(PYTHON) -m mlsys_cli.completions completions

bench:
	set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(PYTHON) $$script $(BENCH_ARGS); done

clean:
	$(MAKE) -f recipes/lifecycle.mk OUT='$(OUT)' clean
