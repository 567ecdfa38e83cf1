"""Writes the `SparseAutoencoder` folders of the flat configuration (`bottleneck_type` + the bottleneck's keys
at the top level), as saved before `bottleneck_class`/`bottleneck_config` (commit cac74ac), with the output
of a fixed input, so `tests/models/test_sparse_autoencoder_config.py` checks that they still load to the
same weights and outputs. Run from the repository root (once; the files are committed):

    PYTHONPATH=. python tests/data/sparse_autoencoder_v1/make_golden.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from sd_sparse import SparseAutoencoder

HERE = Path(__file__).parent
CONFIGS = {
    "dictionary": dict(bottleneck_type="dictionary", sparsity=2, value_bits=4),
    "vq": dict(bottleneck_type="vq", use_ema=True, decay=0.9),
    "lista": dict(bottleneck_type="lista", sparsity=3, num_lista_blocks=2, latent_attention=True),
}


def main() -> None:
    torch.manual_seed(0)
    sample = torch.rand(2, 3, 16, 16) * 2 - 1
    outputs = {"sample": sample}
    for name, config in CONFIGS.items():
        torch.manual_seed(1)
        model = SparseAutoencoder(
            hidden_channels=8, residual_channels=4, num_residual_blocks=1, latent_channels=4, num_atoms=8, **config
        ).eval()
        model.save_pretrained(HERE / name)
        with torch.no_grad():
            outputs[name] = model(sample).sample.contiguous()
    save_file(outputs, HERE / "outputs.safetensors")


if __name__ == "__main__":
    main()
