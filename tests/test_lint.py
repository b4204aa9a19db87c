"""The linter and the formatter (ruff, configured in pyproject.toml) hold for the whole repository: CI runs this with
the rest of the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _ruff(*args):
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check_passes():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    # one formatting style for the whole tree: `ruff format .` rewrites what this lists
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
