"""Every `python` and `sh` block of README.md runs as written, so the README cannot break again.

Each block runs in a fresh folder holding a copy of examples/, in a process of its own. `text`
blocks are synopses and sample output, and are not run. Of the opening block, the install is
what CI has just done and the test command is this suite: the test runs the train command."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)


def _run(command, folder, timeout=300):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_mpi_yield_when_idle": "1",
    }
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _folder(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def _shell(line: str) -> list:
    """A README command line with `kgraph` and `python` as this interpreter runs them."""
    kgraph = shutil.which("kgraph")
    words = line.split()
    if words[0] == "python":
        words[0] = sys.executable
    elif words[0] == "kgraph":
        words[:1] = [kgraph] if kgraph else [sys.executable, "-m", "kgraph.cli"]
    return words


def test_the_readme_has_runnable_blocks():
    kinds = [kind for kind, _ in BLOCKS]
    assert kinds.count("python") >= 2 and kinds.count("sh") >= 3, kinds
    assert set(kinds) <= {"python", "sh", "text"}, "a block of another kind would go unchecked"


@pytest.mark.parametrize("index", [i for i, (kind, _) in enumerate(BLOCKS) if kind == "python"])
def test_python_block_runs(index, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(BLOCKS[index][1])
    _run([sys.executable, str(script)], _folder(tmp_path))


def test_opening_block_trains_to_the_quoted_accuracy(tmp_path):
    first = BLOCKS[0][1].splitlines()
    assert first[0].startswith('python -m pip install -e ".[test]" && ') and first[1] == "python -m pytest"
    train = first[0].split(" && ", 1)[1]
    out = _run(_shell(train), _folder(tmp_path))
    accuracy = float(re.findall(r"validation accuracy: ([0-9.]+)", out)[-1])
    low, high = (float(v) for v in re.search(r"\(([0-9.]+)–([0-9.]+) after the default 5 epochs", README).groups())
    assert low - 0.04 <= accuracy <= high + 0.04, (accuracy, low, high)


@pytest.mark.parametrize("index", [i for i, (kind, _) in enumerate(BLOCKS) if kind == "sh" and i > 0])
def test_shell_block_runs(index, tmp_path):
    folder = _folder(tmp_path)
    for line in BLOCKS[index][1].splitlines():
        if line.startswith("mpirun"):
            if shutil.which("mpirun") is None or shutil.which("kgraph") is None:
                pytest.skip("no mpirun, or kgraph is not installed on PATH (the mpi extra)")
            _run(line.split(), folder)
        elif line.strip():
            _run(_shell(line), folder)
