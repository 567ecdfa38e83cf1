"""A frozen VAE's latents cached on disk: safetensors shards written by every rank, a JSON manifest, random
minibatches read row by row from the memory-mapped shards (never the whole cache in memory).

    DIR/manifest.json                        what produced the latents (VAE, data, transform), shape,
                                             dtype, count and the shards; written last: no manifest,
                                             no cache (an interrupted build is rebuilt)
    DIR/latents-<rank>-<chunk>.safetensors   tensor `latents` `[n, C, h, w]`, up to `shard_size` rows

    cache = prepare_latent_cache(DIR, setup, write_latents, accelerator)  # reuse, or build with write_latents
    batch = cache.sample(16, generator)                                   # [16, C, h, w] float32
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import UserError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_SHARD = re.compile(r"latents-\d{5}-\d{5}\.safetensors(\.tmp)?")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class LatentCacheWriter:
    """Appends latent batches `[B, C, h, w]` and writes one shard per `shard_size` rows.

    A shard is written to a `.tmp` file and renamed into place; at most `shard_size + B` rows are held.
    """

    def __init__(self, directory: str, rank: int = 0, shard_size: int = 1024, dtype: str = "float32"):
        if shard_size < 1:
            raise UserError(f"`shard_size` must be >= 1, got {shard_size}.")
        if dtype not in DTYPES:
            raise UserError(f"`dtype` must be one of {sorted(DTYPES)}, got {dtype!r}.")
        self.directory = directory
        self.rank = rank
        self.shard_size = shard_size
        self.dtype = DTYPES[dtype]
        self.rows = 0
        self._pending: List[torch.Tensor] = []
        self._pending_rows = 0
        self._shards = 0

    def add(self, latents: torch.Tensor) -> None:
        if latents.dim() != 4 or not torch.isfinite(latents).all():
            raise UserError(f"`latents` must be finite [B, C, h, w], got shape {tuple(latents.shape)}.")
        self._pending.append(latents.detach().to("cpu", self.dtype))
        self._pending_rows += latents.shape[0]
        while self._pending_rows >= self.shard_size:
            rows = torch.cat(self._pending)
            self._write(rows[: self.shard_size])
            rest = rows[self.shard_size :]
            self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def close(self) -> int:
        """Writes the last (partial) shard; returns the rows written by this writer."""
        if self._pending_rows:
            self._write(torch.cat(self._pending))
        self._pending, self._pending_rows = [], 0
        return self.rows

    def _write(self, rows: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = os.path.join(self.directory, f"latents-{self.rank:05d}-{self._shards:05d}.safetensors")
        save_file({"latents": rows.contiguous()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        self._shards += 1
        self.rows += rows.shape[0]


class LatentCache(Dataset):
    """The latents of a cache folder (see the module docstring), read lazily.

    `cache[i]` → `[C, h, w]` float32; `cache.batch(indices)` → `[B, C, h, w]`, opening each shard
    it needs once; `cache.sample(batch_size, generator)` draws rows uniformly (with replacement).
    Only the manifest and the row offsets of the shards stay in memory.
    """

    def __init__(self, directory: str):
        manifest = read_manifest(directory)
        if manifest is None:
            raise UserError(f"--cache_latents {directory} holds no {MANIFEST}: not a latent cache.")
        self.directory = directory
        self.manifest = manifest
        self.files = [os.path.join(directory, shard["file"]) for shard in manifest["shards"]]
        missing = [path for path in self.files if not os.path.isfile(path)]
        if missing:
            raise UserError(f"--cache_latents {directory} lacks {missing[0]}: pass --rebuild_cache to rebuild it.")
        rows = torch.tensor([0] + [int(shard["rows"]) for shard in manifest["shards"]])
        self.offsets = torch.cumsum(rows, 0)  # [S + 1]: the first row of each shard, then the total
        self.shape = tuple(manifest["latents"]["shape"])
        if len(self) == 0:
            raise UserError(f"--cache_latents {directory} holds no latents.")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.batch([index])[0]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The rows `indices` (in that order) as `[B, C, h, w]` float32 on the CPU."""
        from safetensors import safe_open

        indices = torch.as_tensor(indices, dtype=torch.long).flatten()
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise IndexError(f"latent cache rows are 0..{len(self) - 1}, got {indices.tolist()}.")
        out = torch.empty((len(indices), *self.shape), dtype=torch.float32)
        shards = torch.searchsorted(self.offsets, indices, right=True) - 1
        for shard in shards.unique().tolist():
            positions = (shards == shard).nonzero().flatten().tolist()
            with safe_open(self.files[shard], framework="pt") as f:
                rows = f.get_slice("latents")
                for position in positions:
                    row = int(indices[position] - self.offsets[shard])
                    out[position] = rows[row : row + 1][0].float()
        return out

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """`batch_size` rows drawn uniformly with replacement from `generator`: `[B, C, h, w]` float32."""
        return self.batch(torch.randint(0, len(self), (batch_size,), generator=generator))


def read_manifest(directory: str) -> Optional[Dict]:
    """The manifest of a cache folder, or None when there is none (no cache, or an interrupted build)."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"--cache_latents {directory}: cannot read {MANIFEST} ({err}); pass --rebuild_cache.") from None


def _flatten(value, prefix: str = "") -> Dict[str, object]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def setup_differences(found: Dict, expected: Dict) -> List[str]:
    """`key: cached value != expected value` for every field of two setups (nested dicts) that differs."""
    old, new = _flatten(found), _flatten(expected)
    return [
        f"{key}: {old.get(key)!r} != {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _clear(directory: str) -> None:
    """Removes a cache's manifest (first: a crash then leaves no cache, never a wrong one) and shards."""
    path = os.path.join(directory, MANIFEST)
    if os.path.exists(path):
        os.remove(path)
    for name in os.listdir(directory):
        if _SHARD.fullmatch(name):
            os.remove(os.path.join(directory, name))


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def prepare_latent_cache(
    directory: str,
    setup: Dict,
    write_latents: Callable[[LatentCacheWriter], None],
    accelerator=None,
    shard_size: int = 1024,
    dtype: str = "float32",
    rebuild: bool = False,
) -> LatentCache:
    """The cache in `directory`: reused when its manifest was made by `setup`, built otherwise.

    Args:
        setup: what produces the latents (JSON-able, nested dicts), compared field by field with the
            manifest's; `dtype` is added to it.
        write_latents: `write_latents(writer)` encodes this rank's share of the images and `add`s the
            latents; every rank calls it (with its own writer) when the cache is built.
        rebuild: replace a cache made by another setup; without it such a cache is an error naming the
            fields that differ. A folder without a manifest (an interrupted build) is always rebuilt.

    Every rank must call this (it waits for the others); the folder must be visible to all ranks.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--cache_latents {directory} is not a folder.")
    setup = {**setup, "dtype": dtype}
    found = read_manifest(directory) if os.path.isdir(directory) else None
    if found is not None and not rebuild:
        differences = setup_differences(found.get("setup", {}), setup)
        if found.get("format") != FORMAT_VERSION:
            differences.insert(0, f"format: {found.get('format')!r} != {FORMAT_VERSION}")
        if not differences:
            logger.info("reusing %d cached latents in %s", found["latents"]["count"], directory)
            return LatentCache(directory)
        raise UserError(
            f"--cache_latents {directory} holds latents of another setup ({'; '.join(differences)}): "
            "pass --rebuild_cache to replace them, or another folder."
        )
    main = accelerator is None or accelerator.is_main_process
    rank = accelerator.process_index if accelerator is not None else 0
    _barrier(accelerator)  # every rank has read the old manifest before it goes
    if main:
        os.makedirs(directory, exist_ok=True)
        _clear(directory)
        logger.info("caching latents in %s", directory)
    _barrier(accelerator)
    writer = LatentCacheWriter(directory, rank, shard_size, dtype)
    write_latents(writer)
    rows = torch.tensor(writer.close())
    if accelerator is not None and accelerator.num_processes > 1:
        rows = accelerator.reduce(rows.to(accelerator.device), reduction="sum").cpu()  # also a barrier
    if int(rows) == 0:
        raise UserError(f"no latents were cached in {directory}: no training image was read.")
    if main:
        _write_manifest(directory, setup, dtype, accelerator.num_processes if accelerator is not None else 1)
    _barrier(accelerator)
    return LatentCache(directory)


def _write_manifest(directory: str, setup: Dict, dtype: str, world_size: int) -> None:
    from safetensors import safe_open

    shards, shape = [], None
    for name in sorted(n for n in os.listdir(directory) if _SHARD.fullmatch(n) and not n.endswith(".tmp")):
        with safe_open(os.path.join(directory, name), framework="pt") as f:
            rows_shape = f.get_slice("latents").get_shape()
        shape = shape or list(rows_shape[1:])
        shards.append({"file": name, "rows": int(rows_shape[0])})
    manifest = {
        "format": FORMAT_VERSION,
        "setup": setup,
        "latents": {"count": sum(s["rows"] for s in shards), "shape": shape, "dtype": dtype},
        "world_size": world_size,
        "shards": shards,
    }
    path = os.path.join(directory, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(path + ".tmp", path)
