# exprssl image for the API, the migrate step and the Celery workers (see docker-compose.yml).
# CPU build of PyTorch by default, pinned like the Makefile. GPU image: build with the CUDA wheel index,
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t exprssl:gpu .
# (pick the CUDA build that matches the host's driver; the worker-gpu service does this for you).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EXPRSSL_DATA_DIR=/data \
    EXPRSSL_ARTIFACT_DIR=/artifacts \
    EXPRSSL_HOST=0.0.0.0

WORKDIR /app
# torch first, from its own index, so that the project's `torch` range pulls no other build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY models ./models
COPY migrations ./migrations
RUN pip install .

RUN useradd --create-home --uid 1000 exprssl && mkdir -p /data /artifacts && chown exprssl /data /artifacts
USER exprssl
EXPOSE 8000
CMD ["exprssl", "serve"]
