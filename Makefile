# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data
SHARED_DATA ?= ../shared/data
CONFIG ?= configs/synthetic_classification.yaml

.PHONY: install run test test-slow lint format data bench kernel-ir tensorboard clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "import torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@# The projection kernel built now (about a second), into its cache: a first projection then loads it in ms.
	$(BIN)/python -c "from l1inf_lightning.functional import compile_kernel; print('projection path by dtype:', {str(k): v for k, v in compile_kernel().items()})"
	touch $(STAMP)

install: $(STAMP)

run: install  ## Train the paper's 500-100-50-20-2 MLP on synthetic classification with projection; logs in logs/
	$(BIN)/l1inf-lightning fit --config $(CONFIG)

test: install data  ## The default test run (no slow or GPU tests)
	$(BIN)/python -m pytest

test-slow: install data  ## Only the slow tests
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Unpack the MNIST and Fashion-MNIST files shipped beside the project into torchvision's layout.
# Elsewhere, set `download: true` in a config instead.
MNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
data:
	@if [ -d "$(SHARED_DATA)/mnist" ]; then \
	  for pair in mnist:MNIST fashion-mnist:FashionMNIST; do \
	    src=$${pair%%:*}; dst=$(DATA_DIR)/$${pair##*:}/raw; mkdir -p $$dst; \
	    for f in $(MNIST_FILES); do \
	      [ -s $$dst/$$f ] || { gunzip -c $(SHARED_DATA)/$$src/$$f.gz > $$dst/$$f.part && mv $$dst/$$f.part $$dst/$$f; }; \
	    done; \
	  done; \
	  echo "MNIST and Fashion-MNIST are in $(DATA_DIR)/"; \
	else echo "No $(SHARED_DATA)/mnist here: skipping (configs can set download: true)"; fi

bench: install data  ## The projection vs. a clone and the per-neuron loop, training time with vs. without it; one table of goals
	$(BIN)/python benchmarks/bench.py

kernel-ir: install  ## Write the projection kernel's shipped LLVM IR again (after editing _projection_numba.py)
	$(BIN)/python -c "from l1inf_lightning.functional._kernel_ir import main; main()"

tensorboard: install
	$(BIN)/tensorboard --logdir logs

clean:
	rm -rf $(VENV) logs lightning_logs .pytest_cache
