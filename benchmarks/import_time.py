"""How long `from sd_sparse import batch_omp` takes against `import torch`, in fresh interpreters.

Each statement runs in `--repeats` new subprocesses (alternating, after one warm-up run of each so
the OS file cache is warm); the wall time of the whole interpreter is measured and the medians are
compared. The lazy `sd_sparse/__init__.py` should keep the ratio at most 1.5 (the package itself adds
only its sparse-coding module to torch).

    python benchmarks/import_time.py [--repeats 15]

Writes `import_time.json` and `.md` to --output_dir.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

from sd_sparse.cli import SnakeCaseArgumentParser

STATEMENTS = {
    "import torch": "import torch",
    "from sd_sparse import batch_omp": "from sd_sparse import batch_omp",
    "import sd_sparse": "import sd_sparse",
    "from sd_sparse import DictionaryBottleneck": "from sd_sparse import DictionaryBottleneck",
    "from sd_sparse import DictionaryLatentPipeline": "from sd_sparse import DictionaryLatentPipeline",
}
TARGET_RATIO = 1.5


def run_once(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = SnakeCaseArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output_dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    times = {name: [] for name in STATEMENTS}
    for statement in STATEMENTS.values():
        run_once(statement)  # warm the file cache
    for _ in range(args.repeats):
        for name, statement in STATEMENTS.items():
            times[name].append(run_once(statement))
    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_median = medians["import torch"]
    rows = [
        {
            "statement": name,
            "median_s": medians[name],
            "ratio_to_torch": medians[name] / torch_median,
            "runs": times[name],
        }
        for name in STATEMENTS
    ]
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
    }
    lines = [
        f"Import time, {meta['date']}, Python {meta['python']}, {meta['cpus']} CPUs: median of {args.repeats} "
        "fresh interpreters each (wall time of `python -c STATEMENT`).",
        "",
        "| statement | median (s) | × `import torch` |",
        "|---|---:|---:|",
        *[f"| `{r['statement']}` | {r['median_s']:.2f} | {r['ratio_to_torch']:.2f} |" for r in rows],
    ]
    table = "\n".join(lines)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "import_time.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(args.output_dir, "import_time.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    ratio = medians["from sd_sparse import batch_omp"] / torch_median
    print(f"TARGET `from sd_sparse import batch_omp` = {ratio:.2f}x `import torch` (target <= {TARGET_RATIO})")


if __name__ == "__main__":
    main()
