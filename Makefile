# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both go through `make install`, which is idempotent and quick when nothing changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.graphopt-installed
OP_SOURCES := $(shell find custom_ops -name '*.cc' -o -name '*.h' -o -name '*.cu' 2>/dev/null)
DEMO_DIR ?= demo-out

.PHONY: install demo test clean

install: $(STAMP)

# TensorFlow goes in first so the kernel build (--no-build-isolation) compiles against
# exactly the TensorFlow the package runs with, instead of downloading a second copy.
$(STAMP): setup.py pyproject.toml $(OP_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q 'tensorflow==2.21.0'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/graphopt build-model $(DEMO_DIR)/keras --form keras
	$(BIN)/graphopt build-model $(DEMO_DIR)/feature-columns --form feature-columns
	$(BIN)/graphopt build-model $(DEMO_DIR)/tf1 --form tf1
	for form in keras feature-columns tf1; do \
	  $(BIN)/graphopt rewrite $(DEMO_DIR)/$$form -o $(DEMO_DIR)/$$form-ev || exit 1; done

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf build *.egg-info $(DEMO_DIR) graphopt/*.so graphopt/_build_info.json
