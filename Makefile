# The commands a newcomer needs. `make up` runs Freight locally; `make test` runs the suite.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

# The suite uses the RabbitMQ and PostgreSQL running on this machine; unset these to have
# testcontainers start throwaway ones instead.
export FREIGHT_AMQP_URL ?= amqp://guest:guest@localhost:5672/
export FREIGHT_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install up test lint bench docker clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

docker:
	bash scripts/ensure-docker.sh
	bash scripts/build-test-image.sh

up: install
	bash scripts/up.sh

test: install docker
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install docker
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .freight .pytest_cache .mypy_cache .ruff_cache
