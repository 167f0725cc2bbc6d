# Zero to VLM — two commands on a fresh machine:
#   make course   set up .venv if needed, then run every step of the course in order on the built-in data world
#   make test     set up .venv if needed, then run the whole test suite (offline, CPU)
# Windows / no make: see README.md for the plain pip and python commands.

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEVICE ?= cpu

.PHONY: setup course test clean

$(VENV)/.ready: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(VENV)/.ready

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

# Each step prints its number as the last line (one JSON object); runs/course/summary.txt collects them.
course: setup
	@mkdir -p runs/course && : > runs/course/summary.txt
	@set -eo pipefail; run() { name=$$1; shift; [ -f "$$1" ] || return 0; \
	  echo "==> $$name: python $$*"; $(PY) "$$@" 2>&1 | tee runs/course/$$name.log; \
	  echo "$$name: $$(tail -n 1 runs/course/$$name.log)" >> runs/course/summary.txt; }; \
	run step1 step1_tokenizer/train.py; \
	run step1-bench step1_tokenizer/bench.py --quick; \
	run step2 step2_gpt/bench.py --presets tiny --device $(DEVICE); \
	run step3 step3_pretrain/train.py --device $(DEVICE); \
	run step6 step6_vlm/train.py --device $(DEVICE); \
	echo; echo "== the number each step shows =="; cat runs/course/summary.txt

clean:
	rm -rf runs
