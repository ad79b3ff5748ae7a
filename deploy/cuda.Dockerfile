# syntax=docker/dockerfile:1
# Lamina, CUDA image: `lamina serve --backend vllm` (PagedAttention on the GPU) and bf16 training.
#   docker build -f deploy/cuda.Dockerfile -t lamina:cuda .
#   docker run --gpus all -p 8000:8000 -e LAMINA_SERVER__ADMIN_KEY=... lamina:cuda serve --backend vllm
# Same two stages as the CPU image (../Dockerfile); torch comes from the CUDA wheel index instead of
# the CPU one, and vLLM is added.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/lamina
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
ARG EXTRAS=postgres,s3
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# vLLM pins its own torch; install it first, then Lamina against what it chose.
RUN /opt/lamina/bin/pip install --extra-index-url "${TORCH_INDEX}" "vllm>=0.11,<1" \
    && /opt/lamina/bin/pip install --extra-index-url "${TORCH_INDEX}" ".[${EXTRAS}]"

FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini \
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["tini", "--", "lamina"]
CMD ["serve", "--backend", "vllm"]
