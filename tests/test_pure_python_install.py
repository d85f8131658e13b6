"""cachelib installs without a C compiler: a pure-Python wheel (issue 10 §2)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_builds_with_cc_false_and_is_pure_python(tmp_path):
    env = {**os.environ, "CC": "false", "CXX": "false"}
    proc = subprocess.run(
        # With build isolation, as `make test`'s `pip install -e .` builds (setuptools from the index).
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "-w", str(tmp_path), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    wheels = [p.name for p in tmp_path.glob("*.whl")]
    assert wheels == ["cachelib-0.1.0-py3-none-any.whl"]
    names = zipfile.ZipFile(tmp_path / wheels[0]).namelist()
    assert [n for n in names if n.endswith((".c", ".so", ".pyd", ".dylib"))] == []
    assert "cachelib/store/chunks.py" in names
    assert not (ROOT / "setup.py").exists()
