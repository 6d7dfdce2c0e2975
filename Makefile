# Both targets set themselves up on a fresh machine: a virtualenv in .venv with the extras they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
REGISTRY_TOOLS_STAMP := $(VENV)/.installed-registry-tools

.PHONY: demo test lint types docs pytest bench charts reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,all]'
	touch $(STAMP)

# Azurite (the Azure Storage emulator) comes from npm, into ./node_modules, never globally.
$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $(NODE_STAMP)

# skopeo and podman (Debian's packages) for the registry's client tests: installed when
# missing and we are root (CI is); otherwise those tests say how to install them and skip.
$(REGISTRY_TOOLS_STAMP): | $(STAMP)
	@missing=""; for tool in skopeo podman; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "apt-get install$$missing (for tests/test_registry_clients.py)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null; }; \
	else echo "missing:$$missing (not root): their registry tests will be skipped"; fi
	touch $(REGISTRY_TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/asyncstore demo --dir demo

test: lint types docs pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy --strict asyncstore

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

pytest: $(STAMP) $(NODE_STAMP) $(REGISTRY_TOOLS_STAMP)
	$(BIN)/pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,all,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) $(NODE_STAMP)
	$(BIN)/python bench/local.py
	$(BIN)/python bench/s3.py
	$(BIN)/python bench/gcs.py
	$(BIN)/python bench/azure_blob.py
	$(BIN)/python bench/cas.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/cli.py

# The SVG charts of the docs (docs/assets/bench/) from bench/results/*.json.
charts: $(BENCH_STAMP)
	$(BIN)/python bench/charts.py

# The table of docs/reliability.md: every fault, load and bad-input case, then the soak's memory bound.
reliability: $(STAMP) $(NODE_STAMP)
	$(BIN)/python bench/reliability.py --markdown
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .site demo .pytest_cache .mypy_cache .ruff_cache
