"""How an error message names an argument: the flag a user typed, or the field a Python caller set.

Every check in `sd_sparse.data` takes a `names` function (`str → str`) and spells an argument as
`names("resolution")`, so one check serves the scripts (`flag`: "--resolution") and Python callers
(`field`: "`resolution` (--resolution)"; `parameter`: "`resolution`").
"""

from __future__ import annotations

from typing import Callable

#: a function that spells an argument's name in an error message
Names = Callable[[str], str]


def flag(name: str) -> str:
    """The command line's spelling: `--name`."""
    return f"--{name}"


def field(name: str) -> str:
    """A field of a configuration built in Python, with the flag that sets it in the scripts."""
    return f"`{name}` (--{name})"


def parameter(name: str) -> str:
    """A function's parameter: `name` in backticks."""
    return f"`{name}`"
