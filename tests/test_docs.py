"""The documentation site builds offline with `mkdocs build --strict` (what `make docs` runs): a broken link or
anchor, an API object that cannot be found or a docstring the reference cannot parse fails the build. The
README's links into the docs, which mkdocs does not see, are checked against the built site."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sd_sparse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("docs") / "site"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return site_dir, result, time.perf_counter() - start


def test_docs_build_strict_without_warnings(site):
    site_dir, result, seconds = site
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output[-5000:]}"
    assert "WARNING" not in output, output[-5000:]
    for page in ("index.html", "pipelines/index.html", "api/bottlenecks/index.html", "benchmark-results/index.html"):
        assert (site_dir / page).is_file(), page
    assert (site_dir / "benchmarks" / "results" / "rate_distortion_taef2.png").is_file()
    assert seconds < 60, f"the docs took {seconds:.0f} s to build"


def test_readme_links_into_the_docs_resolve(site):
    site_dir, result, _ = site
    assert result.returncode == 0
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|benchmarks)/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10
    for path, anchor in links:
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            page = Path(path).relative_to("docs").with_suffix("")
            html = (site_dir / ("" if page.name == "index" else page) / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"README links to {path}#{anchor}: no such heading"


def test_api_reference_covers_every_public_name():
    """Every name of `sd_sparse.__all__` is in the API reference, by its public top-level name."""
    reference = "\n".join(page.read_text() for page in sorted((ROOT / "docs" / "api").glob("*.md")))
    missing = [name for name in sd_sparse.__all__ if not re.search(rf"sd_sparse\.{name}\b", reference)]
    assert not missing, f"not in docs/api/*.md: {missing}"
