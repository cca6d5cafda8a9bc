# syntax=docker/dockerfile:1
#
# deepserve image, CPU (default) or GPU, from one file:
#
#   docker build -t deepserve:cpu .
#   docker build -t deepserve:gpu --build-arg VARIANT=gpu .
#
# The CPU image runs on python:3.11-slim with the `onnxruntime` wheel. The GPU image runs on an
# NVIDIA CUDA + cuDNN runtime base with `onnxruntime-gpu` INSTEAD of `onnxruntime` (both ship the
# `onnxruntime` module, so they must never be installed together) and serves with DEEPSERVE_DEVICE=cuda.
# onnxruntime-gpu on PyPI is built against CUDA 13 + cuDNN 9 from 1.27 on (CUDA 12 up to 1.25), and the
# CUDA major of the base image must match it. For hosts whose driver predates CUDA 13 (< 580), build with
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#   --build-arg ORT_GPU_SPEC=onnxruntime-gpu==1.25.1
#
# Stages: os-<variant> (the runtime OS + Python) -> build (venv, stubs generated from protos/ with
# grpcio-tools, the package) -> runtime (that venv, the models, a non-root user). The final image has
# no compilers, no grpcio-tools, no TensorFlow and no training code.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------- OS
FROM ${PYTHON_IMAGE} AS os-cpu
ENV DEEPSERVE_DEVICE=cpu

FROM ${CUDA_IMAGE} AS os-gpu
# Ubuntu's own python3 (3.12 on 24.04); the venv built below links to it, so build and runtime
# stages must share this base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
ENV DEEPSERVE_DEVICE=cuda

# checkov:skip=CKV_DOCKER_7:"os-${VARIANT}" names a stage of this file (os-cpu or os-gpu), not an image; the images are pinned by tag in PYTHON_IMAGE and CUDA_IMAGE.
FROM os-${VARIANT} AS os
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ------------------------------------------------------------------------------------------- build
FROM os AS build
ARG VARIANT
ARG ORT_GPU_SPEC=onnxruntime-gpu==1.31.1
# Debian/Ubuntu's python3 needs python3-venv (ensurepip) to make a venv; python:slim has it built in.
RUN python3 -c "import ensurepip" 2>/dev/null \
 || (apt-get update \
     && apt-get install -y --no-install-recommends python3-venv \
     && rm -rf /var/lib/apt/lists/*)
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Runtime dependencies first, from pyproject's [project.dependencies], so this layer is cached
# until they change. The GPU variant swaps onnxruntime for onnxruntime-gpu.
COPY pyproject.toml README.md ./
RUN python -c "import re, sys, tomllib; variant, ort_gpu = sys.argv[1:]; \
assert variant in ('cpu', 'gpu'), f'VARIANT must be cpu or gpu, got {variant!r}'; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
deps = deps if variant == 'cpu' else [d for d in deps if not re.match(r'onnxruntime\\b', d)] + [ort_gpu]; \
print(chr(10).join(deps))" "$VARIANT" "$ORT_GPU_SPEC" > /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Stubs are generated at build time from protos/. grpcio-tools goes to a side directory that only
# the codegen step sees (it never reaches the runtime venv), resolved against the installed runtime:
# its bundled protoc must not be newer than the protobuf runtime, or importing the stubs fails with a
# gencode/runtime VersionError. The import check below (run from / so it loads the installed package,
# not /src) catches that at build time.
COPY protos/ protos/
COPY scripts/codegen.py scripts/codegen.py
COPY service/ service/
RUN pip freeze > /tmp/runtime-constraints.txt \
 && pip install --target /opt/codegen --constraint /tmp/runtime-constraints.txt grpcio-tools \
 && PYTHONPATH=/opt/codegen python scripts/codegen.py \
 && pip install --no-deps . \
 && rm -f /opt/venv/bin/deepserve-train \
 && (test "$VARIANT" = gpu || pip check) \
 && cd / && python -c "import onnxruntime, service.grpc.server" \
 && deepserve serve --help > /dev/null

# ----------------------------------------------------------------------------------------- runtime
FROM os AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    DEEPSERVE_HOST=0.0.0.0 \
    DEEPSERVE_PORT=8001 \
    DEEPSERVE_HTTP_PORT=8000 \
    DEEPSERVE_METRICS_PORT=8002 \
    DEEPSERVE_MODEL_REPOSITORY=/models
RUN groupadd --system --gid 10001 deepserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin deepserve
COPY --from=build /opt/venv /opt/venv
# Models are baked in (root-owned, read-only for the server); mount a volume on /models to serve
# others without rebuilding.
COPY models/ /models/
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001 8002
# Health through the gRPC health service the server itself publishes (overall status ""): on the plaintext
# DEEPSERVE_HEALTH_PORT when it is set (the gRPC port speaks TLS only then), else on the gRPC port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as hg; ch = grpc.insecure_channel('127.0.0.1:' + (os.environ.get('DEEPSERVE_HEALTH_PORT') or os.environ.get('DEEPSERVE_PORT', '8001'))); r = hg.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=4); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["deepserve", "serve"]
