# make demo  : create .venv if missing, install core + every plugin, run the main job
# make test  : same set-up, run the test suite (slow experiments excluded: make test-slow)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP  := $(VENV)/.cil-installed

.PHONY: demo test test-slow test-without-ray bench install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt requirements-dev.txt $(wildcard plugins/*/pyproject.toml)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt -e . $(addprefix -e ,$(PLUGINS))
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cil demo --no-progress

test: $(STAMP)
	$(PY) -m pytest -q

# the suite as on a machine without Ray: ray and cil_ray unimportable, their entry points hidden
test-without-ray: $(STAMP)
	PYTHONPATH=$(CURDIR)/.ci/without-ray $(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) results benchmarks/results
