#!/usr/bin/env bash
# The GPU proof in one command (issue 23), for a bare GPU machine that cannot reach a package index:
#
#   bash benchmarks/gpu_wheels.sh          # here, once: the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_check.sh OUT_DIR   # there, from the repository root, with .whl/ carried along
#
# With the device tool: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=540).
# It installs .whl/*.whl into a private folder (nothing else on the machine changes), then runs, each
# under its own time limit and all within BUDGET_S seconds (default 450):
#   1. benchmarks/sparse_coding.py --device cuda --quick     Triton and torch Batch-OMP vs the GPU VQ assignment
#   2. benchmarks/pipeline_overhead.py --device cuda --quick coding one 256² SD latent vs the VAE decode
#   3. benchmarks/training_step.py --device cuda             DL-VAE step vs VQ-VAE step, interleaved
#   4. pytest -k cuda                                        the CUDA tests, bf16/fp16 coded VAEs among them
#   5. benchmarks/triton_launch_sweep.py --device cuda       launch shapes, with the time that is left
# OUT_DIR receives summary.txt (environment, each step's exit status, time and TARGET lines) and
# results.tar.gz (every result file and log), re-packed after each step, so a cut-short run keeps them.
#
# STEPS="sparse_coding cuda_tests" BUDGET_S=240 bash benchmarks/gpu_check.sh OUT_DIR reruns only those steps
# (names as in the list: sparse_coding pipeline_overhead training_step cuda_tests triton_launch_sweep).
#
# DEVICE=cpu bash benchmarks/gpu_check.sh OUT_DIR rehearses it on a CPU machine with small settings (the
# CUDA tests skip; the sweep runs under Triton's interpreter): it checks the environment and the script.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-450}
STEPS=${STEPS:-sparse_coding pipeline_overhead training_step cuda_tests triton_launch_sweep}
WHEEL_DIR=${WHEEL_DIR:-.whl}
START=$SECONDS
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

say() { echo "$*" | tee -a "$SUMMARY"; }
pack() { tar -C "$WORK" -czf "$OUT/results.tmp" . && mv "$OUT/results.tmp" "$OUT/results.tar.gz"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME LIMIT_S COMMAND...: runs COMMAND with at most LIMIT_S seconds (less if the budget is nearly
# spent), its output in NAME.log; the summary gets its status, time and TARGET lines.
step() {
    local name=$1 limit=$2
    shift 2
    if [[ " $STEPS " != *" $name "* ]]; then return; fi
    local budget
    budget=$(left)
    if ((budget < limit)); then limit=$budget; fi
    if ((limit < 20)); then
        say "== $name: skipped (budget spent)"
        return
    fi
    local begin=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    local rc=$?
    local status="rc $rc"
    if ((rc == 124 || rc == 137)); then status="stopped at its ${limit}s limit"; fi
    say "== $name: $status, $((SECONDS - begin)) s"
    grep -E "^TARGET|^[0-9]+ (passed|failed|skipped)|^(FAILED|ERROR) " "$WORK/$name.log" | tail -n 20 | tee -a "$SUMMARY"
    if ((rc != 0)); then tail -n 5 "$WORK/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"; fi
    pack
}

# -- environment: the carried wheels in a private folder, the repository on the path -------------------
if compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
    SITE=$(mktemp -d)
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEEL_DIR"/*.whl \
        >"$WORK/install.log" 2>&1; then
        say "gpu_check.sh: installing $WHEEL_DIR/*.whl failed:"
        tail -n 5 "$WORK/install.log" | tee -a "$SUMMARY"
        pack
        exit 3
    fi
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    say "gpu_check.sh: no wheels in $WHEEL_DIR/ (bash benchmarks/gpu_wheels.sh makes them); using what is installed"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$DEVICE" = cpu ]; then export TRITON_INTERPRET=1; fi

"$PY" - >"$WORK/environment.txt" 2>&1 <<'EOF'
import importlib.metadata as metadata, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
for name in ("triton", "diffusers", "transformers", "huggingface-hub", "accelerate", "numpy", "scikit-learn", "constriction"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} MISSING")
import sd_sparse
from sd_sparse.sparse_coding import _native
print("sd_sparse", sd_sparse.__version__, "from", sd_sparse.__file__)
print("C kernel:", "built" if _native.load_kernel() is not None else "NOT built (the CPU comparison uses the torch path)")
EOF
ENV_RC=$?
say "== environment (rc $ENV_RC)"
tee -a "$SUMMARY" <"$WORK/environment.txt"
if ((ENV_RC != 0)); then
    pack
    exit 3
fi
if [ "$DEVICE" = cuda ] && grep -q "no CUDA device" "$WORK/environment.txt"; then
    say "gpu_check.sh: DEVICE=cuda, but torch sees no CUDA device"
    pack
    exit 3
fi

# -- the measurements -----------------------------------------------------------------------------------
if [ "$DEVICE" = cuda ]; then
    step sparse_coding 150 "$PY" benchmarks/sparse_coding.py --device cuda --quick --output_dir "$WORK"
    step pipeline_overhead 120 "$PY" benchmarks/pipeline_overhead.py --device cuda --quick --output_dir "$WORK"
    step training_step 75 "$PY" benchmarks/training_step.py --device cuda --tag _cuda --output_dir "$WORK"
else  # rehearsal: the same scripts, small
    step sparse_coding 600 "$PY" benchmarks/sparse_coding.py --device cpu --quick --repeats 1 --output_dir "$WORK"
    step pipeline_overhead 600 "$PY" benchmarks/pipeline_overhead.py --device cpu --quick --steps 5 --output_dir "$WORK"
    step training_step 300 "$PY" benchmarks/training_step.py --device cpu --rounds 1 --steps 1 --tag _cpu --output_dir "$WORK"
fi
mapfile -t CUDA_TEST_FILES < <(grep -rl --include='test_*.py' cuda tests | sort)
step cuda_tests 120 "$PY" -m pytest "${CUDA_TEST_FILES[@]}" -k cuda -p no:cacheprovider -o addopts="" -q -rs \
    --timeout 100 --junitxml="$WORK/cuda_tests.xml"
if [ "$DEVICE" = cuda ]; then
    step triton_launch_sweep "$(left)" "$PY" benchmarks/triton_launch_sweep.py --device cuda --output_dir "$WORK"
elif "$PY" -c "import sys, triton; sys.exit(tuple(map(int, triton.__version__.split('.')[:2])) < (3, 7))"; then
    step triton_launch_sweep 300 "$PY" benchmarks/triton_launch_sweep.py --device cpu --rehearse --settings paper \
        --output_dir "$WORK"
else
    say "== triton_launch_sweep: skipped in the rehearsal (Triton's CPU interpreter needs triton >= 3.7)"
fi
say "== done in $((SECONDS - START)) s; results: $OUT/results.tar.gz"
