#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels benchmarks/gpu_check.sh installs on a bare GPU machine
# that cannot reach a package index. The GPU image (the device tool's KINDS.md) already has Python 3.12
# with torch, triton, transformers, accelerate, huggingface-hub, safetensors, numpy, scikit-learn,
# scikit-image, scipy, pillow, pandas, pyarrow and pytest; it lacks the packages below. Versions are the
# lock's (requirements/lock.txt), so the GPU run uses what the suite was verified with where the image
# has nothing.
#
#   bash benchmarks/gpu_wheels.sh                       # cp312 wheels for the GPU image, into .whl/
#   GPU_PYTHON_VERSION=3.11 WHEEL_DIR=/tmp/w bash benchmarks/gpu_wheels.sh   # the same set for a local rehearsal
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
WHEEL_DIR=${WHEEL_DIR:-.whl}
# diffusers and its one requirement the image lacks; the codes container's range coder (constriction) and
# FLIP (flip-evaluator), which sd_sparse's evaluation and the CUDA tests import; datasets for the trainer's
# data pipeline, with the dill and multiprocess versions it pins.
NAMES=(diffusers importlib-metadata constriction flip-evaluator datasets dill multiprocess)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

rm -rf "$WHEEL_DIR"
mkdir -p "$WHEEL_DIR"
for name in "${NAMES[@]}"; do
    pin=$(grep -i "^${name}==" requirements/lock.txt | cut -d' ' -f1) || {
        echo "gpu_wheels.sh: $name is not in requirements/lock.txt" >&2
        exit 2
    }
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        "${PLATFORMS[@]/#/--platform=}" -d "$WHEEL_DIR" "$pin"
done
ls "$WHEEL_DIR"
du -sh "$WHEEL_DIR"
