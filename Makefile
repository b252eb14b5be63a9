# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both go through `make install`, which is idempotent and quick when nothing changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.graphopt-installed
OP_SOURCES := $(shell find custom_ops -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)
DEMO_DIR ?= demo-out

.PHONY: install demo test portability lint clean asan gpu-check

install: $(STAMP)

# TensorFlow goes in first so the kernel build (--no-build-isolation) compiles against
# exactly the TensorFlow the package runs with, instead of downloading a second copy.
$(STAMP): setup.py pyproject.toml $(OP_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q 'tensorflow==2.21.0'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

# One real request in the course's format (movie 593, The Silence of the Lambs).
DEMO_REQUEST := {"instances": [{"movieId": 593, "userId": 10351, "releaseYear": 1991, "movieGenre1": "Crime", "movieGenre2": "Horror", "movieGenre3": "Thriller", "movieRatingCount": 31046, "movieAvgRating": 4.22, "movieRatingStddev": 0.79, "userGenre1": "Drama", "userGenre2": "Comedy", "userGenre3": "Thriller", "userGenre4": "Romance", "userGenre5": "Crime", "userRatingCount": 45, "userAvgRating": 3.8, "userRatingStddev": 0.86}]}

# The main job end to end on the embedded synthetic data: build the three forms, rewrite them
# onto EmbeddingVariables, prove each rewrite computes the same thing, serve one of them.
demo: install
	rm -rf $(DEMO_DIR)
	for form in keras feature-columns tf1; do \
	  $(BIN)/graphopt build-model $(DEMO_DIR)/$$form --form $$form || exit 1; done
	for form in keras feature-columns tf1; do \
	  $(BIN)/graphopt rewrite $(DEMO_DIR)/$$form -o $(DEMO_DIR)/serving/$$form/1 || exit 1; done
	# --loader tf2: what graphopt serve runs (tf.saved_model.load), exact on every CPU. The session
	# loader (TF Serving) of a Keras export can differ from its tf2 load by an ulp, for the
	# original too; validate without --loader reports that and fails (README, "Validate").
	for form in keras feature-columns tf1; do \
	  $(BIN)/graphopt validate $(DEMO_DIR)/$$form $(DEMO_DIR)/serving/$$form/1 --loader tf2 || exit 1; done
	$(BIN)/graphopt serve $(DEMO_DIR)/serving/keras --model-name embedding_mlp --rest-port 0 --grpc-port 0 \
	  --once --request '$(DEMO_REQUEST)'
	# Keep training (docs/training.md): the Keras model's .keras file -> dynamic tables -> fit on
	# new users -> export; validate the converted export against the original, serve the trained one.
	$(BIN)/graphopt rewrite $(DEMO_DIR)/keras/model.keras -o $(DEMO_DIR)/keras_ev/model.keras
	$(BIN)/python -m graphopt.course.train $(DEMO_DIR)/keras_ev/model.keras --new-users \
	  -o $(DEMO_DIR)/keras_ev/trained.keras --export-converted $(DEMO_DIR)/keras_ev/converted \
	  --export $(DEMO_DIR)/serving/keras_trained/1 > $(DEMO_DIR)/keras_ev/train.log; \
	  status=$$?; cat $(DEMO_DIR)/keras_ev/train.log; exit $$status
	$(BIN)/graphopt validate $(DEMO_DIR)/keras $(DEMO_DIR)/keras_ev/converted --loader tf2
	$(BIN)/graphopt serve $(DEMO_DIR)/serving/keras_trained --model-name embedding_mlp --rest-port 0 \
	  --grpc-port 0 --once --request '$(DEMO_REQUEST)'
	# Or ship the training to the version served from the original export as a delta (docs/online.md):
	# the changed rows and dense variables, tables matched by identity; it then answers as above.
	$(BIN)/graphopt delta $(DEMO_DIR)/serving/keras_trained/1 -o $(DEMO_DIR)/serving/keras/1 \
	  --since $$(sed -n 's/.*--since //p' $(DEMO_DIR)/keras_ev/train.log)
	$(BIN)/graphopt serve $(DEMO_DIR)/serving/keras --model-name embedding_mlp --rest-port 0 --grpc-port 0 \
	  --once --request '$(DEMO_REQUEST)'

# Lint: ruff (pycodestyle, pyflakes, bugbear, pyupgrade, import order), ruff's formatter, mypy.
LINT_PATHS := graphopt tests bench setup.py
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: install
	$(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory portability

# The bit-exact tests (marker `exact`) again under other kernel choices than this CPU's default,
# so a comparison that holds on one CPU only fails where it is written, not on the next machine
# (oneDNN picks matmul kernels per CPU and per shape; docs/validate.md, "Exact on every CPU").
PORTABILITY_ENVS := ONEDNN_MAX_CPU_ISA=SSE41 ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0
portability: install
	for kernels in $(PORTABILITY_ENVS); do \
	  echo "== exact tests with $$kernels"; \
	  env $$kernels $(BIN)/python -m pytest -q -m exact tests || exit 1; done

# The op tests against an AddressSanitizer build of the op library (kept out of `make test`:
# it rebuilds the library). The build goes to build/asan and is loaded through
# GRAPHOPT_OP_LIBRARY, so the regular graphopt/_graphopt_ops.so stays as it is. Python and
# TensorFlow are not ASan-built, so libasan must be preloaded, and libstdc++ with it (else
# ASan's __cxa_throw interceptor finds no real one: the interpreter does not link it); leak
# checking is off because the interpreter's own allocations at exit are not ours to fix.
ASAN_DIR := build/asan
asan: install
	GRAPHOPT_SANITIZE=address $(BIN)/python setup.py -q build_ext --build-lib $(ASAN_DIR) --force
	LD_PRELOAD="$$($${CXX:-g++} -print-file-name=libasan.so) $$($${CXX:-g++} -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
	GRAPHOPT_OP_LIBRARY=$(ASAN_DIR)/graphopt/_graphopt_ops.so \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/ops

# The CUDA table core on a GPU, with nvcc only (no TensorFlow, no venv): correctness against
# the host reference, compute-sanitizer, benchmark; results in $$OUT or build/ (docs/cuda.md).
gpu-check:
	bash custom_ops/embedding_variable/cuda/gpu_check.sh

clean:
	rm -rf build *.egg-info $(DEMO_DIR) graphopt/*.so graphopt/_build_info.json
