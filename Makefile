# Two entry points for a fresh machine: `make demo` and `make test`. Each does all set-up
# itself and is quick when it is already done (the stamp file tracks pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean-demo
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first time: a few minutes)"
	# torch and torchvision first, pinned to the wheels on this machine's disk, so that the
	# project's ranges are met without a download.
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

# The pipeline on the built-in default (scikit-learn's digits), as far as it exists. --resume
# makes a second run quick: finished phases are skipped.
DEMO := runs/demo
demo: setup
	$(PY) -m train.bkd --out $(DEMO) --resume
	$(PY) -m convert.to_nir $(DEMO)/student.pt --name model
	$(PY) -m convert.to_nir $(DEMO)/student.pt --name model.fixed --precision fixed
	$(PY) -m runtime.verify $(DEMO)/model.nir --targets all --samples 128
	$(PY) -m runtime.verify $(DEMO)/model.fixed.nir --targets all --samples 128
	@echo
	@echo "demo done. Results in $(DEMO)/:"
	@echo "  checkpoint      $(DEMO)/student.pt (teacher: $(DEMO)/teacher.pt)"
	@echo "  training        $(DEMO)/metrics.jsonl, $(DEMO)/summary.json"
	@echo "  graphs          $(DEMO)/model.nir, model.onnx, model.step.onnx; $(DEMO)/model.fixed.nir (+ .onnx)"
	@echo "  parity reports  $(DEMO)/model.conversion.json, $(DEMO)/model.fixed.conversion.json"
	@echo "  verification    $(DEMO)/model.verify/report.md, $(DEMO)/model.fixed.verify/report.md (every target vs the reference)"
	@echo "  plots           $(DEMO)/curves.png; $(DEMO)/model.verify/*.png; $(DEMO)/model.fixed.verify/*.png"

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean-demo:
	rm -rf runs/demo
