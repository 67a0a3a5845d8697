"""The Colab path, as far as it can be tried here: a bare virtual environment, the chapters' install cell, then a
chapter's first cells — so a dependency that the chapters import but ``pyproject.toml`` does not declare (one
that only ``requirements.txt`` installs) fails here instead of on a reader's Colab.

The test makes a clone of HEAD in a temporary folder (so only committed files count, as on GitHub), creates a
virtual environment **without** ``--system-site-packages``, installs the same torch the project pins (Colab
comes with its own torch; here ``torch==2.13.0`` comes from the CPU wheel on this machine's disk, never a CUDA
build), then runs chapter 4's install cell with the public URL replaced by ``git+file://`` of the clone, and
chapter 4's imports cell. Finally every module that any chapter imports must be importable in that environment.

pip reads the dependencies from the package index it is configured with; without network and without a local
index the test is skipped and says why. It takes a minute or two (marked ``slow``; ``-m "not slow"`` leaves it
out), and it runs in ``make test``.

Also here, the README's promise about counts: it names no test or chapter count that the next commit could make
stale.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
PUBLIC_URL = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
TORCH = "torch==2.13.0"
# pip's words for "the package index cannot be reached / does not have it" (then the test is skipped)
OFFLINE = re.compile(r"Could not find a version that satisfies|No matching distribution found|"
                     r"Failed to establish a new connection|Temporary failure in name resolution|"
                     r"Network is unreachable|ProxyError|Max retries exceeded", re.IGNORECASE)


def _code_cells(path: Path):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _chapters():
    return sorted(p for p in BOOK.glob("[0-9][0-9]_*.ipynb"))


def _imported_modules() -> dict:
    """Top-level modules imported anywhere in the chapters' code cells → the first chapter that imports it."""
    found = {}
    for path in _chapters():
        for source in _code_cells(path):
            try:
                tree = ast.parse(source)
            except SyntaxError:          # a cell with IPython syntax: its imports are not checked
                continue
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], path.name)
    return found


def _run(cmd, cwd=None, env=None, timeout=900):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _pip_or_skip(result, what: str) -> None:
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    if OFFLINE.search(output):
        pytest.skip(f"{what}: pip could not get a package from its index (no network and no local index?); "
                    f"the test needs one to install the dependencies. pip said: {output.strip()[-300:]}")
    pytest.fail(f"{what} failed:\n{output[-3000:]}")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_cell_in_a_bare_venv_runs_the_first_cells(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    clone = tmp_path / "clone"
    result = _run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)])
    assert result.returncode == 0, result.stderr
    venv = tmp_path / "venv"
    result = _run([sys.executable, "-m", "venv", str(venv)])       # no --system-site-packages
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    probe = _run([str(python), "-c", "import sys; print(sys.prefix != sys.base_prefix)"])
    assert probe.stdout.strip() == "True"
    # the bare environment sees nothing of the project's .venv
    assert _run([str(python), "-c", "import numpy"]).returncode != 0, "the venv sees system numpy"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MPLBACKEND="Agg", TTT4REC_QUICK="1", OMP_NUM_THREADS="1", PIP_NO_INPUT="1")
    # Colab brings torch; so does this venv, from the CPU wheel on disk (the project pins 2.13)
    _pip_or_skip(_run([str(python), "-m", "pip", "install", "-q", "--no-compile", TORCH], env=env), TORCH)

    install, imports = _code_cells(BOOK / "04_dual_form.ipynb")[:2]
    assert f"git+{PUBLIC_URL}" in install, "the install cell no longer installs from repository.url"
    local = install.replace(f"git+{PUBLIC_URL}", f"git+{clone.as_uri()}")
    work = tmp_path / "work"        # not the clone: the package must come from the install, not the cwd
    work.mkdir()
    script = work / "first_cells.py"
    script.write_text(local + "\nprint('INSTALLED')\n" + imports + "\nprint('IMPORTED', viz.__file__)\n")
    result = _run([str(python), str(script)], cwd=work, env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "INSTALLED" not in result.stdout:
        _pip_or_skip(result, "the install cell (pip install git+file://…)")
    assert result.returncode == 0, f"chapter 4's first cells failed in the bare venv:\n{output[-3000:]}"
    assert "IMPORTED" in result.stdout and str(venv) in result.stdout, output[-2000:]

    # every module any chapter imports is there after the install cell alone
    modules = _imported_modules()
    assert "ttt4rec_edu" in modules and "torch" in modules
    check = ("import importlib.util, json, sys\n"
             f"names = {sorted(modules)!r}\n"
             "print(json.dumps([n for n in names if importlib.util.find_spec(n) is None]))\n")
    result = _run([str(python), "-c", check], cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert not missing, ("imported by the chapters but not installed by `pip install git+<repo>` (declare them in "
                         f"pyproject.toml's dependencies): {[(m, modules[m]) for m in missing]}")


def test_imported_modules_are_found_in_the_chapters():
    modules = _imported_modules()
    assert {"ttt4rec_edu", "torch", "numpy", "matplotlib"} <= set(modules)


def test_readme_names_no_count_that_goes_stale():
    text = (REPO / "README.md").read_text()
    stale = re.findall(r"\b\d+\s+(?:tests|chapters)\b|\b(?:its|the)\s+\d+\s+(?:tests|chapters)\b", text)
    assert not stale, f"README.md states counts that the next commit can make wrong: {stale}"
