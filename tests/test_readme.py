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
