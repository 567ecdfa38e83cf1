"""What the Triton Batch-OMP kernel asks of a GPU, measured without one: registers, spills, shared memory.

Triton compiles for a named GPU target on any machine (no driver needed). This script compiles
`sd_sparse.sparse_coding._triton_kernel` with the launch shape `batch_omp` uses, for each setting,
runs the PTX through the ptxas that ships with triton (`ptxas -v`), and reports registers per
thread, spill bytes, shared memory and how many blocks fit on one SM by registers (64K registers
per SM on sm_80/sm_90; the block shrinks for small N as on an H100's 132 SMs). It proves the kernel compiles for real GPUs, not only under the interpreter.

    python benchmarks/triton_kernel_resources.py                # sm_90 (H100), every setting
    python benchmarks/triton_kernel_resources.py --arch 80 --settings paper

Writes `triton_kernel_resources.{json,md}` to --output_dir (not with --no_write).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter compiles nothing
    sys.exit("triton_kernel_resources.py: unset TRITON_INTERPRET; it compiles the kernel for a GPU target.")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sd_sparse.cli import SnakeCaseArgumentParser
from sd_sparse.sparse_coding import _triton_kernel  # noqa: E402

H100_SMS = 132
# name: (K atoms, L dimension, S sparsity, tol used, N signals: the block shrinks for small N)
SETTINGS = {
    "paper": (512, 16, 5, False, 65536),
    "sd_4x4_patch": (512, 64, 8, False, 16384),
    "sd_latent_256px": (512, 64, 8, False, 256),  # one 256² image's latent in 4×4 patches
    "tiny": (16, 4, 2, False, 65536),
    "tol": (512, 16, 16, True, 65536),
    "large_k": (4096, 16, 4, False, 65536),
    "k1024_s16": (1024, 64, 16, False, 65536),
    "max_sparsity": (512, 64, 32, False, 65536),
}
SIGNATURE = {
    "x_ptr": "*fp32",
    "atoms_t_ptr": "*fp32",
    "gram_ptr": "*fp32",
    "indices_ptr": "*i64",
    "values_ptr": "*fp32",
    "N": "i32",
    "K": "i32",
    "L": "i32",
    "tol": "fp32",
    "eps": "fp32",
}


def ptxas_path(arch: int) -> str:
    """The ptxas that ships with triton (the newer binary for sm_90 and above), else one on PATH."""
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    names = ["ptxas-blackwell", "ptxas"] if arch >= 90 else ["ptxas", "ptxas-blackwell"]
    for name in names:
        path = os.path.join(bin_dir, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("ptxas")
    if found is None:
        sys.exit("triton_kernel_resources.py: no ptxas found (triton's bundled one or on PATH).")
    return found


def compile_setting(num_atoms: int, sparsity: int, use_tol: bool, num_signals: int, arch: int) -> dict:
    shape = _triton_kernel._launch_shape(num_atoms, sparsity, num_signals, H100_SMS)
    constants = {"S": sparsity, "USE_TOL": use_tol, **{k: v for k, v in shape.items() if k != "num_warps"}}
    names = list(SIGNATURE) + list(constants)
    source = ASTSource(
        fn=_triton_kernel._batch_omp_kernel,
        signature={**SIGNATURE, **{name: "constexpr" for name in constants}},
        constexprs={(names.index(name),): value for name, value in constants.items()},
    )
    kernel = triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={"num_warps": shape["num_warps"], "enable_fp_fusion": True}
    )
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        suffix = "a" if arch >= 90 else ""
        done = subprocess.run(
            [ptxas_path(arch), "-v", f"--gpu-name=sm_{arch}{suffix}", ptx, "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed: {done.stderr.strip()[-500:]}")
    registers = int(re.search(r"Used (\d+) registers", done.stderr).group(1))
    spill_stores, spill_loads = (
        int(v) for v in re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr).groups()
    )
    threads = 32 * shape["num_warps"]
    return {
        **shape,
        "registers": registers,
        "spill_store_bytes": spill_stores,
        "spill_load_bytes": spill_loads,
        "shared_bytes": int(kernel.metadata.shared),
        "blocks_per_sm_by_registers": 65536 // (registers * threads),
        "warps_per_sm_by_registers": min(64, 65536 // (registers * threads) * shape["num_warps"]),
    }


def main(argv=None):
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80 (A100) or 90 (H100)")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--no_write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    rows = []
    for name in args.settings:
        k, l, s, use_tol, n = SETTINGS[name]
        row = {"setting": name, "N": n, "K": k, "L": l, "S": s, "tol": use_tol}
        row.update(compile_setting(k, s, use_tol, n, args.arch))
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        f"Triton Batch-OMP kernel compiled for sm_{args.arch} (triton {triton.__version__}), `ptxas -v`; no GPU needed.",
        "",
        "| setting | N | K | L | S | BLOCK_N | warps | registers | spill bytes (st/ld) | shared bytes | blocks/SM by registers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['setting']} | {r['N']} | {r['K']} | {r['L']} | {r['S']} | {r['BLOCK_N']} | {r['num_warps']} | {r['registers']} "
            f"| {r['spill_store_bytes']}/{r['spill_load_bytes']} | {r['shared_bytes']} | {r['blocks_per_sm_by_registers']} |"
            for r in rows
        ),
    ]
    print("\n".join(lines))
    if not args.no_write:
        os.makedirs(args.output_dir, exist_ok=True)
        base = os.path.join(args.output_dir, "triton_kernel_resources")
        with open(base + ".json", "w") as f:
            json.dump({"arch": args.arch, "triton": triton.__version__, "rows": rows}, f, indent=2)
        with open(base + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
