# deepserve: `make run` serves models/ on 127.0.0.1:8001 (metrics :8002); `make test` runs lint, types, tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
STUBS  := service/grpc/_generated/inference/grpc_service_pb2.py
PROTOS := $(shell find protos -name '*.proto')

.PHONY: install install-train stubs run test lint typecheck unit train bench ops-check clean

install: $(STAMP) $(STUBS)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install-train: $(TRAIN_STAMP)

$(TRAIN_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $@

stubs: $(STUBS)

$(STUBS): $(STAMP) $(PROTOS) service/grpc/codegen.py
	$(BIN)/python -m service.grpc.codegen

run: install
	$(BIN)/deepserve serve --model-repository models --host 127.0.0.1 --port 8001 --metrics-port 8002

lint: install
	$(BIN)/ruff check service training tests bench
	$(BIN)/ruff format --check service training tests bench

typecheck: install
	$(BIN)/mypy

test: install install-train lint typecheck
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

train: install-train
	$(BIN)/deepserve-train all --output models

bench: install
	$(BIN)/python bench/serving.py

ops-check:  # static checks of Dockerfile, compose, Prometheus rules and k8s manifests with the real tools
	scripts/ops-check.sh

clean:
	rm -rf $(VENV) service/grpc/_generated/inference service/grpc/_generated/deepserve .pytest_cache .mypy_cache
