# Two commands set everything up: `make demo` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# This exact torch/torchvision pair installs offline on the project's build machines; any recent pair works.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PROMPT ?= the digit seven moves up and to the left
SEED ?= 0

.PHONY: demo test notebooks lab lint clean

$(VENV)/.installed: pyproject.toml requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) -m minimagic generate --prompt "$(PROMPT)" --seed $(SEED) --out demo.gif

# MINIMAGIC_FAST=1: notebook 05 trains for a few steps only, so that the notebooks run in CI in minutes
test: $(VENV)/.installed
	MINIMAGIC_FAST=1 OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(PY) -m pytest --nbval-lax tests notebooks

# Re-execute every notebook in place, one at a time, and store its outputs (figures, GIFs) for readers on GitHub
notebooks: $(VENV)/.installed
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(PY) scripts/execute_notebooks.py notebooks/*.ipynb

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check minimagic tests bench scripts notebooks

clean:
	rm -rf $(VENV) runs demo.gif
