# The commands a newcomer needs. `make up` runs Freight locally; `make test` runs the suite.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# The suite uses the RabbitMQ and PostgreSQL running on this machine; unset these to have
# testcontainers start throwaway ones instead.
export FREIGHT_AMQP_URL ?= amqp://guest:guest@localhost:5672/
export FREIGHT_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install up test lint bench docker test-tools images clean lock image tes-compliance

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,dev]'
	touch $@

docker:
	bash scripts/ensure-docker.sh
	bash scripts/build-test-image.sh

# What some tests drive besides Docker: libfaketime (the fault suite), Chromium (the dashboard).
test-tools:
	bash scripts/ensure-test-tools.sh

up: install
	bash scripts/up.sh

# Every image compose.yaml needs, built here from Debian's packages (no registry needed), and a
# compose tool; the suite's deployment tests use them. Cached: a second run rebuilds what changed.
images: install
	bash scripts/build-images.sh

# Two workers, a test module to each at a time (its shared cluster started once), then the tests
# that change what the others share, alone.
test: install docker test-tools images
	$(BIN)/pytest -n 2 --dist loadfile -m "not serial"
	$(BIN)/pytest -m serial

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The GA4GH TES compliance suite against a running API (`make up`); skipped with a message where
# the suite cannot be installed (scripts/tes-compliance.sh, docs/tes.md).
tes-compliance:
	bash scripts/tes-compliance.sh

bench: install docker
	$(BIN)/python -m bench

# The image's pinned dependencies, from pyproject.toml (pip-tools in a throwaway virtualenv).
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet pip-tools
	.lock-venv/bin/pip-compile --quiet --extra server --strip-extras --no-emit-index-url --no-emit-trusted-host \
		--no-emit-find-links --output-file requirements.lock pyproject.toml
	rm -rf .lock-venv

# The one image of every service (compose.yaml builds it too), from the official Python image.
image:
	docker build -t freight:local .

clean:
	rm -rf $(VENV) .freight .pytest_cache .mypy_cache .ruff_cache
