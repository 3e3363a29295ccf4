# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# ArviZ 1.x needs Python >= 3.12: a second, small venv runs tests/test_arviz.py on that line.
PYTHON_AZ1 ?= env PYENV_VERSION=3.12.1 python3.12
VENV_AZ1 := .venv-az1
STAMP_AZ1 := $(VENV_AZ1)/.installed

.PHONY: demo test fuzz install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(STAMP_AZ1): pyproject.toml
	@$(PYTHON_AZ1) --version >/dev/null 2>&1 || { echo "the ArviZ 1.x tests need Python 3.12: '$(PYTHON_AZ1)' did not run (set PYTHON_AZ1=...)"; exit 1; }
	$(PYTHON_AZ1) -m venv $(VENV_AZ1)
	$(VENV_AZ1)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_AZ1)/bin/python -m pip install --quiet -e ".[test-arviz1]"
	touch $(STAMP_AZ1)

install: $(STAMP) $(STAMP_AZ1)

demo: $(STAMP)
	$(PY) examples/demo.py --out demo_output

test: $(STAMP) $(STAMP_AZ1)
	$(PY) -m pytest -q -n 2 --dist loadfile
	$(VENV_AZ1)/bin/python -m pytest -q -p no:cacheprovider tests/test_arviz.py

# Longer, random property-based fuzzing (hypothesis profile "fuzz", see tests/conftest.py):
# FUZZ_EXAMPLES examples per property; failing examples are replayed from .hypothesis/.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	BHMJAX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -q -m "not slow" --hypothesis-profile=fuzz --hypothesis-show-statistics

bench: $(STAMP)
	$(PY) -m benchmarks run --suite quick --out benchmarks/results/quick_cpu.json

clean:
	rm -rf $(VENV) $(VENV_AZ1) demo_output .pytest_cache
