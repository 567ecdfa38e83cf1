"""The codes file: bit-exact round trips, measured size against the claim, clear errors, the CLI."""

import math

import numpy as np
import pytest
import torch

from sd_sparse import (
    Codes,
    DictionaryBottleneck,
    EntropyCodedScalarQuantizer,
    FiniteScalarQuantizer,
    LISTABottleneck,
    ResidualVectorQuantizer,
    ScalarQuantizer,
    VectorQuantizer,
    with_bottleneck,
)
from sd_sparse.codec import codes_file_info, entropy
from sd_sparse.codec.container import FLAG_FULL, FLAG_SETS

pytest.importorskip("constriction")

HEADER = 128  # bytes of header and checksum a file may add to its payload (they take ~60-80)

FACTORIES = {
    "dl": lambda: DictionaryBottleneck(64, 4, 3, patch_size=2),
    "dl_b4": lambda: DictionaryBottleneck(64, 4, 3, patch_size=2, value_bits=4),
    "dl_b6_dictionary": lambda: DictionaryBottleneck(64, 4, 4, value_bits=6, value_scale="dictionary"),
    "dl_b3_refit": lambda: DictionaryBottleneck(64, 4, 3, patch_size=2, value_bits=3, value_refit=True),
    "dl_b5_tol": lambda: DictionaryBottleneck(64, 4, 5, patch_size=2, value_bits=5, tol=2.0),
    "lista_b4": lambda: LISTABottleneck(64, 4, num_blocks=2, sparsity=4, patch_size=2, value_bits=4),
    "lista": lambda: LISTABottleneck(64, 4, num_blocks=2, sparsity=4),
    "vq": lambda: VectorQuantizer(64, 4, patch_size=2),
    "vq_ema_prior": lambda: VectorQuantizer(64, 4, restart_threshold=0),
    # every family of the rate-distortion benchmark: its rates are the bytes of these files
    "rvq_kmeans": lambda: ResidualVectorQuantizer(16, 4, 3, kmeans_iters=3),
    "fsq": lambda: FiniteScalarQuantizer(5, 4),
    "scalar": lambda: ScalarQuantizer(4, 3),
    "entropy_coded_scalar": lambda: EntropyCodedScalarQuantizer(4, step=0.3, max_level=20),
    "dl_residual": lambda: DictionaryBottleneck(64, 4, 2, patch_size=2, value_bits=5, residual_step=0.25),
    "dl_rate_pursuit": lambda: DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=6, rate_lambda=0.5),
    "dl_rate_pursuit_residual": lambda: DictionaryBottleneck(
        64, 4, 4, patch_size=2, value_bits=6, value_refit=True, rate_lambda=0.5, residual_step=0.5
    ),
}


def latents(seed=0, shape=(2, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained(name, steps=4):
    torch.manual_seed(0)
    model = FACTORIES[name]()
    for step in range(steps):
        model(latents(step, shape=(4, 4, 8, 8)))
    return model.eval()


@pytest.mark.parametrize("name", FACTORIES)
def test_decoded_file_equals_the_forward_bit_for_bit(name):
    model = trained(name)
    z = latents(10, shape=(3, 4, 8, 8))
    out = model(z)
    data = out.codes.to_bytes(model)
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.indices, out.codes.indices)
    assert (back.residual is not None) == ("residual" in name)
    for field in ("coefficients", "levels", "residual"):
        ours, theirs = getattr(back, field), getattr(out.codes, field)
        assert (ours is None) == (theirs is None) and (ours is None or torch.equal(ours, theirs)), field
    assert back.latent_shape == out.codes.latent_shape and back.fingerprint == model.config_fingerprint
    assert torch.equal(model.decode(back), out.latents)
    assert torch.equal(model.decode(Codes.from_bytes(model.encode(z).to_bytes(model), model)), out.latents)


@pytest.mark.parametrize("name", ["dl_b4", "dl_b6_dictionary", "dl_b3_refit", "dl_b5_tol", "lista_b4", "vq"])
def test_files_cost_at_most_what_bits_per_position_claims(name):
    model = trained(name)
    for seed in range(3):
        codes = model.encode(latents(20 + seed, shape=(4, 4, 16, 16)))
        info = codes_file_info(codes.to_bytes(model))
        claimed_bytes = model.bits_per_position * info.positions / 8
        assert info.num_bytes <= claimed_bytes + HEADER, (info.num_bytes, claimed_bytes)
        assert info.num_bytes - info.header_bytes <= claimed_bytes + 8  # the range coder's flush at most
        assert info.header_bytes <= HEADER
        assert info.bits_per_position == pytest.approx(8 * info.num_bytes / (4 * 16 * 16))


def test_sparse_supports_are_coded_as_sets():
    model = trained("dl_b4")
    data = model.encode(latents(3)).to_bytes(model)
    info = codes_file_info(data)
    assert info.index_model.startswith("sets") and info.value_model.startswith("levels")
    assert data[5] & FLAG_SETS and data[5] & FLAG_FULL
    # with tol some supports stop early: sets of their own size, with the counts in the stream
    tol = trained("dl_b5_tol")
    codes = tol.encode(latents(3))
    assert (codes.coefficients == 0).any()
    data = codes.to_bytes(tol)
    assert data[5] & FLAG_SETS and not data[5] & FLAG_FULL
    # unquantized dictionary codes keep Batch-OMP's slot order: every slot is coded as a symbol
    plain = trained("dl")
    assert codes_file_info(plain.encode(latents(3)).to_bytes(plain)).value_model == "raw float32"


def test_uniform_set_model_costs_log2_binomial_bits():
    """Without a prior, a set of S atoms out of K costs log2 C(K, S) bits (up to the coder's flush)."""
    rng = np.random.default_rng(0)
    K, S, N = 100, 6, 500
    rows = np.sort(np.stack([rng.choice(K, S, replace=False) for _ in range(N)]), axis=1)
    encoder = entropy.constriction().stream.queue.RangeEncoder()
    entropy.encode_sets(encoder, rows, np.full(N, S), np.ones(K))
    ideal = N * math.log2(math.comb(K, S))
    assert ideal <= encoder.num_bits() <= ideal + 64
    decoder = entropy.constriction().stream.queue.RangeDecoder(encoder.get_compressed())
    assert np.array_equal(entropy.decode_sets(decoder, np.full(N, S), S, np.ones(K)), rows)


def test_usage_prior_shortens_skewed_indices():
    """Codes that use a few codes often cost less than log2 K each against the usage prior."""
    torch.manual_seed(0)
    model = VectorQuantizer(64, 4, restart_threshold=0.0, init_from_data=False).eval()
    frequent = torch.tensor([3, 17, 40, 41])
    model.ema_cluster_size.zero_()[frequent] = 100.0  # what training on such data would have counted
    g = torch.Generator().manual_seed(0)
    picks = frequent[torch.randint(0, 4, (8 * 4 * 4,), generator=g)]
    z = model.codebook.detach()[picks].reshape(8, 4, 4, 4).permute(0, 3, 1, 2).contiguous()
    codes = model.encode(z)
    assert torch.equal(codes.indices[:, 0], picks)
    data = codes.to_bytes(model)
    info = codes_file_info(data)
    assert info.index_model == "sets, prior"
    assert info.num_bytes - info.header_bytes < 0.5 * model.bits_per_position * info.positions / 8
    assert torch.equal(model.decode(Codes.from_bytes(data, model)), model(z).latents)


def test_truncated_corrupted_and_foreign_files_are_clear_errors():
    model = trained("dl_b4")
    data = model.encode(latents(1)).to_bytes(model)
    for cut in (0, 3, 10, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError, match="truncated codes file|not an sd_sparse codes file"):
            Codes.from_bytes(data[:cut], model)
    with pytest.raises(ValueError, match="unexpected bytes after the checksum"):
        Codes.from_bytes(data + b"\0", model)
    for position in (len(data) // 2, len(data) - 6):
        broken = bytearray(data)
        broken[position] ^= 0x10
        with pytest.raises(ValueError, match="checksum does not match"):
            Codes.from_bytes(bytes(broken), model)
    with pytest.raises(ValueError, match="not an sd_sparse codes file"):
        Codes.from_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100), model)
    with pytest.raises(ValueError, match="`data` must be the bytes"):
        Codes.from_bytes("a path", model)
    # another bottleneck: class and config named on both sides
    other = trained("vq")
    foreign = r"made by DictionaryBottleneck \(config [0-9a-f]{16}\), but this is VectorQuantizer"
    with pytest.raises(ValueError, match=foreign):
        Codes.from_bytes(data, other)
    # the same configuration fitted differently: the state digest tells them apart
    twin = FACTORIES["dl_b4"]().eval()
    with pytest.raises(ValueError, match="same config but other weights"):
        Codes.from_bytes(data, twin)
    # codes made by one bottleneck are not written with another
    with pytest.raises(ValueError, match="made by DictionaryBottleneck"):
        model.encode(latents(1)).to_bytes(other)


def test_codes_whose_values_do_not_match_their_levels_are_refused():
    model = trained("dl_b4")
    codes = model.encode(latents(1))
    tampered = Codes(
        indices=codes.indices,
        coefficients=codes.coefficients + 0.01,
        layout=codes.layout,
        signature=codes.signature,
        levels=codes.levels,
    )
    with pytest.raises(ValueError, match="not the dequantized `codes.levels`"):
        tampered.to_bytes(model)


# ------------------------------------------------------------------------------------------------
# Through a coded VAE and the command line
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae():
    from sd_sparse.testing import tiny_stable_diffusion_components

    return tiny_stable_diffusion_components()["vae"]


@pytest.fixture(scope="module")
def images():
    from sd_sparse.data import photo_patches, sample_photographs

    return photo_patches([sample_photographs()["astronaut"]], patch_size=64, max_patches=2)


def test_coded_vae_decompresses_files_as_it_decodes(vae, images):
    torch.manual_seed(0)
    coded = with_bottleneck(vae, DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=5).eval())
    data = coded.compress(images).to_bytes(coded.bottleneck, vae=coded)
    info = codes_file_info(data)
    assert info.vae_factor == 8 and info.pixels == 2 * 64 * 64
    assert info.bits_per_pixel == pytest.approx(8 * len(data) / (2 * 64 * 64))
    restored = coded.decompress(data)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mode()
        assert torch.equal(restored, coded.decode(z).sample.clamp(-1, 1))
    # a file of another VAE is refused, naming the fingerprints
    from sd_sparse.testing import tiny_stable_diffusion_components

    other = with_bottleneck(tiny_stable_diffusion_components(seed=1)["vae"], coded.bottleneck)
    with pytest.raises(ValueError, match="made with another VAE"):
        other.decompress(data)


def test_vae_fingerprint_survives_saving_and_half_precision(vae, tmp_path):
    import copy

    from diffusers import AutoencoderKL

    from sd_sparse.autoencoders.identity import vae_fingerprint

    vae.save_pretrained(tmp_path)  # configs read back from JSON hold lists where the model had tuples
    loaded = AutoencoderKL.from_pretrained(tmp_path)
    coded = with_bottleneck(loaded, DictionaryBottleneck(16, 4, 2))
    fingerprints = {vae_fingerprint(m) for m in (vae, loaded, coded, copy.deepcopy(vae).half())}
    assert len(fingerprints) == 1


def test_cli_compress_and_decompress(tmp_path, capsys):
    from diffusers import AutoencoderKL
    from PIL import Image

    from sd_sparse.autoencoders import reference_vae_path
    from sd_sparse.cli import main
    from sd_sparse.data import sample_photographs, to_image, to_tensor

    vae = AutoencoderKL.from_pretrained(reference_vae_path()).eval()  # the default --vae: trained, not random

    torch.manual_seed(0)
    bottleneck = DictionaryBottleneck(64, 4, 4, patch_size=2, value_bits=5).eval()
    bottleneck.save_pretrained(tmp_path / "bottleneck")
    photos = sample_photographs()
    for name in ("astronaut", "coffee"):
        Image.fromarray(photos[name][:70, :90]).save(tmp_path / f"{name}.png")  # cropped to 80x64
    paths = [str(tmp_path / "astronaut.png"), str(tmp_path / "coffee.png")]
    out_file = str(tmp_path / "photos.sdc")
    assert main(["compress", *paths, "--bottleneck", str(tmp_path / "bottleneck"), "-o", out_file]) == 0
    assert "bits per latent position" in capsys.readouterr().out
    out_dir = tmp_path / "decoded"
    assert main(["decompress", out_file, "--bottleneck", str(tmp_path / "bottleneck"), "-o", str(out_dir)]) == 0
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["photos_000.png", "photos_001.png"]
    # the PNGs are the coded VAE's decode of the (cropped) images, up to uint8 rounding only
    coded = with_bottleneck(vae, bottleneck)
    crops = torch.stack([to_tensor(np.asarray(Image.open(p)))[:, 3:67, 5:85] for p in paths])
    with torch.no_grad():
        expected = coded.decode(vae.encode(crops).latent_dist.mode()).sample.clamp(-1, 1)
    for i, name in enumerate(written):
        assert np.array_equal(np.asarray(Image.open(out_dir / name)), to_image(expected[i]))
    # user errors: one line, exit status 2
    (tmp_path / "short.sdc").write_bytes(open(out_file, "rb").read()[:50])
    folder, short = str(tmp_path / "bottleneck"), str(tmp_path / "short.sdc")
    for argv, message in [
        (["decompress", short, "--bottleneck", folder, "-o", str(out_dir)], "truncated codes file"),
        (["decompress", out_file, "-o", str(out_dir)], "--bottleneck is required"),
        (["compress", paths[0], "--bottleneck", str(tmp_path / "nowhere"), "-o", out_file], "no bottleneck config"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_old_import_paths_still_work():
    """`Codes` moved to `sd_sparse.codec.codes` and the VAE identity to `sd_sparse.autoencoders.identity`;
    the old paths give the same objects, with a DeprecationWarning."""
    import importlib
    import sys

    import sd_sparse.codec.codes as new_home
    from sd_sparse.autoencoders.identity import downsampling_factor, vae_fingerprint

    sys.modules.pop("sd_sparse.bottlenecks.codes", None)
    with pytest.warns(DeprecationWarning, match="sd_sparse.codec.codes"):
        old = importlib.import_module("sd_sparse.bottlenecks.codes")
    assert old.Codes is new_home.Codes is Codes
    assert old.encode_signature is new_home.encode_signature
    assert old.smallest_index_dtype is new_home.smallest_index_dtype

    from sd_sparse.testing import tiny_stable_diffusion_components

    vae = tiny_stable_diffusion_components()["vae"]
    import sd_sparse.codec
    import sd_sparse.codec.container

    with pytest.warns(DeprecationWarning, match="autoencoders.identity.vae_fingerprint"):
        assert sd_sparse.codec.vae_fingerprint(vae) == vae_fingerprint(vae)
    with pytest.warns(DeprecationWarning, match="autoencoders.identity.downsampling_factor"):
        assert sd_sparse.codec.container.vae_downsampling(vae) == downsampling_factor(vae) == 8


def test_the_codec_imports_nothing_above_it():
    """The codec sits under the bottlenecks: it imports the sparse coding and package helpers only."""
    import ast
    from pathlib import Path

    import sd_sparse.codec

    allowed = {"sd_sparse._lazy", "sd_sparse.extras", "sd_sparse.errors", "sd_sparse.sparse_coding", "sd_sparse.codec"}
    for path in Path(sd_sparse.codec.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = ".".join(["sd_sparse", "codec"][: 3 - node.level] + ([node.module] if node.module else []))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                target = next((n for n in names if n.startswith("sd_sparse")), None)
                if target is None:
                    continue
            else:
                continue
            assert any(target == a or target.startswith(a + ".") for a in allowed), (path.name, target)


class SkewedPrior:
    """A stronger entropy model plugged into the container: a VQ bottleneck's identity and values, its own prior."""

    def __init__(self, bottleneck, prior):
        self.bottleneck, self.prior = bottleneck, prior

    coding_class_name = property(lambda self: self.bottleneck.coding_class_name)
    config_fingerprint = property(lambda self: self.bottleneck.config_fingerprint)
    value_bits = property(lambda self: self.bottleneck.value_bits)

    def coding_state_digest(self):
        return self.bottleneck.coding_state_digest()

    def usage_prior(self):
        return self.prior

    def dequantize_values(self, indices, levels):
        return self.bottleneck.dequantize_values(indices, levels)

    def check_codes(self, codes):
        self.bottleneck.check_codes(codes)


def test_any_entropy_model_plugs_into_the_container():
    from sd_sparse.codec import EntropyModel

    for name in FACTORIES:
        assert isinstance(FACTORIES[name](), EntropyModel), name
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 4, restart_threshold=0.0, init_from_data=False).eval()
    assert vq.usage_prior() is None  # nothing counted yet: indices are coded uniformly
    z = vq.codebook.detach()[torch.arange(4).repeat(32)].reshape(8, 4, 4, 4).permute(0, 3, 1, 2).contiguous()
    codes = vq.encode(z)
    prior = torch.full((64,), 1e-3, dtype=torch.float64)
    prior[:4] = 1.0
    model = SkewedPrior(vq, prior)
    assert isinstance(model, EntropyModel)
    data = codes.to_bytes(model)
    assert codes_file_info(data).index_model == "sets, prior"
    assert len(data) < len(codes.to_bytes(vq))
    assert torch.equal(Codes.from_bytes(data, model).indices, codes.indices)
    with pytest.raises(ValueError, match="usage prior this bottleneck does not have"):
        Codes.from_bytes(data, vq)
    with pytest.raises(ValueError, match=r"`bottleneck` must be .*EntropyModel.*got str"):
        codes.to_bytes("vq")


def test_supports_of_varied_sizes_code_their_sizes_adaptively_when_shorter():
    from sd_sparse.codec.container import EXT_ADAPTIVE_COUNTS, _stream_bits, _support_counts
    from sd_sparse.codec.file_format import parse_codes_file

    # rate pursuit leaves most vectors with few atoms: their sizes are far from uniform over 1..S
    model = trained("dl_rate_pursuit")
    z = latents(11, shape=(4, 4, 16, 16))
    codes = model.encode(z)
    counts = _support_counts(codes.indices.numpy())
    assert len(set(counts.tolist())) > 1 and (counts < 4).mean() > 0.5
    data = codes.to_bytes(model)
    assert parse_codes_file(data).extension_flags & EXT_ADAPTIVE_COUNTS
    adaptive = _stream_bits(lambda e: entropy.encode_adaptive(e, counts, 5))
    assert adaptive < _stream_bits(lambda e: entropy.encode_symbols(e, counts, 5))
    back = Codes.from_bytes(data, model)
    assert torch.equal(back.indices, codes.indices) and torch.equal(model.decode(back), model.decode(codes))
    # full supports store no sizes at all
    full = trained("dl_b4")
    assert not parse_codes_file(full.encode(z).to_bytes(full)).extension_flags & EXT_ADAPTIVE_COUNTS
