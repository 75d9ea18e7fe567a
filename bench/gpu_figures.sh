#!/usr/bin/env bash
# Issue 7's CUDA figures in one run on a GPU machine without network access, as bench/RESULTS.md reports them:
# training throughput (bench/train_throughput.py --device cuda) and HTTP prediction latency with the API's
# inference on CUDA (bench/predict_latency.py).
#
# The GPU machine's Python (3.12) already has torch, numpy, pandas, pyarrow, scikit-learn, h5py, matplotlib,
# jinja2 and httpx; the service's other dependencies travel as wheels in .whl/ (git-ignored):
#   bench/gpu_figures.sh --download   # on a machine with PyPI, in the repository root: fills .whl/
#   bench/gpu_figures.sh              # on the GPU machine, .whl/ carried along: installs them, runs both
#   bench/gpu_figures.sh --latency N  # there too: only the 100-sample latency, N runs (80 requests each)
# The service runs from the source tree (no install of the project itself).
set -euo pipefail
cd "$(dirname "$0")/.."

# Runtime dependencies the GPU image lacks, pinned to what this checkout's tests ran with.
PACKAGES=(fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-multipart sqlalchemy alembic
          celery kombu redis limits psycopg psycopg-binary)

if [ "${1:-}" = "--download" ]; then
    pins=()
    for name in "${PACKAGES[@]}"; do
        pins+=("$name==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
    done
    python3 -m pip download -q -d .whl --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any "${pins[@]}"
    echo "wheels in .whl/: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"
    exit 0
fi

python3 -m pip install -q --no-index --find-links .whl "${PACKAGES[@]}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--latency" ]; then
    for _ in $(seq "${2:?--latency takes a number of runs}"); do
        python3 bench/predict_latency.py --sizes 100
    done
    exit 0
fi
python3 bench/train_throughput.py --samples 8192 --genes 20000 --epochs 3 --device cuda
python3 bench/predict_latency.py --requests 20
