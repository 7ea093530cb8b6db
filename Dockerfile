# syntax=docker/dockerfile:1
# The Fashion-MNIST service: app/ and models/ (with the shipped model.pth) on uvicorn.
#   docker build -t fashion-mnist .                                  # CPU-only torch (default)
#   docker build -t fashion-mnist:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
ARG BASE_IMAGE=python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CUDA base images carry no Python of their own; python:*-slim already has it. The
# distribution's python3 is whatever that base ships, so there is no version to pin.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from PyTorch's own index: the CPU wheel is a fraction of PyPI's CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
# Only the serving packages are copied, so only they (and their dependencies) are installed.
RUN pip install .

FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FASHION_DEVICE=auto \
    FASHION_LOG_LEVEL=info
USER 10001
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
# fashion-serve (installed by `pip install .` above) checks the settings and the model before
# uvicorn starts, sends no Server header, and on SIGTERM answers the requests in flight for
# up to FASHION_SHUTDOWN_GRACE_S (20 s). `docker stop` kills after 10 s unless told more:
# docker stop -t 30, or docker run --stop-timeout 30.
CMD ["fashion-serve", "--host", "0.0.0.0", "--port", "8000"]
