# The two commands the README gives: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# pytest workers: the CPUs this process may use, at most 4 (each worker holds its own torch)
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))" 2>/dev/null || echo 2)

.PHONY: demo test test-all lint bench clean

# uv installs the 7 GB of torch and its CUDA libraries several times faster than pip (it unpacks in
# parallel and compiles the bytecode on every core); pip takes over wherever uv cannot be had.
UV_RANGE := uv>=0.9,<1
INSTALL   = $(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e "$(1)" \
            || $(BIN)/pip install --quiet -e "$(1)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	-$(BIN)/pip install --quiet "$(UV_RANGE)"

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call INSTALL,.[train])
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(call INSTALL,.[dev])
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/fakescope demo --out demo-run
	@echo "open demo-run/run/report/report.html"

# One pytest worker per CPU, up to 4 (pytest-xdist; each keeps to its CPU, see tests/helpers.pin_worker).
test: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Everything: the tests, the long fuzz (-m slow) and three minutes of server soak.
test-all: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "slow or not slow"
	$(BIN)/python bench/soak.py --duration 180

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/train_effnet.py

clean:
	rm -rf demo-run runs .pytest_cache
