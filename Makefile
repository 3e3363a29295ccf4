# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# Longer, random property-based fuzzing (hypothesis profile "fuzz", see tests/conftest.py):
# FUZZ_EXAMPLES examples per property; failing examples are replayed from .hypothesis/.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	BHMJAX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -q -m "not slow" --hypothesis-profile=fuzz --hypothesis-show-statistics

bench: $(STAMP)
	$(PY) -m benchmarks run --suite quick --out benchmarks/results/quick_cpu.json

clean:
	rm -rf $(VENV) demo_output .pytest_cache
