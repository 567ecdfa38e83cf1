"""`python -m sd_sparse.training PROGRAM [FLAGS]` (or `accelerate launch -m sd_sparse.training PROGRAM [FLAGS]`):
the programs of `train/*.py`, shipped with the package."""

import sys

from .programs import PROGRAMS, run_program

if len(sys.argv) < 2 or sys.argv[1] not in PROGRAMS:
    print(
        f"usage: python -m sd_sparse.training {{{','.join(PROGRAMS)}}} [FLAGS]  (`... PROGRAM --help` lists its flags)",
        file=sys.stderr,
    )
    raise SystemExit(2)
run_program(sys.argv[1], sys.argv[2:])
