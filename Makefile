# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models demo test browser lab bench bench-peers bfcl-data lint clean

# llama-cpp-python compiles llama.cpp (about 15 min on 2 cores, once: pip caches the wheel).
# CPU only, without the examples, tools, server, tests and multimodal (mtmd) library.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	$(BIN)/python -m pip show torch | grep '^Version: 2.13.0+cpu' >/dev/null || \
		(echo "torch is not the pinned 2.13.0 build" && exit 1)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/python -m pip install --quiet -e ".[llama]" || \
		echo "WARNING: llama-cpp-python did not build (see above): local: models run on" \
		     "transformers, about 10x slower; aillm-lab doctor says which engine runs."
	touch $(STAMP)

models: install
	$(BIN)/aillm-lab models pull smollm2

demo: models
	$(BIN)/aillm-lab serve

test: models browser bfcl-data
	$(BIN)/python -m pytest

# BFCL's data files for tests/experiments/test_bfcl.py, in their own folder: bfcl-eval pins
# numpy==1.26.4 and dozens of SDKs, so it never goes into the venv (its files are read, not
# imported); without them the real-BFCL tests skip and say why.
bfcl-data: .bfcl-data/.installed

.bfcl-data/.installed: | install
	rm -rf .bfcl-data
	$(BIN)/python -m pip install --quiet --no-deps --target .bfcl-data "bfcl-eval==2026.3.23" \
		&& touch $@ || echo "bfcl-eval not fetched: the real-BFCL tests will skip"

# Debian's chromium for tests/ui/test_browser.py: Playwright drives it through
# executable_path (never `playwright install`); without it those tests skip and say why.
browser:
	@command -v chromium >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the browser tests will skip"

lab: models
	$(BIN)/jupyter lab notebooks/

bench: models bench-peers
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

# The peer frameworks for benchmarks/bench_agents.py, in their own folder (never in the venv).
bench-peers: .bench-peers/.installed

.bench-peers/.installed: benchmarks/requirements-peers.txt | install
	rm -rf .bench-peers
	$(BIN)/python -m pip install --quiet --target .bench-peers \
		-r benchmarks/requirements-peers.txt && touch $@ || \
		echo "peers not installed: bench_agents.py will show them as unavailable"

lint: install
	$(BIN)/ruff check aillm_lab tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
