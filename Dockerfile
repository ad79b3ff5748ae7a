# syntax=docker/dockerfile:1
# Lamina, CPU image: `lamina serve`, `lamina loop worker` and every other command.
#   docker build -t lamina:cpu .
#   docker run -p 8000:8000 -e LAMINA_SERVER__ADMIN_KEY=... -v $PWD/ws:/workspace lamina:cpu serve
# The CUDA variant (vLLM serving, bf16 training on a GPU) is deploy/cuda.Dockerfile.
# Two stages: the first builds a virtual environment with the compilers pip may need, the second
# copies only that environment onto a slim base, so the image carries no build tools.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lamina
WORKDIR /src
# Dependencies first (their layer is cached while only the source changes): constraints.txt pins the
# CPU build of torch, so no install pulls CUDA wheels into this image.
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# EXTRAS: postgres,s3 by default (the cluster profile: catalog on PostgreSQL, artifacts on S3).
ARG EXTRAS=postgres,s3
RUN /opt/lamina/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt ".[${EXTRAS}]"

FROM ${PYTHON_IMAGE} AS runtime
# tini reaps the engine processes `lamina serve` starts and forwards SIGTERM, so a rolling update
# drains streams instead of cutting them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 lamina \
    && mkdir /workspace && chown lamina /workspace
COPY --from=build /opt/lamina /opt/lamina
ENV PATH=/opt/lamina/bin:$PATH \
    LAMINA_HOME=/workspace \
    LAMINA_SERVER__HOST=0.0.0.0 \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /workspace
EXPOSE 8000 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["tini", "--", "lamina"]
CMD ["serve"]
