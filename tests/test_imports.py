"""`import sd_sparse` is cheap and quiet: lazy top-level exports, as diffusers' own `__init__` does."""

import ast
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
    from sd_sparse.offline import tiny_stable_diffusion_path

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


def imported_modules(path: Path) -> set:
    """The absolute names of the modules that the file at `path` (under sd_sparse/) imports, `from X import y`
    counted as both `X` and `X.y`."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_run_time_code_never_imports_the_test_components():
    """`sd_sparse.testing` is for tests; what the demo and the fit script run on by default (the tiny offline
    Stable Diffusion) is `sd_sparse.offline`."""
    importers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "sd_sparse").rglob("*.py")
        if path.name != "testing.py" and "sd_sparse.testing" in imported_modules(path)
    }
    assert not importers, sorted(importers)


def test_the_tiny_stable_diffusion_moved_to_offline_and_the_old_path_still_works():
    from sd_sparse import offline, testing

    for name in (
        "tiny_clip_tokenizer",
        "sd_vae_architecture",
        "tiny_stable_diffusion_components",
        "tiny_stable_diffusion_path",
        "TINY_SD_VERSION",
    ):
        assert getattr(testing, name) is getattr(offline, name), name
    assert testing._byte_symbols is offline.byte_symbols
    assert testing.reference_vae_path is sd_sparse.autoencoders.reference_vae_path
