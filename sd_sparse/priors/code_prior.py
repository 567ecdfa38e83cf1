"""`CodePrior`: an autoregressive prior over the codes of any bottleneck, for generation and entropy coding.

The codes of a batch of latents are a grid of coded vectors (cells: `B × H/P_H × W/P_W`), each holding S
events. The prior factorises their probability in raster order of the cells and, inside a cell, slot by slot:

- **spatial context** (Minnen et al. 2018, the context model of learned image codecs): a masked `k × k`
  window of the cells already coded (the `k//2` rows above, the `k//2` cells to the left) is embedded and
  mapped by a two-layer MLP to a context vector `c`;
- **copy path**: for every atom, the heads also see whether the four nearest coded cells use it and with which
  level (what the summed window embedding blurs);
- **depth** (RQ-Transformer's split of space and depth, with a deep-sets state instead of a transformer):
  the state of slot s is `c + Σ_{i<s} e(event_i)`; a one-hidden-layer head gives the distribution of the
  slot's atom (sparse codes: an atom above the previous one, or END) and, for quantized coefficients, a
  second head the distribution of its level given the atom.

Which events a cell holds depends on the bottleneck (`CodePrior.from_bottleneck`):

- **sets** (sparse codes with quantized coefficients, stored in canonical order: atoms increasing, unused
  slots last): `(atom, level)` pairs, then END when fewer than S slots are used;
- **slots** (VQ: one index; RVQ: one per stage; scalar quantizers: one per dimension; unquantized sparse
  codes): S indices, slot s with its own embedding table (unquantized coefficients stay raw floats).

A residual (`DictionaryBottleneck(residual_step=...)`) stays coded by the bottleneck's own tables.

It is a diffusers `ModelMixin` / `ConfigMixin`: `save_pretrained` / `from_pretrained` / `push_to_hub`.
`forward(codes)` gives the training loss (bits); `sample(bottleneck, ...)` draws codes; coding a codes file
with it (`codes.to_bytes(bottleneck, prior=prior)`) runs the fixed-point copy of the network
(`sd_sparse.priors.fixed_point`), so the file decodes bit-exactly on any machine and thread count.
No attention: a softmax over positions has no exact integer form, and the masked-convolution context is the
one learned image codecs use for exactly this job.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..codec.codes import Codes
from ..codec.quantization import LEVEL_DTYPE, check_value_bits, level_range
from ..errors import UserError
from . import fixed_point

__all__ = ["CodePrior", "CodePriorOutput", "code_events"]

LN2 = math.log(2.0)
#: the cells a copy path looks at: left, upper left, above, upper right (all coded before the current one)
NEIGHBOURS = ((0, -1), (-1, -1), (-1, 0), (-1, 1))


@dataclass
class CodePriorOutput(BaseOutput):
    """The prior's cost of a batch of codes.

    Args:
        loss (`torch.Tensor`, scalar): mean bits per latent position (what training minimises).
        bits (`torch.Tensor` `[B]`): bits of each image's codes (video codes: of each frame).
    """

    loss: torch.Tensor
    bits: torch.Tensor


@dataclass
class CodeEvents:
    """The events of codes as a grid: `atoms`, `levels` `[B, H_c, W_c, S]` (long; levels signed, 0 without
    quantized coefficients), `counts` `[B, H_c, W_c]` (used slots of each cell)."""

    atoms: torch.Tensor
    levels: torch.Tensor
    counts: torch.Tensor


def support_counts(indices: torch.Tensor) -> torch.Tensor:
    """Length of the strictly increasing prefix of each row of `indices` `[..., S]` (at least 1)."""
    if indices.shape[-1] == 1:
        return torch.ones(indices.shape[:-1], dtype=torch.long, device=indices.device)
    increasing = (indices[..., 1:] > indices[..., :-1]).long()
    return 1 + increasing.cumprod(-1).sum(-1)


def code_events(codes: Codes, sets: bool) -> CodeEvents:
    """The event grid of `codes` (`sets`: canonical supports; otherwise every slot is an event)."""
    b, _, h, w = codes.latent_shape
    ph, pw = codes.patch_size
    S = codes.sparsity
    atoms = codes.indices.long().reshape(b, h // ph, w // pw, S)
    if codes.levels is not None:
        levels = codes.levels.long().reshape(b, h // ph, w // pw, S)
    else:
        levels = torch.zeros_like(atoms)
    return _events(atoms, levels, sets)


def _events(atoms: torch.Tensor, levels: torch.Tensor, sets: bool) -> CodeEvents:
    S = atoms.shape[-1]
    if sets:
        counts = support_counts(atoms)
        unused = torch.arange(S, device=atoms.device) >= counts[..., None]
        if bool((atoms[unused] != 0).any()) or bool((levels[unused] != 0).any()):
            raise UserError(
                "`codes` are not in canonical order (atoms increasing, unused slots 0): make them with the "
                "bottleneck's `encode`."
            )
    else:
        counts = torch.full(atoms.shape[:-1], S, dtype=torch.long, device=atoms.device)
    return CodeEvents(atoms, levels, counts)


# -- the two arithmetics the network is evaluated in -------------------------------------------------------
class _FloatArithmetic:
    """The network as it trains: the module's float parameters, autograd."""

    def __init__(self, model: CodePrior):
        self.model = model

    def embed(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, name)(index)  # the module's forward: its hooks (layerwise casting) run

    def scaled(self, name: str, index: torch.Tensor, levels: torch.Tensor, unit: int) -> torch.Tensor:
        """Rows `index` of the table `name`, each times its `levels / unit`."""
        rows = self.embed(name, index)  # the scale in the table's dtype: a half-precision state stays half
        return rows * (levels.to(torch.float32) / unit).unsqueeze(-1).to(rows.dtype)

    def linear(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, name)(inputs)

    def zeros(self, shape, device) -> torch.Tensor:
        return torch.zeros(shape, device=device, dtype=self.model.dtype)

    def fraction(self, values: torch.Tensor, divisor: int) -> torch.Tensor:
        """Integers `values` / `divisor` as activations."""
        return values.to(self.model.dtype) / divisor

    def relu(self, values: torch.Tensor) -> torch.Tensor:
        return F.relu(values)


class _IntegerArithmetic:
    """The fixed-point copy (`fixed_point`): float64 tensors holding integers, exact on every machine."""

    def __init__(self, model: CodePrior):
        self.tables = {}
        self.layers = {}
        for name, module in model.named_children():
            if isinstance(module, torch.nn.Embedding):
                self.tables[name] = torch.round(
                    module.weight.detach().double().cpu() * (1 << fixed_point.FRACTION_BITS)
                )
                self.tables[name].clamp_(-fixed_point.ACTIVATION_LIMIT, fixed_point.ACTIVATION_LIMIT)
            elif isinstance(module, torch.nn.Linear):
                bias = torch.round(module.bias.detach().double().cpu() * (1 << fixed_point.FRACTION_BITS))
                bias.clamp_(-fixed_point.ACTIVATION_LIMIT, fixed_point.ACTIVATION_LIMIT)
                self.layers[name] = (fixed_point.quantize_weight(module.weight.cpu()), bias)
        self.exp_table = fixed_point.exp_table()

    def embed(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return self.tables[name][index.cpu()]

    def scaled(self, name: str, index: torch.Tensor, levels: torch.Tensor, unit: int) -> torch.Tensor:
        return torch.floor(self.embed(name, index) * levels.cpu().double().unsqueeze(-1) / unit)

    def linear(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        weight, bias = self.layers[name]
        limit = fixed_point.ACTIVATION_LIMIT
        flat = inputs.reshape(-1, inputs.shape[-1]).clamp(-limit, limit)
        return fixed_point.fixed_linear(flat, weight, bias).reshape(*inputs.shape[:-1], -1)

    def zeros(self, shape, device) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64)

    def fraction(self, values: torch.Tensor, divisor: int) -> torch.Tensor:
        return torch.floor(values.cpu().double() * (1 << fixed_point.FRACTION_BITS) / divisor)

    def relu(self, values: torch.Tensor) -> torch.Tensor:
        return values.clamp_min(0)

    def digest(self) -> str:
        """16 hex digits of the fixed-point weights: what a file coded with them depends on."""
        h = hashlib.sha256()
        for group in (self.tables, self.layers):
            for name in sorted(group):
                for tensor in group[name] if isinstance(group[name], tuple) else (group[name],):
                    h.update(name.encode())
                    h.update(tensor.to(torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]


# -- the model -----------------------------------------------------------------------------------------------
class CodePrior(ModelMixin, ConfigMixin):
    r"""Autoregressive prior over the codes of one bottleneck (see the module docstring for the factorisation).

    Parameters:
        num_atoms (`int`): K, the atoms / codes an index refers to (`bottleneck.num_atoms`).
        sparsity (`int`): S, the slots of a coded vector (`Codes.sparsity`: 1 for VQ, the stages of RVQ).
        value_bits (`int`, *optional*): bits of the quantized coefficients (levels are modelled), or None.
        sets (`bool`, defaults to `False`): the codes are canonical supports (sparse codes with quantized
            coefficients): atoms increasing, then END; otherwise every slot is an index of its own table.
        embedding_dim (`int`, defaults to 32): E, the embedding of a coded cell in the context window.
        hidden_dim (`int`, defaults to 128): the width of the context MLP, the depth state and the heads.
        context_size (`int`, defaults to 5): k of the masked `k × k` context window (odd).
        copy_neighbors (`bool`, defaults to `True`): let the heads see, for every atom, whether the four
            nearest coded cells (left, upper left, above, upper right) use it and with which level: a copy
            path that the summed window embedding blurs.
        bottleneck_class (`str`, *optional*), bottleneck_fingerprint (`str`, *optional*): the bottleneck the
            prior models (`from_bottleneck` fills them in); coding checks them.
    """

    @register_to_config
    def __init__(
        self,
        num_atoms: int,
        sparsity: int,
        value_bits: Optional[int] = None,
        sets: bool = False,
        embedding_dim: int = 32,
        hidden_dim: int = 128,
        context_size: int = 5,
        copy_neighbors: bool = True,
        bottleneck_class: Optional[str] = None,
        bottleneck_fingerprint: Optional[str] = None,
    ):
        super().__init__()
        for name, value, low in (
            ("num_atoms", num_atoms, 1),
            ("sparsity", sparsity, 1),
            ("embedding_dim", embedding_dim, 1),
            ("hidden_dim", hidden_dim, 1),
            ("context_size", context_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"`{name}` must be an int >= {low}, got {value!r}.")
        if context_size % 2 == 0:
            raise UserError(f"`context_size` must be odd, got {context_size}.")
        check_value_bits(value_bits)
        if sets and sparsity > num_atoms:
            raise UserError(f"`sparsity` ({sparsity}) cannot exceed `num_atoms` ({num_atoms}) for sets.")
        radius = context_size // 2
        self.offsets: List[Tuple[int, int]] = [
            (dy, dx) for dy in range(-radius, 0) for dx in range(-radius, radius + 1)
        ]
        self.offsets += [(0, dx) for dx in range(-radius, 0)]
        if len(self.offsets) * embedding_dim > fixed_point.MAX_FAN_IN or hidden_dim > fixed_point.MAX_FAN_IN:
            raise UserError(
                f"`embedding_dim` · context cells ({len(self.offsets)}) and `hidden_dim` must be at most "
                f"{fixed_point.MAX_FAN_IN} (the fixed-point network's fan-in)."
            )
        tables = 1 if sets else sparsity
        E, H = embedding_dim, hidden_dim
        self.cell_atoms = torch.nn.Embedding(tables * num_atoms, E)
        self.context_in = torch.nn.Linear(len(self.offsets) * E, H)
        self.context_out = torch.nn.Linear(H, H)
        self.depth_atoms = torch.nn.Embedding(tables * num_atoms, H)
        self.atom_slots = torch.nn.Embedding(sparsity, H)
        self.atom_hidden = torch.nn.Linear(H, H)
        self.atom_out = torch.nn.Linear(H, num_atoms + (1 if sets else 0))
        if value_bits is not None:
            self.cell_levels = torch.nn.Embedding(num_atoms, E)
            self.cell_magnitudes = torch.nn.Embedding(num_atoms, E)
            self.depth_levels = torch.nn.Embedding(num_atoms, H)
            self.depth_magnitudes = torch.nn.Embedding(num_atoms, H)
            self.level_slots = torch.nn.Embedding(sparsity, H)
            self.level_hidden = torch.nn.Linear(H, H)
            self.level_out = torch.nn.Linear(H, 1 << value_bits)
        if copy_neighbors:
            self.copy_atoms = torch.nn.Linear(2 * len(NEIGHBOURS), 1)
            if value_bits is not None:
                self.copy_levels = torch.nn.Linear(3 * len(NEIGHBOURS), H)
        for table in (self.cell_atoms, self.depth_atoms, self.atom_slots):
            torch.nn.init.normal_(table.weight, std=0.1)
        if value_bits is not None:
            for table in (self.cell_levels, self.cell_magnitudes, self.depth_levels, self.depth_magnitudes):
                torch.nn.init.normal_(table.weight, std=0.1)
            torch.nn.init.normal_(self.level_slots.weight, std=0.1)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_bottleneck(
        cls, bottleneck, embedding_dim: int = 32, hidden_dim: int = 128, context_size: int = 5
    ) -> CodePrior:
        """A prior for the codes of `bottleneck` (any sd_sparse bottleneck): K, S, value bits and event kind
        read from it (S from the codes of one zero patch)."""
        from ..bottlenecks.base import Bottleneck

        if not isinstance(bottleneck, Bottleneck):
            raise UserError(f"`bottleneck` must be an sd_sparse bottleneck, got {type(bottleneck).__name__}.")
        channels = bottleneck.config.latent_channels
        ph, pw = bottleneck.patch_size
        probe = bottleneck.encode(torch.zeros(1, channels, ph, pw, device=bottleneck.device, dtype=bottleneck.dtype))
        value_bits = bottleneck.value_bits
        return cls(
            num_atoms=bottleneck.num_atoms,
            sparsity=probe.sparsity,
            value_bits=value_bits,
            sets=value_bits is not None and probe.coefficients is not None,
            embedding_dim=embedding_dim,
            hidden_dim=hidden_dim,
            context_size=context_size,
            bottleneck_class=bottleneck.coding_class_name,
            bottleneck_fingerprint=bottleneck.config_fingerprint,
        )

    def check_bottleneck(self, bottleneck) -> None:
        """`ValueError` unless this prior models the codes of `bottleneck` (class, config, K, value bits)."""
        name, fingerprint = bottleneck.coding_class_name, bottleneck.config_fingerprint
        mine = (self.config.bottleneck_class, self.config.bottleneck_fingerprint)
        if mine != (None, None) and mine != (name, fingerprint):
            raise UserError(
                f"the prior models the codes of {mine[0]} (config {mine[1]}), not of this {name} (config "
                f"{fingerprint}): use the prior trained on this bottleneck's codes."
            )
        if bottleneck.num_atoms != self.config.num_atoms or bottleneck.value_bits != self.config.value_bits:
            raise UserError(
                f"the prior has K={self.config.num_atoms}, value_bits={self.config.value_bits}; the bottleneck "
                f"K={bottleneck.num_atoms}, value_bits={bottleneck.value_bits}."
            )

    def check_codes(self, codes: Codes) -> None:
        """`ValueError` naming the field unless `codes` have this prior's K and S."""
        if not isinstance(codes, Codes):
            raise UserError(f"`codes` must be `Codes` (a bottleneck's `encode`), got {type(codes).__name__}.")
        if codes.num_atoms != self.config.num_atoms or codes.sparsity != self.config.sparsity:
            raise UserError(
                f"`codes` have K={codes.num_atoms}, S={codes.sparsity}; this prior models K={self.config.num_atoms}, "
                f"S={self.config.sparsity}."
            )
        if (codes.levels is not None) != (self.config.value_bits is not None):
            raise UserError("`codes` and the prior disagree on quantized coefficients (`levels`).")

    # -- the network, in either arithmetic ----------------------------------------------------------------
    @property
    def _sets(self) -> bool:
        return bool(self.config.sets)

    @property
    def _level_unit(self) -> int:
        """Levels enter the embeddings as `level / 2^(b−3)` (a power of two: exact in fixed point), about ±4."""
        return 1 << max(self.config.value_bits - 3, 0) if self.config.value_bits is not None else 1

    def _level_parts(self, ar, stage: str, atoms: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """`[..., dim]`: an atom's level and its magnitude, each along a learned direction of the atom
        (`stage`: "cell" for the context window, "depth" for the state inside a cell)."""
        unit = self._level_unit
        signed = ar.scaled(f"{stage}_levels", atoms, levels, unit)
        return signed + ar.scaled(f"{stage}_magnitudes", atoms, levels.abs(), unit)

    def _table_rows(self, atoms: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Row of each atom in the per-slot embedding tables (slots mode: slot s uses rows s·K…)."""
        return atoms if self._sets else atoms + slot * self.config.num_atoms

    def _cell_embedding(self, ar, events: CodeEvents) -> torch.Tensor:
        """`[..., E]`: the sum of the used slots' atom (and scaled level) embeddings."""
        S = self.config.sparsity
        slots = torch.arange(S, device=events.atoms.device)
        used = slots < events.counts[..., None]
        rows = self._table_rows(events.atoms, slots)
        parts = ar.embed("cell_atoms", rows)
        if self.config.value_bits is not None:
            parts = parts + self._level_parts(ar, "cell", events.atoms, events.levels)
        return (parts * used[..., None].to(parts.device, parts.dtype)).sum(-2)

    def _windows(self, padded: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """Context windows `[..., n·E]` from the padded embedding grid `[B, r + H_c, W_c + 2r, E]`."""
        r = self.config.context_size // 2
        parts = []
        for dy, dx in self.offsets:
            parts.append(padded[:, r + dy + rows.start : r + dy + rows.stop, r + dx + cols.start : r + dx + cols.stop])
        return torch.cat(parts, dim=-1)

    def _pad(self, embeddings: torch.Tensor) -> torch.Tensor:
        r = self.config.context_size // 2
        return F.pad(embeddings, (0, 0, r, r, r, 0))

    def _context(self, ar, windows: torch.Tensor) -> torch.Tensor:
        return ar.relu(ar.linear("context_out", ar.relu(ar.linear("context_in", windows))))

    def _copy_bonus(self, ar, near: tuple) -> torch.Tensor:
        """The copy path's logit bonus of each atom, `[..., T, K(+1)]` (sets: one row for every slot, END
        none; slots: one row per slot), from the neighbours' maps `[..., n, T, K]`."""
        presence, levels = near
        features = torch.cat([presence, levels.abs()], dim=-3).movedim(-3, -1)  # [..., T, K, 2n]
        bonus = ar.linear("copy_atoms", features)[..., 0]
        if self._sets:
            bonus = torch.cat([bonus, torch.zeros_like(bonus[..., :1])], dim=-1)
        return bonus

    def _atom_logits(self, ar, states: torch.Tensor, slots: torch.Tensor, bonus: Optional[torch.Tensor]):
        """Logits `[..., S', K(+1)]` of the atoms of slots `slots` `[S']` from their states `[..., S', H]`
        (and the copy bonus `[..., T, K(+1)]`: T = 1, or the slots' own rows)."""
        hidden = ar.linear("atom_hidden", states + ar.embed("atom_slots", slots))
        logits = ar.linear("atom_out", ar.relu(hidden))
        return logits if bonus is None else logits + bonus

    def _level_logits(self, ar, states: torch.Tensor, slots: torch.Tensor, atoms: torch.Tensor, near):
        """Logits `[..., S', 2^b]` of the levels of slots `slots` `[S']` whose atoms are `atoms` `[..., S']`,
        from their states `[..., S', H]` (and the neighbours' maps: what they hold of those atoms)."""
        hidden = ar.linear("level_hidden", states + ar.embed("level_slots", slots))
        if near is not None:
            index = atoms.to(near[0].device).unsqueeze(-2)
            index = index.expand(*atoms.shape[:-1], near[0].shape[-3], atoms.shape[-1])
            presence, levels = (m[..., 0, :].gather(-1, index).transpose(-1, -2) for m in near)  # [..., S', n]
            hidden = hidden + ar.linear("copy_levels", torch.cat([presence, levels, levels.abs()], dim=-1))
        return ar.linear("level_out", ar.relu(hidden))

    def _own_maps(self, ar, events: CodeEvents) -> tuple:
        """Each cell's own events as dense maps over the atoms, `[..., T, K]`: presence (1) and level / unit
        (sets: T = 1, every used slot; slots: one row per slot)."""
        S, K = self.config.sparsity, self.config.num_atoms
        T = 1 if self._sets else S
        atoms = events.atoms
        used = (torch.arange(S, device=atoms.device) < events.counts[..., None]).long()
        slot_rows = torch.zeros_like(atoms) if self._sets else torch.arange(S, device=atoms.device).expand_as(atoms)
        where = slot_rows * K + atoms  # the map entry of each slot, [..., S]
        presence = torch.zeros(*atoms.shape[:-1], T * K, dtype=torch.long, device=atoms.device)
        levels = torch.zeros_like(presence)
        presence.scatter_add_(-1, where, used)
        levels.scatter_add_(-1, where, events.levels * used)
        shape = (*atoms.shape[:-1], T, K)
        return ar.fraction(presence.view(shape), 1), ar.fraction(levels.view(shape), self._level_unit)

    def _neighbour_maps(self, own: tuple, rows: slice, cols: slice) -> tuple:
        """The maps `[B, h, w, n, T, K]` of the `NEIGHBOURS` of the cells `rows × cols`, from `own` maps
        `[B, 1 + H_c, W_c + 2, T, K]` padded with zeros (one row above, one column each side)."""
        out = []
        for grid in own:
            parts = [
                grid[:, 1 + dy + rows.start : 1 + dy + rows.stop, 1 + dx + cols.start : 1 + dx + cols.stop]
                for dy, dx in NEIGHBOURS
            ]
            out.append(torch.stack(parts, dim=3))
        return tuple(out)

    @staticmethod
    def _pad_maps(maps: tuple) -> tuple:
        return tuple(F.pad(m, (0, 0, 0, 0, 1, 1, 1, 0)) for m in maps)

    def _atom_valid(self, previous: torch.Tensor, slot: int) -> torch.Tensor:
        """`[M, K(+1)]`: sets allow atoms above the previous one and END after the first slot."""
        K = self.config.num_atoms
        if not self._sets:
            return torch.ones(previous.shape[0], K, dtype=torch.bool, device=previous.device)
        valid = torch.arange(K + 1, device=previous.device)[None, :] > previous[:, None]
        valid[:, K] = slot > 0
        return valid

    def _all_logits(self, ar, events: CodeEvents):
        """Teacher-forced logits of every event: atoms `[B, H_c, W_c, S, K(+1)]`, levels `[..., S, 2^b]` or None."""
        S = self.config.sparsity
        height, width = events.atoms.shape[1:3]
        embeddings = self._cell_embedding(ar, events)
        context = self._context(ar, self._windows(self._pad(embeddings), slice(0, height), slice(0, width)))
        slots = torch.arange(S, device=events.atoms.device)
        used = (slots < events.counts[..., None])[..., None]
        rows = self._table_rows(events.atoms, slots)
        atom_step = ar.embed("depth_atoms", rows) * used.to(context.dtype)
        step = atom_step
        if self.config.value_bits is not None:
            step = step + self._level_parts(ar, "depth", events.atoms, events.levels) * used.to(context.dtype)
        before = torch.cumsum(step, dim=-2) - step  # Σ_{i<s}, exact in the integer arithmetic
        states = context.unsqueeze(-2) + before
        near = bonus = None
        if self.config.copy_neighbors:
            near = self._neighbour_maps(self._pad_maps(self._own_maps(ar, events)), slice(0, height), slice(0, width))
            bonus = self._copy_bonus(ar, near)
        atom_logits = self._atom_logits(ar, states, slots, bonus)
        level_logits = None
        if self.config.value_bits is not None:
            level_logits = self._level_logits(ar, states + atom_step, slots, events.atoms, near)
        return atom_logits, level_logits

    def _targets(self, events: CodeEvents):
        """Atom targets `[B, H_c, W_c, S]` (END where a support ends), which atom / level events exist, and
        the previous atom of each slot (−1 first)."""
        S, K = self.config.sparsity, self.config.num_atoms
        slots = torch.arange(S, device=events.atoms.device)
        level_coded = slots < events.counts[..., None]
        if self._sets:
            atom_coded = slots <= events.counts[..., None]
            targets = torch.where(level_coded, events.atoms, torch.full_like(events.atoms, K))
        else:
            atom_coded = level_coded
            targets = events.atoms
        previous = torch.cat([torch.full_like(events.atoms[..., :1], -1), events.atoms[..., :-1]], dim=-1)
        return targets, atom_coded, level_coded, previous

    # -- training ------------------------------------------------------------------------------------
    def forward(self, codes: Codes, return_dict: bool = True):
        """Bits of `codes` under the prior (teacher forcing, every event at once).

        Args:
            codes (`Codes`): made by the prior's bottleneck; N = B · H_c · W_c coded vectors.

        Returns:
            `CodePriorOutput` (or `(loss, bits)`): the mean bits per latent position and the bits `[B]` of
            each image's codes.
        """
        self.check_codes(codes)
        events = code_events(codes.to(self.device), self._sets)
        ar = _FloatArithmetic(self)
        atom_logits, level_logits = self._all_logits(ar, events)
        targets, atom_coded, level_coded, previous = self._targets(events)
        S = self.config.sparsity
        valid = torch.stack(
            [self._atom_valid(previous[..., s].reshape(-1), s).reshape(*previous.shape[:-1], -1) for s in range(S)],
            dim=-2,
        )
        atom_log_probs = atom_logits.float().masked_fill(~valid, float("-inf")).log_softmax(-1)
        nats = -atom_log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        nats = torch.where(atom_coded, nats, torch.zeros_like(nats))
        if level_logits is not None:
            low, _ = level_range(self.config.value_bits)
            symbols = (events.levels - low).clamp_min(0)
            level_nats = -level_logits.float().log_softmax(-1).gather(-1, symbols.unsqueeze(-1)).squeeze(-1)
            nats = nats + torch.where(level_coded, level_nats, torch.zeros_like(level_nats))
        bits = nats.flatten(1).sum(1) / LN2
        ph, pw = codes.patch_size
        positions = events.atoms.shape[1] * events.atoms.shape[2] * ph * pw
        loss = bits.mean() / positions
        if not return_dict:
            return loss, bits
        return CodePriorOutput(loss=loss, bits=bits)

    # -- generation and decoding: cell by cell ---------------------------------------------------------
    def _generate(self, ar, batch: int, height: int, width: int, choose: Callable, device) -> CodeEvents:
        """Events `[batch, height, width, S]` drawn cell by cell in raster order; `choose(kind, logits, valid)`
        picks the symbols of the active rows (`kind`: "atom" or "level")."""
        S, K, E = self.config.sparsity, self.config.num_atoms, self.config.embedding_dim
        r = self.config.context_size // 2
        padded = ar.zeros((batch, r + height, width + 2 * r, E), device)
        atoms = torch.zeros(batch, height, width, S, dtype=torch.long, device=device)
        levels = torch.zeros_like(atoms)
        counts = torch.full((batch, height, width), S, dtype=torch.long, device=device)
        low = level_range(self.config.value_bits)[0] if self.config.value_bits is not None else 0
        maps = None
        if self.config.copy_neighbors:
            T = 1 if self._sets else S
            maps = tuple(ar.zeros((batch, 1 + height, width + 2, T, K), device) for _ in range(2))
        for i in range(height):
            for j in range(width):
                window = self._windows(padded, slice(i, i + 1), slice(j, j + 1))[:, 0, 0]
                state = self._context(ar, window)
                near = bonus = None
                if maps is not None:
                    near = tuple(m[:, 0, 0] for m in self._neighbour_maps(maps, slice(i, i + 1), slice(j, j + 1)))
                    bonus = self._copy_bonus(ar, near)  # [batch, T, K(+1)]
                active = torch.ones(batch, dtype=torch.bool, device=device)
                previous = torch.full((batch,), -1, dtype=torch.long, device=device)
                for s in range(S):
                    rows = active.nonzero().squeeze(1)
                    if rows.numel() == 0:
                        break
                    slot = torch.tensor([s], device=state.device)
                    here = None if bonus is None else bonus[rows.to(bonus.device)][:, [0 if self._sets else s]]
                    logits = self._atom_logits(ar, state[rows.to(state.device)].unsqueeze(1), slot, here)[:, 0]
                    symbols = choose("atom", logits, self._atom_valid(previous[rows], s).to(logits.device)).to(device)
                    if self._sets:
                        ended = symbols == K
                        counts[rows[ended], i, j] = s
                        active[rows[ended]] = False
                        rows, symbols = rows[~ended], symbols[~ended]
                        if rows.numel() == 0:
                            break
                    atoms[rows, i, j, s] = symbols
                    previous[rows] = symbols
                    table_rows = self._table_rows(symbols, torch.tensor(s, device=device))
                    step = ar.embed("depth_atoms", table_rows)
                    at = rows.to(state.device)
                    if self.config.value_bits is not None:
                        here = None if near is None else tuple(m[at] for m in near)
                        level_state = (state[at] + step).unsqueeze(1)
                        level_logits = self._level_logits(ar, level_state, slot, symbols[:, None], here)[:, 0]
                        valid = torch.ones(level_logits.shape, dtype=torch.bool, device=level_logits.device)
                        level = choose("level", level_logits, valid).to(device) + low
                        levels[rows, i, j, s] = level
                        step = step + self._level_parts(ar, "depth", symbols, level)
                    state = state.clone()
                    state[at] = state[at] + step
                cell = CodeEvents(atoms[:, i, j], levels[:, i, j], counts[:, i, j])
                padded[:, r + i, r + j] = self._cell_embedding(ar, cell).to(padded.device)
                if maps is not None:
                    for grid, own in zip(maps, self._own_maps(ar, cell)):
                        grid[:, 1 + i, 1 + j] = own.to(grid.device)
        return CodeEvents(atoms, levels, counts)

    def _codes_from_events(self, events: CodeEvents, bottleneck, latent_shape) -> Codes:
        """`Codes` of `bottleneck` holding `events` (coefficients dequantized by the bottleneck)."""
        S = self.config.sparsity
        indices = events.atoms.reshape(-1, S)
        layout = torch.tensor([*latent_shape, *bottleneck.patch_size, bottleneck.num_atoms], dtype=torch.long)
        signature = torch.tensor(
            list(f"{bottleneck.coding_class_name}:{bottleneck.config_fingerprint}".encode()), dtype=torch.uint8
        )
        levels = coefficients = None
        if self.config.value_bits is not None:
            levels = events.levels.reshape(-1, S).to(LEVEL_DTYPE)
            coefficients = bottleneck.dequantize_values(indices.to(bottleneck.device), levels.to(bottleneck.device))
        elif bottleneck.value_bits is None and self._sets:
            raise UserError("unquantized sparse codes cannot be sampled: their coefficients are not modelled.")
        return Codes(indices=indices, coefficients=coefficients, layout=layout, signature=signature, levels=levels)

    @torch.no_grad()
    def sample(
        self,
        bottleneck,
        height: int,
        width: int,
        num_images: int = 1,
        generator: Optional[torch.Generator] = None,
        temperature: float = 1.0,
    ) -> Codes:
        """Draws `num_images` codes of latents `[num_images, C, height, width]` from the prior.

        Args:
            bottleneck: the prior's bottleneck (its codes; `bottleneck.decode(codes)` gives the latents).
            height (`int`), width (`int`): the latent size, multiples of the bottleneck's patch size.
            generator (`torch.Generator`, *optional*): the draws' source of randomness.
            temperature (`float`, defaults to 1.0): logits are divided by it (> 0).
        """
        self.check_bottleneck(bottleneck)
        if self.config.value_bits is None and self._sets:
            raise UserError("this prior models unquantized sparse codes: their coefficients cannot be sampled.")
        ph, pw = bottleneck.patch_size
        for name, value, patch in (("height", height, ph), ("width", width, pw)):
            if isinstance(value, bool) or not isinstance(value, int) or value < patch or value % patch:
                raise UserError(f"`{name}` must be a positive multiple of the patch size {patch}, got {value!r}.")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise UserError(f"`num_images` must be an int >= 1, got {num_images!r}.")
        if not temperature > 0:
            raise UserError(f"`temperature` must be > 0, got {temperature!r}.")

        def choose(kind, logits, valid):
            probabilities = (logits.float() / temperature).masked_fill(~valid, float("-inf")).softmax(-1)
            return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)

        events = self._generate(_FloatArithmetic(self), num_images, height // ph, width // pw, choose, self.device)
        channels = bottleneck.config.latent_channels
        return self._codes_from_events(events, bottleneck, (num_images, channels, height, width))

    # -- exact coding ----------------------------------------------------------------------------------
    def _integer(self) -> _IntegerArithmetic:
        return _IntegerArithmetic(self)

    @property
    def config_fingerprint(self) -> str:
        """16 hex digits of the prior's class and configuration."""
        public = {k: v for k, v in self.config.items() if not k.startswith("_")}
        text = json.dumps({"class": type(self).__name__, "config": public}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def coding_state_digest(self) -> str:
        """16 hex digits of the configuration and the fixed-point weights a codes file coded with this prior
        depends on (recorded in the file's header, checked on reading)."""
        return hashlib.sha256((self.config_fingerprint + self._integer().digest()).encode()).hexdigest()[:16]

    @torch.no_grad()
    def encode_events(self, encoder, indices: torch.Tensor, levels: Optional[torch.Tensor], grid) -> None:
        """Range-codes the events of codes (`indices`, `levels` `[N, S]`, N = B·H_c·W_c in `grid` order) with the
        fixed-point network's probabilities, cell by cell in raster order (the order `decode_events` reads)."""
        from ..codec import entropy

        batch, height, width = grid
        S = self.config.sparsity
        atoms = indices.long().cpu().reshape(batch, height, width, S)
        level_grid = torch.zeros_like(atoms) if levels is None else levels.long().cpu().reshape(batch, height, width, S)
        events = _events(atoms, level_grid, self._sets)
        ar = self._integer()
        atom_logits, level_logits = self._all_logits(ar, events)
        targets, atom_coded, level_coded, previous = self._targets(events)
        model = entropy.constriction().stream.model.Categorical(perfect=False)
        low = level_range(self.config.value_bits)[0] if self.config.value_bits is not None else 0
        for i in range(height):
            for j in range(width):
                for s in range(S):
                    rows = atom_coded[:, i, j, s]
                    if not bool(rows.any()):
                        break
                    valid = self._atom_valid(previous[rows, i, j, s], s)
                    frequencies = fixed_point.integer_frequencies(atom_logits[rows, i, j, s], valid, ar.exp_table)
                    encoder.encode(targets[rows, i, j, s].numpy().astype("int32"), model, frequencies.numpy())
                    rows = level_coded[:, i, j, s]
                    if level_logits is not None and bool(rows.any()):
                        logits = level_logits[rows, i, j, s]
                        every = torch.ones(logits.shape, dtype=torch.bool)
                        frequencies = fixed_point.integer_frequencies(logits, every, ar.exp_table)
                        symbols = (level_grid[rows, i, j, s] - low).numpy().astype("int32")
                        encoder.encode(symbols, model, frequencies.numpy())

    @torch.no_grad()
    def decode_events(self, decoder, grid) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Inverse of `encode_events`: `(indices [N, S], levels [N, S] int16 or None)` on the CPU."""
        from ..codec import entropy

        batch, height, width = grid
        S = self.config.sparsity
        model = entropy.constriction().stream.model.Categorical(perfect=False)
        ar = self._integer()

        def choose(kind, logits, valid):
            frequencies = fixed_point.integer_frequencies(logits, valid, ar.exp_table)
            return torch.from_numpy(decoder.decode(model, frequencies.numpy()).astype("int64"))

        events = self._generate(ar, batch, height, width, choose, torch.device("cpu"))
        levels = None if self.config.value_bits is None else events.levels.reshape(-1, S).to(LEVEL_DTYPE)
        return events.atoms.reshape(-1, S), levels
