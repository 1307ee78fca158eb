# The two commands a newcomer types: `make demo` and `make test`. Both create the virtual environment.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install test test-slow test-all demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m dnet demo

lint: $(STAMP)
	$(BIN)/ruff check dnet converters engines tests benchmarks

# Each script writes benchmarks/results/NAME.json and prints its table; `make bench QUICK=1` is a fast, rougher pass.
BENCHMARKS := inference_cpu int8_accuracy convert_time train_memory train_throughput t7_load preprocess_cost \
              eval_throughput int8_concat_chain

bench: $(STAMP)
	@set -e; for b in $(BENCHMARKS); do echo "== $$b"; DNET_BENCH_QUICK=$(QUICK) $(BIN)/python -m benchmarks.$$b; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
