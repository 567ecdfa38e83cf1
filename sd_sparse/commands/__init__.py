"""The `sd-sparse` subcommands, one job a module: each adds its subparsers (`add_*_parser(s)`) and runs from the
parsed flags (`run_*`, returning what to print); `sd_sparse.cli` assembles them. `flags.py`: the one flag style."""
