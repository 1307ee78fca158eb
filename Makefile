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

bench: $(STAMP)
	@echo "not yet: the benchmarks land with the bench issue"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
