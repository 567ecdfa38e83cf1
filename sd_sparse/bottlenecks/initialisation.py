"""`DataInitialisationMixin`: weights set from the first training batch (`init_from_data`)."""

from __future__ import annotations

import torch


class DataInitialisationMixin:
    """Sets a bottleneck's weights from the vectors of its first training batch, once. The `initialized`
    buffer records it (so a loaded checkpoint is not initialised again; reading it costs one host sync, once).
    The class writes `_initialize_from_data(vectors)`, which must leave all ranks with the same weights
    (broadcast or reduce under `torch.distributed`)."""

    def _setup_data_initialisation(self, init_from_data: bool) -> None:
        self.register_buffer("initialized", torch.tensor(not init_from_data))
        self._initialized = not init_from_data

    def _initialize_from_data(self, vectors: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def _maybe_initialize(self, vectors: torch.Tensor) -> None:
        """Initialises from `vectors` `[N, D]` in a training forward, unless done already."""
        if self._initialized or not self.training:
            return
        if bool(self.initialized):  # e.g. loaded from a checkpoint: one host sync, once
            self._initialized = True
            return
        self._initialize_from_data(vectors.detach())
        self.initialized.fill_(True)
        self._initialized = True
