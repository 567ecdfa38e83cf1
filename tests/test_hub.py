"""Push and pull through the real huggingface_hub client, over HTTP, against a local Hub server.

huggingface_hub reads HF_ENDPOINT when it is imported, so every scenario runs in a subprocess whose
environment points at the server (127.0.0.1) with a temporary HF_HOME; nothing reaches the internet.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_home")


def run(hub, hf_home, script, token="hf_test_token", offline=False, args=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        DIFFUSERS_VERBOSITY="error",
        TRANSFORMERS_VERBOSITY="error",
    )
    if token:
        env["HF_TOKEN"] = token
    command = [sys.executable, "-c", textwrap.dedent(script)] if args is None else [sys.executable, *args]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if args is None:
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout.strip().splitlines()[-1])
    return done


def test_bottleneck_push_pull_with_model_card(hub, hf_home):
    result = run(
        hub,
        hf_home,
        """
        import json, torch
        from huggingface_hub import hf_hub_download
        from sd_sparse import DictionaryBottleneck
        torch.manual_seed(0)
        # 1024 atoms of 4x4x4: a 256 KiB weight file, uploaded by the multipart LFS path
        bottleneck = DictionaryBottleneck(num_atoms=1024, latent_channels=4, sparsity=4, patch_size=4).eval()
        url = bottleneck.push_to_hub("user/sd-dictionary", base_model="user/tiny-sd",
                                     metrics={"latent_psnr": 31.5, "bits_per_position": 6.5})
        loaded = DictionaryBottleneck.from_pretrained("user/sd-dictionary").eval()
        z = torch.randn(2, 4, 8, 8)
        card = open(hf_hub_download("user/sd-dictionary", "README.md")).read()
        print(json.dumps({"url": url, "same": torch.equal(bottleneck(z).latents, loaded(z).latents),
                          "weights": torch.equal(bottleneck.dictionary, loaded.dictionary), "card": card}))
    """,
    )
    assert result["same"] and result["weights"]
    assert "/user/sd-dictionary/commit/" in result["url"]
    card = result["card"]
    assert "library_name: sd_sparse" in card and "base_model: user/tiny-sd" in card
    assert "6.5 bits per latent position" in card and "| 31.50 | 6.50 |" in card and '"num_atoms": 1024' in card
    methods = {(m, p) for m, p in hub.state.requests}
    assert any(p.endswith("/part/4") for _, p in methods)  # 256 KiB in 64 KiB parts
    assert ("POST", "/api/models/user/sd-dictionary/commit/main") in methods


def test_bottleneck_push_passes_diffusers_arguments_to_the_hub(hub, hf_home):
    # the arguments of diffusers' ModelMixin.push_to_hub reach the Hub's commit call
    before = len(hub.state.commits)
    run(
        hub,
        hf_home,
        """
        import json
        from sd_sparse import VectorQuantizer
        bottleneck = VectorQuantizer(num_atoms=8, latent_channels=4)
        bottleneck.push_to_hub("user/sd-pr", subfolder="bottleneck", create_pr=True, variant="fp16",
                               commit_message="add a bottleneck", metrics={"latent_psnr": 20.0})
        print(json.dumps({}))
    """,
    )
    (commit,) = hub.state.commits[before:]
    assert commit["repo"] == "user/sd-pr" and commit["query"].get("create_pr") == ["1"]
    assert sorted(commit["paths"]) == [
        "bottleneck/config.json",
        "bottleneck/diffusion_pytorch_model.fp16.safetensors",
        "bottleneck/metrics.json",
    ]  # into the subfolder, as the variant, and no model card there (as diffusers)
    assert ("POST", "/api/models/user/sd-pr/commit/main") in hub.state.requests


def test_pipeline_push_pull_and_offline_reload(hub, hf_home):
    script = """
        import json, torch, numpy as np
        from diffusers import DiffusionPipeline
        from sd_sparse import DictionaryLatentPipeline
        from sd_sparse.autoencoders import stable_diffusion_dictionary
        from sd_sparse.testing import tiny_stable_diffusion_path
        kw = dict(num_inference_steps=2, height=64, width=64, output_type="np")
        PUSH
        pulled = DictionaryLatentPipeline.from_pretrained("user/tiny-dictionary-pipeline")
        generic = DiffusionPipeline.from_pretrained("user/tiny-dictionary-pipeline")
        a = pulled("blue sunflower", generator=torch.Generator().manual_seed(0), **kw).images
        b = generic("blue sunflower", generator=torch.Generator().manual_seed(0), **kw).images
        np.save(OUT, a)
        print(json.dumps({"generic": type(generic).__name__, "same": bool(np.array_equal(a, b)),
                          "bottleneck": type(pulled.bottleneck).__name__}))
    """
    push = """torch.manual_seed(0)
        pipe = DictionaryLatentPipeline.from_pretrained(tiny_stable_diffusion_path(),
                                                        bottleneck=stable_diffusion_dictionary(num_atoms=64, sparsity=4))
        pipe.push_to_hub("user/tiny-dictionary-pipeline")
        local = pipe("blue sunflower", generator=torch.Generator().manual_seed(0), **kw).images"""
    out = hf_home / "images.npy"
    online = run(
        hub,
        hf_home,
        script.replace("PUSH", push)
        .replace("OUT", repr(str(out)))
        .replace("np.save(", "assert np.array_equal(a, local); np.save("),
    )
    assert online == {"generic": "DictionaryLatentPipeline", "same": True, "bottleneck": "DictionaryBottleneck"}
    first = out.read_bytes()
    before = len(hub.state.requests)
    offline = run(hub, hf_home, script.replace("PUSH", "").replace("OUT", repr(str(out))), offline=True)
    assert offline == online
    assert len(hub.state.requests) == before  # served from the cache alone
    assert out.read_bytes() == first


def test_errors_are_clear(hub, hf_home):
    result = run(
        hub,
        hf_home,
        """
        import json
        from huggingface_hub import hf_hub_download
        from sd_sparse import DictionaryBottleneck
        errors = {}
        try:
            DictionaryBottleneck.from_pretrained("user/no-such-repo")
        except Exception as err:
            errors["missing_repo"] = str(err)
        try:
            hf_hub_download("user/sd-dictionary", "no-such-file.json")
        except Exception as err:
            errors["missing_file"] = type(err).__name__
        print(json.dumps(errors))
    """,
    )
    assert "user/no-such-repo" in result["missing_repo"]
    assert result["missing_file"] == "RemoteEntryNotFoundError"

    no_token = run(hub, hf_home, "", token=None, args=["-m", "sd_sparse.cli", "push", str(ROOT / "tests"), "user/x"])
    assert no_token.returncode != 0 and "neither a bottleneck" in no_token.stderr


def test_cli_push_and_pull(hub, hf_home, tmp_path):
    import torch

    from sd_sparse import VectorQuantizer

    torch.manual_seed(0)
    folder = tmp_path / "vq"
    VectorQuantizer(num_atoms=32, latent_channels=4).save_pretrained(folder)
    no_token = run(hub, hf_home, "", token=None, args=["-m", "sd_sparse.cli", "push", str(folder), "user/cli-vq"])
    assert no_token.returncode != 0 and "sd-sparse push:" in no_token.stderr and "Traceback" not in no_token.stderr
    pushed = run(
        hub,
        hf_home,
        "",
        args=["-m", "sd_sparse.cli", "push", str(folder), "user/cli-vq", "--base_model", "user/tiny-sd"],
    )
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    pulled = run(
        hub, hf_home, "", args=["-m", "sd_sparse.cli", "pull", "user/cli-vq", "--local_dir", str(tmp_path / "pulled")]
    )
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    loaded = VectorQuantizer.from_pretrained(tmp_path / "pulled")
    assert torch.equal(loaded.codebook, VectorQuantizer.from_pretrained(folder).codebook)
    assert "base_model: user/tiny-sd" in (tmp_path / "pulled" / "README.md").read_text()
    missing = run(hub, hf_home, "", args=["-m", "sd_sparse.cli", "pull", "user/nothing-here"])
    assert missing.returncode != 0 and "sd-sparse pull:" in missing.stderr and "Traceback" not in missing.stderr


def test_training_script_pushes_the_run(hub, hf_home, tmp_path):
    """`train_dlgan.py --push_to_hub` uploads model, discriminator, card and validation PNGs, not checkpoints."""
    import torch

    from sd_sparse import SparseAutoencoder

    out = tmp_path / "run"
    tiny = "--num_atoms 32 --sparsity 3 --hidden_channels 32 --latent_channels 8 --train_batch_size 4 --resolution 16"
    argv = [
        "train/train_dlgan.py",
        *tiny.split(),
        *"--max_images 4 --max_train_steps 2 --checkpointing_steps 1 --validation_steps 2 --discriminator_layers 2".split(),
        *["--output_dir", str(out), "--push_to_hub", "--hub_model_id", "user/tiny-dlgan"],
    ]
    done = run(hub, hf_home, "", args=argv)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = run(
        hub,
        hf_home,
        """
        import json
        from huggingface_hub import list_repo_files, snapshot_download
        files = sorted(list_repo_files("user/tiny-dlgan"))
        print(json.dumps({"files": files, "local": snapshot_download("user/tiny-dlgan")}))
        """,
    )
    files = listed["files"]
    assert "config.json" in files and "diffusion_pytorch_model.safetensors" in files and "README.md" in files
    assert "discriminator/config.json" in files and "validation/step-2.png" in files
    assert not any(f.startswith("checkpoint-") for f in files)
    pulled = SparseAutoencoder.from_pretrained(listed["local"])
    local = SparseAutoencoder.from_pretrained(out)
    assert all(torch.equal(v, pulled.state_dict()[k]) for k, v in local.state_dict().items())
    card = Path(listed["local"], "README.md").read_text()
    assert "# DL-GAN" in card and 'from_pretrained("user/tiny-dlgan")' in card and "val/psnr" in card


def test_trained_autoencoder_card_lists_the_run(tmp_path):
    """The trainer's model card is written by the hub module: flags, facts of the run, last metrics."""
    from sd_sparse import SparseAutoencoder
    from sd_sparse.hub import TRAINING_CARD_FLAGS, autoencoder_training_summary, write_autoencoder_model_card
    from sd_sparse.training import build_parser

    args = build_parser().parse_args(["--task", "super_resolution", "--use_ema", "--skip_bad_images"])
    args.max_train_steps = 7
    training = autoencoder_training_summary(args, world_size=2, held_out=True, perceptual=False, num_skipped=3)
    assert list(training)[: len(TRAINING_CARD_FLAGS)] == list(TRAINING_CARD_FLAGS)
    assert training["max_train_steps"] == 7 and training["sr_factor"] == 4 and training["ema_decay"] == 0.9999
    assert training["world_size"] == 2 and training["validation"] == "held-out images"
    assert training["skipped_bad_images"] == 3 and training["perceptual"] == "off"
    plain = autoencoder_training_summary(build_parser().parse_args([]), 1, held_out=False, perceptual=True)
    assert "sr_factor" not in plain and "ema_decay" not in plain and "skipped_bad_images" not in plain
    assert plain["validation"] == "training images" and plain["perceptual"] == "LPIPS (VGG16)"
    model = SparseAutoencoder(hidden_channels=8, latent_channels=4, num_atoms=8, sparsity=2)
    path = write_autoencoder_model_card(str(tmp_path), model, {"val/psnr": 21.5}, training)
    card = Path(path).read_text()
    assert path == str(tmp_path / "README.md") and "# DL-VAE" in card
    assert '"world_size": 2' in card and "| val/psnr | 21.50 |" in card
