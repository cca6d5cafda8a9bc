# deepserve: `make run` serves models/ on 127.0.0.1:8001 (metrics :8002); `make test` runs lint, types, tests.
# `make run` passes no flags, so DEEPSERVE_PORT, DEEPSERVE_METRICS_PORT, ... apply as they do to `deepserve serve`;
# ARGS adds flags: `make run ARGS="--port 9001 --log-level debug"`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
STUBS  := service/grpc/_generated/inference/grpc_service_pb2.py
PROTOS := $(shell find protos -name '*.proto')

ARGS   ?=

.PHONY: install install-train stubs run test lint typecheck unit train docs bench bench-tools ops-check clean

install: $(STAMP) $(STUBS)

$(STAMP): pyproject.toml
	@echo "Setting up $(VENV) with the project and its dev tools (once; a minute or two)."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install-train: $(TRAIN_STAMP)

$(TRAIN_STAMP): $(STAMP) pyproject.toml
	@echo "Installing the train extra (TensorFlow, tf2onnx, scikit-learn: about 1.3 GB to download, a few minutes)."
	$(BIN)/pip install -e '.[dev,train]'
	touch $@

stubs: $(STUBS)

$(STUBS): $(STAMP) $(PROTOS) scripts/codegen.py
	$(BIN)/python scripts/codegen.py

run: install
	@echo "In another terminal: source .venv/bin/activate, then try the commands in docs/task-apis.md."
	$(BIN)/deepserve serve $(ARGS)

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
	@echo "Training the three models: about 1½ hours on 2 CPU cores; progress per model below."
	$(BIN)/deepserve-train all --output models

docs: install  # rewrite the outputs of the docs' command examples from a run on the committed models
	$(BIN)/python -m tests.e2e.docs_examples --update

bench: install  # serving bench, issue 12's peer table (its tools go into .bench-venvs/ on first use), generation
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/peers_table.py
	$(BIN)/python bench/paired.py
	$(BIN)/python bench/transport_floor.py
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/generation_grpc.py
	$(BIN)/python bench/generation_grpc.py --sampling model

bench-tools: install  # perf_analyzer into .bench-venvs/perf (tritonclient 2.41 and libcudart; Debian's libb64-0d, as root)
	$(BIN)/python -c "from bench import venvs; print('perf_analyzer:', venvs.perf_analyzer()[0])"

ops-check:  # static checks of Dockerfile, compose, Prometheus rules and k8s manifests with the real tools
	scripts/ops-check.sh

clean:
	rm -rf $(VENV) service/grpc/_generated/inference service/grpc/_generated/deepserve .pytest_cache .mypy_cache
