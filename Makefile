# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests. Each creates the
# virtual environment and installs everything the first time (torch / torchvision first: on this workplace's
# machines these versions come from local disk; elsewhere set TORCH_SPEC to what your platform needs).
#   make test PYTEST_ARGS="-m slow"     make demo DEMO_ARGS="--ratio 0.5"     make install VENV=/tmp/venv
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,plot,docs
PYTEST_ARGS ?=
DEMO_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.rartsprune-installed

.PHONY: install test demo lint docs gpu-wheels clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import rartsprune, torch, torchvision, timm, torch_pruning, fvcore"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m rartsprune demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d $(VENV)/site

# Wheels of what GPU images lack (pure Python), for bench/gpu_check.py: carry .whl/ to the GPU machine.
GPU_WHEELS ?= torch-pruning fvcore iopath yacs termcolor
gpu-wheels: $(STAMP)
	mkdir -p .whl
	$(BIN)/python -m pip wheel -q --no-deps -w .whl $$($(BIN)/python -m pip freeze | grep -i -E "^($$(echo $(GPU_WHEELS) | tr ' ' '|'))==")

clean-venv:
	rm -rf $(VENV)
