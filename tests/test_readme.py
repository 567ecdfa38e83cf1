"""Every Python snippet of the README and of the docs (`docs/**/*.md`) runs as written (offline, in a fresh
process, in a temp folder).

A snippet that cannot run here says so right above it in an HTML comment starting with
`<!-- not run:` and giving the reason (e.g. it needs a Hub token); the test checks that reason exists.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: the page that holds the table of diffusers VAE classes (`vae_support_table`)
VAE_TABLE_PAGE = DOCS / "pipelines.md"
_BLOCK = re.compile(r"(<!-- not run:[^>]*-->\s*)?```python\n(.*?)```", re.S)


def markdown_files():
    return [README, *sorted(DOCS.rglob("*.md"))]


def snippets(paths=None):
    found = []
    for path in paths or markdown_files():
        text = path.read_text()
        name = path.relative_to(ROOT).as_posix()
        for match in _BLOCK.finditer(text):
            line = text[: match.start(2)].count("\n") + 1
            found.append(pytest.param(match.group(2), bool(match.group(1)), id=f"{name}:{line}"))
    return found


@pytest.mark.parametrize("code,skipped", snippets())
def test_readme_snippet_runs(code, skipped, tmp_path):
    if skipped:
        pytest.skip("marked `not run` in its page, with its reason")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{result.stderr[-3000:]}"


def test_readme_and_docs_have_python_snippets():
    assert len(snippets([README])) >= 3
    assert len(snippets(sorted(DOCS.rglob("*.md")))) >= 10


def test_not_run_markers_give_a_reason():
    for path in markdown_files():
        for reason in re.findall(r"<!-- not run:([^>]*)-->", path.read_text()):
            assert reason.strip(), f"{path.name}: a `not run` marker without its reason"


_TABLE = re.compile(r"(<!-- vae-support-table:[^\n]*-->\n)(.*?)(<!-- end of vae-support-table -->)", re.S)
#: pipelines the test suite runs with a coded VAE (tests/pipelines/): bold in the docs' table
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


def test_docs_table_of_vae_classes_is_generated_from_the_code():
    """The docs' table of supported VAE classes and pipelines (docs/pipelines.md) is `vae_support_table()`,
    exactly. `SD_SPARSE_WRITE_DOCS=1 pytest tests/test_readme.py -k table` rewrites it after a change."""
    sys.path.insert(0, str(ROOT / "tests" / "pipelines"))
    from tiny_pipelines import TINY_PIPELINES

    from sd_sparse.autoencoders.families import vae_support_table

    assert set(TINY_PIPELINES) <= set(TESTED_PIPELINES)
    table = vae_support_table(TESTED_PIPELINES)
    text = VAE_TABLE_PAGE.read_text()
    match = _TABLE.search(text)
    assert match, f"{VAE_TABLE_PAGE.name} lacks the <!-- vae-support-table --> markers"
    if os.environ.get("SD_SPARSE_WRITE_DOCS") == "1":
        text = text[: match.start(2)] + "\n" + table + "\n" + text[match.end(2) :]
        VAE_TABLE_PAGE.write_text(text)
        match = _TABLE.search(text)
    assert match.group(2).strip() == table.strip(), (
        "the docs' VAE table is stale: SD_SPARSE_WRITE_DOCS=1 pytest tests/test_readme.py -k table"
    )
