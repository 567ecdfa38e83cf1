"""The codes file layout does not change: files written by an earlier version still decode, and are rewritten, bit for bit.

`tests/data/codes_v1/` holds three small files written by the container of commit 3efac8a (`make_golden.py`),
each with the bottleneck that wrote it (`save_pretrained`) and the codes themselves (`Codes.save`): quantized
dictionary codes as sets with the VAE recorded, LISTA codes with raw float32 coefficients, and VQ video codes
against the EMA usage prior.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from sd_sparse import Codes, DictionaryBottleneck, LISTABottleneck, VectorQuantizer
from sd_sparse.codec import VAEIdentity, codes_file_info

pytest.importorskip("constriction")

DATA = Path(__file__).parent / "data" / "codes_v1"
EXPECTED = json.loads((DATA / "expected.json").read_text())
CLASSES = {"dl_b4_vae": DictionaryBottleneck, "lista": LISTABottleneck, "vq_ema_frames": VectorQuantizer}
FIELDS = ("indices", "coefficients", "layout", "signature", "levels", "frames")


def _case(name):
    model = CLASSES[name].from_pretrained(DATA / name).eval()
    return model, (DATA / f"{name}.sdc").read_bytes(), Codes.load(DATA / f"{name}.codes.safetensors")


def test_the_cases_cover_the_flags():
    assert set(CLASSES) == set(EXPECTED["cases"])
    models = {(c["index_model"], c["value_model"]) for c in EXPECTED["cases"].values()}
    assert {"sets, uniform", "slots, uniform", "sets, prior"} == {m for m, _ in models}
    assert {"levels, adaptive", "raw float32", "none"} == {v for _, v in models}


@pytest.mark.parametrize("name", CLASSES)
def test_old_files_decode_bit_for_bit(name):
    model, data, saved = _case(name)
    info = codes_file_info(data)
    expected = EXPECTED["cases"][name]
    assert (info.num_bytes, info.index_model, info.value_model, info.state) == (
        expected["num_bytes"],
        expected["index_model"],
        expected["value_model"],
        expected["state"],
    )
    assert (info.vae_fingerprint, info.vae_factor, info.num_frames) == (
        expected["vae_fingerprint"],
        expected["vae_factor"],
        expected["num_frames"],
    )
    decoded = Codes.from_bytes(data, model)
    for field in FIELDS:
        ours, theirs = getattr(decoded, field), getattr(saved, field)
        assert (ours is None) == (theirs is None), field
        if ours is not None:
            assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), field
    assert torch.equal(model.decode(decoded), model.decode(saved))


@pytest.mark.parametrize("name", CLASSES)
def test_the_same_codes_are_written_to_the_same_bytes(name):
    model, data, saved = _case(name)
    info = codes_file_info(data)
    vae = None if info.vae_fingerprint is None else VAEIdentity(info.vae_fingerprint, info.vae_factor)
    assert saved.to_bytes(model, vae=vae) == data


def test_the_vae_identity_is_unchanged():
    """The fingerprint and factor of a VAE with fixed weights are those the old code recorded."""
    sys.path.insert(0, str(DATA))
    try:
        from make_golden import deterministic_vae
    finally:
        sys.path.remove(str(DATA))
    from sd_sparse.autoencoders.identity import downsampling_factor, vae_fingerprint

    vae = deterministic_vae()
    assert vae_fingerprint(vae) == EXPECTED["vae"]["fingerprint"]
    assert downsampling_factor(vae) == EXPECTED["vae"]["factor"]
    model, data, saved = _case("dl_b4_vae")
    assert saved.to_bytes(model, vae=vae) == data  # the VAE object itself, identified through the resolver
    assert torch.equal(Codes.from_bytes(data, model, vae=vae).indices, saved.indices)
