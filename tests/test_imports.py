"""`import sd_sparse` is cheap and quiet: lazy top-level exports, as diffusers' own `__init__` does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sd_sparse

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["transformers", "diffusers", "diffusers.pipelines", "sd_sparse.pipelines", "torchvision", "torch"]


def python(code: str):
    """Runs `code` in a fresh interpreter with the user's default logging verbosity."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def loaded_after(statement: str) -> dict:
    done = python(f"{statement}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_batch_omp_imports_neither_diffusers_nor_transformers():
    loaded, stderr = loaded_after("from sd_sparse import batch_omp, SparseCodes")
    assert loaded.pop("torch") and not any(loaded.values()), loaded
    assert stderr == ""


def test_coding_on_the_cpu_never_imports_triton():
    done = python(
        "import sys, torch\nfrom sd_sparse import batch_omp\n"
        "batch_omp(torch.randn(8, 4), torch.randn(16, 4), 2)\nprint('triton' in sys.modules)"
    )
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_import_sd_sparse_is_silent_and_bottlenecks_leave_the_pipelines_out():
    loaded, stderr = loaded_after("import sd_sparse")
    assert not any(loaded.values()) and stderr == "", (loaded, stderr)  # not even torch
    loaded, stderr = loaded_after("from sd_sparse import DictionaryBottleneck, SparseAutoencoder, Codes")
    assert loaded["diffusers"] and not loaded["diffusers.pipelines"] and not loaded["sd_sparse.pipelines"]
    assert stderr == ""


def test_lazy_exports_are_the_public_api():
    names = {name for names in sd_sparse._import_structure.values() for name in names}
    assert set(sd_sparse.__all__) == names and set(sd_sparse.__all__) <= set(dir(sd_sparse))
    for name in ("batch_omp", "DictionaryBottleneck", "Codes", "SparseAutoencoder", "with_bottleneck"):
        assert getattr(sd_sparse, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        sd_sparse.NoSuchThing  # noqa: B018
    assert getattr(sd_sparse, "ModelMixin", None) is None  # diffusers probes the library this way


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    from sd_sparse import DictionaryBottleneck, DictionaryLatentPipeline
    from sd_sparse.testing import tiny_stable_diffusion_path

    folder = tmp_path_factory.mktemp("saved") / "pipe"
    bottleneck = DictionaryBottleneck(num_atoms=16, latent_channels=4, sparsity=2, patch_size=2)
    DictionaryLatentPipeline.from_pretrained(tiny_stable_diffusion_path(), bottleneck=bottleneck).save_pretrained(
        folder
    )
    index = json.loads((folder / "model_index.json").read_text())
    assert ["sd_sparse", "AutoencoderKLWithBottleneck"] in index.values()  # a component from our library
    return folder


@pytest.mark.parametrize(
    "first", ["import sd_sparse", "from diffusers import StableDiffusionPipeline\nimport sd_sparse"]
)
def test_diffusers_loads_saved_pipelines_after_a_bare_import(saved_pipeline, first):
    """`import sd_sparse` (before or after diffusers' pipelines) is all `DiffusionPipeline` needs."""
    done = python(
        f"{first}\nimport sys\nassert 'sd_sparse.pipelines' not in sys.modules\n"
        "from diffusers import DiffusionPipeline\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(saved_pipeline)!r})\n"
        "print(type(pipe).__name__, type(pipe.vae).__name__, type(pipe.vae.bottleneck).__name__)"
    )
    assert done.stdout.split()[-3:] == [
        "DictionaryLatentPipeline",
        "AutoencoderKLWithBottleneck",
        "DictionaryBottleneck",
    ]
