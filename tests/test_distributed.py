"""Under torch.distributed (2 CPU processes, gloo), state updated outside autograd stays identical."""

import os

import torch
from launch import run_two_ranks

from sd_sparse import DictionaryBottleneck, VectorQuantizer


def make_models(rank):
    torch.manual_seed(100 + rank)  # different initial weights per rank: data init must broadcast
    return {
        "vq": VectorQuantizer(num_atoms=32, latent_channels=4, restart_threshold=0.5, kmeans_iters=2),
        "dl_bcd": DictionaryBottleneck(
            num_atoms=32, latent_channels=4, sparsity=3, patch_size=2, dictionary_update="bcd", init_from_data=True
        ),
        # quantized coefficients (level counts) and an entropy-coded residual (its histograms)
        "dl_b4_residual": DictionaryBottleneck(
            num_atoms=32,
            latent_channels=4,
            sparsity=3,
            dictionary_update="bcd",
            init_from_data=True,
            value_bits=4,
            residual_step=0.2,
        ),
    }


def worker(rank, out_dir):
    models = make_models(rank)
    g = torch.Generator().manual_seed(rank)  # every rank sees different data
    for _ in range(4):
        z = torch.randn(2, 4, 8, 8, generator=g) * (1 + rank)
        for model in models.values():
            model(z)
    torch.save({name: m.state_dict() for name, m in models.items()}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_ranks_keep_identical_codebooks_and_dictionaries(tmp_path):
    run_two_ranks(worker, str(tmp_path))
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    fresh = make_models(0)
    for name in states[0]:
        for key, value in states[0][name].items():
            assert torch.equal(value, states[1][name][key]), f"{name}.{key} differs between ranks"
        # the state really was trained (so the equality above is not trivially true)
        assert not torch.equal(
            states[0][name]["dictionary" if name.startswith("dl") else "codebook"],
            fresh[name].state_dict()["dictionary" if name.startswith("dl") else "codebook"],
        )
    assert int(states[0]["dl_bcd"]["bcd_steps"]) == 4
    for key in ("level_counts", "level_counts_shared", "residual_histograms.counts"):
        assert states[0]["dl_b4_residual"][key].any(), key
