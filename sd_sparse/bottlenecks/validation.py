"""Declarative checks of bottleneck configurations and inputs, in scikit-learn's `_parameter_constraints` style.

Each bottleneck class (and each component mixin) lists what its config values may be in a class attribute
`_parameter_constraints = {name: [constraint, ...]}`; `Bottleneck.__init__` checks the registered config
against the tables of the whole class hierarchy once, with `validate_parameters`. A value is valid when it
satisfies any one of its constraints; the error names the parameter and everything it may be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..errors import UserError

Bound = Optional[Union[int, float, str]]  # a number, None (unbounded) or the name of another parameter


@dataclass(frozen=True)
class Interval:
    """A number in an interval. `kind` is `Integral` (ints) or `Real` (ints and floats, finite); bools never
    pass. `left`/`right` may name another parameter (`Interval(Integral, 1, "num_atoms", closed="both")`)."""

    kind: type
    left: Bound
    right: Bound
    closed: str = "left"  # "both", "left", "right" or "neither"

    def _bounds(self, params: Mapping[str, Any]) -> Tuple[Any, Any]:
        return tuple(params.get(b) if isinstance(b, str) else b for b in (self.left, self.right))

    def is_satisfied_by(self, value, params: Mapping[str, Any]) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind) or not math.isfinite(value):
            return False
        left, right = self._bounds(params)
        closed_left, closed_right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if left is not None and not (value >= left if closed_left else value > left):
            return False
        return right is None or (value <= right if closed_right else value < right)

    def describe(self, params: Mapping[str, Any]) -> str:
        left, right = self._bounds(params)
        if right is None:
            sign = ">=" if self.closed in ("both", "left") else ">"
            return f"an int {sign} {left}" if self.kind is Integral else f"a finite number {sign} {left}"
        brackets = ("[" if self.closed in ("both", "left") else "(") + (
            "]" if self.closed in ("both", "right") else ")"
        )
        interval = f"{brackets[0]}{left}, {right}{brackets[1]}"
        return f"an int in {interval}" if self.kind is Integral else f"in {interval}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: Tuple

    def is_satisfied_by(self, value, params: Mapping[str, Any]) -> bool:
        return value in self.values

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"one of {self.values}"


@dataclass(frozen=True)
class IsNone:
    """None, saying what None stands for (`IsNone("unquantized coefficients")`)."""

    meaning: str = ""

    def is_satisfied_by(self, value, params: Mapping[str, Any]) -> bool:
        return value is None

    def describe(self, params: Mapping[str, Any]) -> str:
        return f"None ({self.meaning})" if self.meaning else "None"


Constraint = Union[Interval, Options, IsNone]


def collect_constraints(cls: type) -> Dict[str, Sequence[Constraint]]:
    """The `_parameter_constraints` of `cls` and of every class it derives from (a subclass's entry wins)."""
    constraints: Dict[str, Sequence[Constraint]] = {}
    for klass in reversed(cls.__mro__):
        constraints.update(vars(klass).get("_parameter_constraints", {}))
    return constraints


def validate_parameters(constraints: Mapping[str, Sequence[Constraint]], params: Mapping[str, Any]) -> None:
    """`ValueError` naming the first parameter of `params` that satisfies none of its `constraints` (parameters
    without an entry, and entries without a parameter, are not checked)."""
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if not any(constraint.is_satisfied_by(value, params) for constraint in allowed):
            described = " or ".join(constraint.describe(params) for constraint in allowed)
            raise UserError(f"`{name}` must be {described}, got {value!r}.")


def check_latents(latents, channels: int, patch_size: Tuple[int, int], finite: bool = True) -> None:
    """`ValueError` naming `latents` unless it is a floating-point `[B, channels, H, W]` tensor whose H and W
    are multiples of `patch_size`, and (with `finite`, one device-to-host sync) has no NaN or infinity."""
    if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise UserError(f"`latents` must be a tensor [B, C, H, W], got {shape}.")
    if latents.shape[1] != channels:
        raise UserError(
            f"`latents` must have {channels} channels ([B, {channels}, H, W]), got shape {tuple(latents.shape)}."
        )
    ph, pw = patch_size
    if latents.shape[2] % ph or latents.shape[3] % pw:
        raise UserError(
            f"`latents` height and width {tuple(latents.shape[2:])} must be divisible by `patch_size` ({ph}, {pw})."
        )
    if not latents.is_floating_point():
        raise UserError(f"`latents` must be a floating-point tensor, got {latents.dtype}.")
    if finite and not bool(torch.isfinite(latents).all()):
        raise UserError("`latents` contains NaN or infinite values; nothing was coded or updated.")


def check_indices(indices: torch.Tensor, width: int, what: str) -> None:
    """`ValueError` unless `indices` is `[N, width]` (`what` says what a column is)."""
    if indices.dim() != 2 or indices.shape[1] != width:
        raise UserError(f"`indices` must be [N, {width}] ({what}), got {tuple(indices.shape)}.")
