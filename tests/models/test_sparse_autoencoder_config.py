"""`SparseAutoencoder(bottleneck_class=..., bottleneck_config=...)`, and the flat `bottleneck_type` form it replaced:
folders saved with the flat config (`tests/data/sparse_autoencoder_v1`, written by the code of commit cac74ac)
load to the same weights and outputs, and the flat keyword arguments still build the same model, with a
`FutureWarning`."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sd_sparse import SparseAutoencoder
from sd_sparse.bottlenecks import (
    DictionaryBottleneck,
    EntropyCodedScalarQuantizer,
    FiniteScalarQuantizer,
    LISTABottleneck,
    ResidualVectorQuantizer,
    ScalarQuantizer,
    VectorQuantizer,
)
from sd_sparse.models import flat_bottleneck_config

DATA = Path(__file__).parents[1] / "data" / "sparse_autoencoder_v1"
TINY = dict(hidden_channels=8, residual_channels=4, num_residual_blocks=1, latent_channels=4)
SAVED_CLASSES = {"dictionary": DictionaryBottleneck, "vq": VectorQuantizer, "lista": LISTABottleneck}


@pytest.mark.parametrize("name", SAVED_CLASSES)
def test_flat_config_folders_load_to_the_same_outputs(name, tmp_path):
    outputs = load_file(DATA / "outputs.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # loading an old folder is not deprecated
        model = SparseAutoencoder.from_pretrained(DATA / name).eval()
    assert type(model.bottleneck) is SAVED_CLASSES[name]
    assert model.config.bottleneck_class == SAVED_CLASSES[name].__name__
    assert "bottleneck_type" not in model.config and "num_atoms" not in model.config
    saved = load_file(DATA / name / "diffusion_pytorch_model.safetensors")
    state = model.state_dict()
    # statistics added since (the fitted level tables) load empty: the old codes need none of them
    added = set(state) - set(saved)
    assert set(saved) <= set(state) and {k.rsplit(".", 1)[-1] for k in added} <= {"level_counts", "level_counts_shared"}
    assert all(not state[k].any() for k in added)
    if added:
        assert model.bottleneck.level_tables() is None
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    with torch.no_grad():  # the weights are bit-identical (above); outputs up to the thread count's rounding
        torch.testing.assert_close(model(outputs["sample"]).sample, outputs[name], rtol=0, atol=1e-6)

    model.save_pretrained(tmp_path)  # saved again, in the new form
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["bottleneck_class"] == SAVED_CLASSES[name].__name__ and "bottleneck_type" not in config
    again = SparseAutoencoder.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(outputs["sample"]).sample, outputs[name], rtol=0, atol=1e-6)


def test_flat_keyword_arguments_warn_and_build_the_same_model():
    flat = dict(bottleneck_type="vq", num_atoms=8, decay=0.9)
    torch.manual_seed(0)
    with pytest.warns(FutureWarning, match="bottleneck_class"):
        old = SparseAutoencoder(**TINY, **flat)
    bottleneck_class, bottleneck_config = flat_bottleneck_config(**flat)
    assert bottleneck_class == "VectorQuantizer"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        new = SparseAutoencoder(**TINY, bottleneck_class=bottleneck_class, bottleneck_config=bottleneck_config)
    assert {k: v for k, v in old.config.items() if k != "_use_default_values"} == {
        k: v for k, v in new.config.items() if k != "_use_default_values"
    }
    copy = SparseAutoencoder.from_config(old.config)  # as EMA copies and the testers do
    assert type(copy.bottleneck) is VectorQuantizer and copy.bottleneck.config.decay == 0.9
    for (k, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items()):
        assert torch.equal(a, b), k


def test_flat_keyword_argument_errors_are_unchanged():
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="bottleneck_type"):
        SparseAutoencoder(bottleneck_type="kmeans")
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="`value_bits` quantizes sparse coefficients"):
        SparseAutoencoder(bottleneck_type="vq", value_bits=4)
    with pytest.raises(TypeError, match="num_codes"):
        SparseAutoencoder(num_codes=4)


def test_default_is_the_dl_vae():
    model = SparseAutoencoder()
    assert type(model.bottleneck) is DictionaryBottleneck
    assert model.config.bottleneck_config["num_atoms"] == 512 and model.config.bottleneck_config["sparsity"] == 5
    assert model.config.bottleneck_config["latent_channels"] == model.config.latent_channels == 16


@pytest.mark.parametrize(
    "cls,config",
    [
        (ResidualVectorQuantizer, dict(num_atoms=8, num_stages=2)),
        (FiniteScalarQuantizer, dict(levels=5)),
        (ScalarQuantizer, dict(bits=3)),
        (EntropyCodedScalarQuantizer, dict(step=0.5, max_level=7)),
        (DictionaryBottleneck, dict(num_atoms=8, sparsity=2, patch_size=2)),
    ],
)
def test_any_bottleneck_class(cls, config, tmp_path):
    torch.manual_seed(0)
    model = SparseAutoencoder(**TINY, bottleneck_class=cls.__name__, bottleneck_config=config).eval()
    assert type(model.bottleneck) is cls and model.bottleneck.config.latent_channels == 4
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        first = model(x).sample
    assert first.shape == x.shape
    model.save_pretrained(tmp_path)
    loaded = SparseAutoencoder.from_pretrained(tmp_path).eval()
    assert type(loaded.bottleneck) is cls
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).sample, first)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bottleneck_class="KMeans"), "bottleneck_class"),
        (dict(bottleneck_class="VectorQuantizer", latent_attention=True), "latent_attention"),
        (dict(bottleneck_config=dict(latent_channels=8, num_atoms=8)), "latent_channels"),
    ],
)
def test_invalid_bottleneck(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseAutoencoder(**TINY, **kwargs)


def test_flat_and_new_arguments_do_not_mix():
    with pytest.raises(ValueError, match="either bottleneck_class"):
        SparseAutoencoder(bottleneck_class="VectorQuantizer", num_atoms=8)
