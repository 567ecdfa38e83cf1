"""Every Python snippet of the README runs as written (offline, in a fresh process, in a temp folder).

A snippet that cannot run here says so right above it in an HTML comment starting with
`<!-- not run:` and giving the reason (e.g. it needs a Hub token); the test checks that reason exists.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!-- not run:[^>]*-->\s*)?```python\n(.*?)```", re.S)


def snippets():
    text = README.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        line = text[: match.start(2)].count("\n") + 1
        found.append(pytest.param(match.group(2), bool(match.group(1)), id=f"README.md:{line}"))
    return found


@pytest.mark.parametrize("code,skipped", snippets())
def test_readme_snippet_runs(code, skipped, tmp_path):
    if skipped:
        pytest.skip("marked `not run` in the README, with its reason")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{result.stderr[-3000:]}"


def test_readme_has_python_snippets():
    assert len(snippets()) >= 3


_TABLE = re.compile(r"(<!-- vae-support-table:[^\n]*-->\n)(.*?)(<!-- end of vae-support-table -->)", re.S)
#: pipelines the test suite runs with a coded VAE (tests/pipelines/): bold in the README's table
TESTED_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusion3Pipeline",
    "FluxPipeline",
    "Flux2Pipeline",
    "SanaPipeline",
    "QwenImagePipeline",
    "WanPipeline",
    "StableVideoDiffusionPipeline",
)


def test_readme_table_of_vae_classes_is_generated_from_the_code():
    """The README's table of supported VAE classes and pipelines is `vae_support_table()`, exactly.
    `SD_SPARSE_WRITE_README=1 pytest tests/test_readme.py -k table` rewrites it after a change."""
    sys.path.insert(0, str(README.parent / "tests" / "pipelines"))
    from tiny_pipelines import TINY_PIPELINES

    from sd_sparse.autoencoders.families import vae_support_table

    assert set(TINY_PIPELINES) <= set(TESTED_PIPELINES)
    table = vae_support_table(TESTED_PIPELINES)
    text = README.read_text()
    match = _TABLE.search(text)
    assert match, "README.md lacks the <!-- vae-support-table --> markers"
    if os.environ.get("SD_SPARSE_WRITE_README") == "1":
        text = text[: match.start(2)] + "\n" + table + "\n" + text[match.end(2) :]
        README.write_text(text)
        match = _TABLE.search(text)
    assert match.group(2).strip() == table.strip(), (
        "the README's VAE table is stale: SD_SPARSE_WRITE_README=1 pytest tests/test_readme.py -k table"
    )
