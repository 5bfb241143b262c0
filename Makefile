# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The torch build pinned here installs from local disk on the project machines; pyproject keeps lower bounds.
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]" $(TORCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gankit train toy_ring --set train.steps=10000 --run-dir $(DEMO_DIR)
	$(BIN)/gankit eval $(DEMO_DIR)
	$(BIN)/gankit plot $(DEMO_DIR)
	$(BIN)/gankit report $(DEMO_DIR)
	@echo "demo run: $(DEMO_DIR)  (plots in $(DEMO_DIR)/plots/)"
	@echo "report: $(DEMO_DIR)/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/gankit bench toy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
