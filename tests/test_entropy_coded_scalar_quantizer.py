"""`EntropyCodedScalarQuantizer`: uniform levels around a fitted mean, entropy-coded against fitted histograms."""

import math

import pytest
import torch

from sd_sparse import Codes, EntropyCodedScalarQuantizer
from sd_sparse.codec import codes_file_info
from sd_sparse.errors import UserError

pytest.importorskip("constriction")

MEANS = torch.tensor([0.5, -1.0, 0.0, 2.0])
SCALES = torch.tensor([1.0, 0.5, 2.0, 1.0])


def latents(seed, shape=(8, 4, 16, 16)):
    """Gaussian latents whose channels have their own mean and spread."""
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return z * SCALES[:, None, None] + MEANS[:, None, None]


def trained(step=0.25, steps=30, seed=0, **kwargs):
    model = EntropyCodedScalarQuantizer(latent_channels=4, step=step, **kwargs)
    for i in range(steps):
        model(latents(1000 * seed + i))
    return model.eval()


def psnr(a, b):
    return 10 * math.log10(float(b.square().mean()) / float((a - b).square().mean()))


def test_fits_the_channel_means_and_level_histograms():
    model = trained()
    torch.testing.assert_close(model.channel_mean, MEANS, atol=0.02, rtol=0)
    assert int(model.fitted_batches) == 30
    tables = model.index_tables()
    assert tables.shape == (4, 255) and tables.dtype == torch.float64
    # the histogram of channel 2 (spread 2) is wider than that of channel 1 (spread 0.5)
    levels = torch.arange(-127, 128, dtype=torch.float64)
    spread = [float(((t / t.sum()) * levels.square()).sum().sqrt()) for t in tables]
    assert spread[2] == pytest.approx(2.0 / 0.25, rel=0.05) and spread[1] == pytest.approx(0.5 / 0.25, rel=0.05)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    model(latents(99))  # eval: nothing moves
    assert all(torch.equal(v, frozen[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("patch_size", [1, 2])
def test_files_round_trip_bit_for_bit_at_about_the_fitted_entropy(patch_size):
    model = trained(patch_size=patch_size)
    z = latents(500)  # held out, same distribution
    out = model(z)
    data = out.codes.to_bytes(model)
    info = codes_file_info(data)
    assert info.index_model == "slots, tables"
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.indices, out.codes.indices)
    assert torch.equal(model.decode(back), out.latents)
    payload_bits = 8 * (info.num_bytes - info.header_bytes)
    predicted = model.bits_per_position * info.positions
    assert payload_bits == pytest.approx(predicted, rel=0.03)
    # the differential entropy of the channels minus log2(step), per position
    ideal = sum(0.5 * math.log2(2 * math.pi * math.e * float(s) ** 2) - math.log2(0.25) for s in SCALES)
    assert model.bits_per_position == pytest.approx(ideal, rel=0.03)
    # far below the fixed-length log2 K per value
    assert info.bits_per_position < 0.6 * 4 * math.log2(model.num_atoms)


def test_smaller_steps_give_higher_psnr_and_more_bytes():
    z = latents(600)
    results = []
    for step in (0.4, 0.2, 0.1):
        model = trained(step=step, steps=10)
        codes = model.encode(z)
        results.append((psnr(model.decode(codes), z), len(codes.to_bytes(model))))
    for (coarse_psnr, coarse_bytes), (fine_psnr, fine_bytes) in zip(results, results[1:]):
        assert fine_psnr > coarse_psnr + 5 and fine_bytes > coarse_bytes  # ~6 dB per halved step


def test_per_channel_steps_and_clamped_levels():
    model = EntropyCodedScalarQuantizer(latent_channels=4, step=[0.1, 0.2, 0.3, 0.7], max_level=3).eval()
    assert torch.allclose(model.channel_step, torch.tensor([0.1, 0.2, 0.3, 0.7]))
    z = torch.zeros(1, 4, 2, 2)
    z[0, :, 0, 0] = torch.tensor([0.21, 10.0, -10.0, 0.7])
    codes = model.encode(z)
    assert codes.indices.shape == (4, 4) and model.num_atoms == 7
    assert codes.indices[0].tolist() == [2 + 3, 3 + 3, -3 + 3, 1 + 3]
    assert torch.allclose(model.decode(codes)[0, :, 0, 0], torch.tensor([0.2, 0.6, -0.9, 0.7]))


def test_another_fitting_refuses_to_decode():
    model, other = trained(seed=0, steps=5), trained(seed=1, steps=5)
    data = model.encode(latents(700)).to_bytes(model)
    with pytest.raises(ValueError, match="other weights or statistics"):
        Codes.from_bytes(data, other)
    with pytest.raises(ValueError, match="made by EntropyCodedScalarQuantizer"):
        EntropyCodedScalarQuantizer(latent_channels=4, step=0.5).decode(model.encode(latents(701)))


def test_save_and_load_keep_the_fitted_state(tmp_path):
    model = trained(steps=5)
    model.save_pretrained(tmp_path)
    loaded = EntropyCodedScalarQuantizer.from_pretrained(tmp_path).eval()
    assert loaded.coding_state_digest() == model.coding_state_digest()
    data = model.encode(latents(800)).to_bytes(model)
    assert torch.equal(loaded.decode(Codes.from_bytes(data, loaded)), model.decode(model.encode(latents(800))))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(step=0.0), r"`step` must be a positive finite number or 4 of them"),
        (dict(step=-1.0), r"`step` must be a positive finite number"),
        (dict(step=[0.1, 0.2]), r"`step` must be a positive finite number or 4 of them"),
        (dict(step=float("inf")), r"`step`"),
        (dict(max_level=0), r"`max_level` must be an int in \[1, 32767\]"),
        (dict(max_level=40000), r"`max_level`"),
        (dict(histogram_decay=1.0), r"`histogram_decay` must be in \[0, 1\)"),
        (dict(latent_channels=0), "latent_channels"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(UserError, match=match):
        EntropyCodedScalarQuantizer(**{"latent_channels": 4, **kwargs})
