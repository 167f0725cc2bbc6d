# Zero to VLM — two commands on a fresh machine:
#   make course   set up .venv if needed, then run every step of the course in order on the built-in data world
#                 (make step4 reruns one step, make report rebuilds runs/course/report.html)
#   make test     set up .venv if needed, then run the whole test suite (offline, CPU)
# Windows / no make: see README.md for the plain pip and python commands.

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEVICE ?= cpu
STEP_TARGETS := step1 step2 step3 step4 step5 step6 numeric

.PHONY: setup course test clean report serve $(STEP_TARGETS)

$(VENV)/.ready: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(VENV)/.ready

test: setup
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

# The whole course in order, each step from the previous step's artifact; one line per step (its number against
# its bar, pass/fail, its time), then runs/course/report.html. A killed run resumes where it stopped.
course: setup
	$(PY) -m course.chain --device $(DEVICE)

# One step again, without redoing the others (a missing input says which target makes it).
$(STEP_TARGETS): setup
	$(PY) -m course.chain --only $@ --device $(DEVICE)

# The report again, from what is in runs/, without training.
report: setup
	$(PY) -m course.chain --report

# Chat with the newest VLM in a browser at http://127.0.0.1:8000/ (step6_vlm/serve.py; ARGS="--init runs/sft").
serve: setup
	$(PY) step6_vlm/serve.py --device $(DEVICE) $(ARGS)

clean:
	rm -rf runs
