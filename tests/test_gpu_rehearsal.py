"""The GPU machine's command, rehearsed on this CPU (issue 27): the exact ``scripts/gpu_check.DEVICE_COMMAND`` that
the README, chapter 10 and the script's docstring give, run as the device tool runs it — in a copy of the
repository's files (no ``.git``, nothing git-ignored but the carried ``gpu_data/``), with ``$OUT`` set, by a bare
``python3`` that has only the GPU machine's packages this project uses (torch, numpy, pandas, matplotlib, seaborn,
tqdm) and not this project, on the real Amazon Beauty file. Only two things differ, each replaced exactly once:
``--device cpu`` for ``--device cuda``, and a short ``--deadline-s``. It must write a complete report into ``$OUT``.

The bare environment is made offline from the wheels on this machine's disk (torch 2.13 CPU from /opt/wheels,
the rest from the local package index) and kept in the git-ignored ``.venv-gpu-rehearsal/`` (about 3 minutes to
make, once); where those wheels are not on disk the test is skipped and says why."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-gpu-rehearsal"
# What the GPU machine's python3 has of what this project needs (its image holds many more; none else is used).
PACKAGES = ["torch==2.13.*", "numpy", "pandas", "matplotlib", "seaborn", "tqdm"]
WHEELS = Path("/opt/wheels")
INDEXES = [Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple")]
DEADLINE_S = 75
BEAUTY = "amazon-beauty-5core.txt"


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_rehearsed", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bare_venv() -> Path:
    """``.venv-gpu-rehearsal/``: python3 with PACKAGES only, installed offline; reused while its stamp matches."""
    stamp = VENV / ".rehearsal-stamp"
    want = f"{' '.join(PACKAGES)} for Python {sys.version_info.major}.{sys.version_info.minor}"
    if stamp.is_file() and stamp.read_text() == want and (VENV / "bin" / "python3").exists():
        return VENV
    if not any(WHEELS.glob("torch-2.13*.whl")) or not INDEXES[0].is_dir():
        pytest.skip(f"the bare environment cannot be made offline here: no torch 2.13 wheel in {WHEELS} or no "
                    f"local package index at {INDEXES[0]}")
    python3 = shutil.which("python3")
    if python3 is None:
        pytest.skip("no python3 on PATH to make the bare environment with")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([python3, "-m", "venv", str(VENV)], check=True, timeout=300)
    indexes = [arg for index in INDEXES[1:] if index.is_dir() for arg in ("--extra-index-url", index.as_uri())]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([str(VENV / "bin" / "python3"), "-m", "pip", "install", "--quiet", "--no-compile",
                           "--index-url", INDEXES[0].as_uri(), *indexes, "--find-links", str(WHEELS), *PACKAGES],
                          env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        pytest.skip("the bare environment cannot be made offline here: pip said "
                    + (proc.stderr.strip().splitlines() or ["nothing"])[-1])
    stamp.write_text(want)
    return VENV


def beauty_file() -> Path:
    folders = [Path(p) for p in os.environ.get("TTT4REC_DATA_MIRRORS", "").split(os.pathsep) if p]
    for folder in [*folders, REPO.parent / "shared" / "data", REPO / "gpu_data"]:
        if (folder / BEAUTY).is_file():
            return folder / BEAUTY
    pytest.skip(f"no {BEAUTY} here (TTT4REC_DATA_MIRRORS, ../shared/data or gpu_data/)")


def device_tree(dest: Path) -> str:
    """Copy what the device tool sends (the tracked files as they are now; no .git), plus gpu_data/ with the
    Amazon Beauty file; returns the commit to fill in."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the files the device tool sends cannot be listed")
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / "gpu_data").mkdir(exist_ok=True)
    shutil.copy2(beauty_file(), dest / "gpu_data" / BEAUTY)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return head.stdout.strip()


def rehearsal_command(commit: str) -> str:
    script = _script()
    command = script.device_command(commit)
    for old, new in (("--device cuda ", "--device cpu "), ('--out "$OUT"', f'--out "$OUT" --deadline-s {DEADLINE_S}')):
        assert command.count(old) == 1, (old, command)
        command = command.replace(old, new)
    return command


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_device_command_writes_a_complete_report_in_a_bare_environment(tmp_path):
    venv = bare_venv()
    tree, out = tmp_path / "tree", tmp_path / "OUT"
    tree.mkdir()
    out.mkdir()
    commit = device_tree(tree)
    assert not (tree / ".git").exists() and not (tree / ".venv").exists()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "TTT4REC_DATA_MIRRORS", "TTT4REC_DATA_DIR")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin", OUT=str(out), OMP_NUM_THREADS="1")
    # the bare python3 has no ttt4rec_edu and none of the book's packages
    bare = subprocess.run(["python3", "-c", "import ttt4rec_edu"], cwd=tmp_path, env=env, capture_output=True)
    assert bare.returncode != 0 and b"No module named 'ttt4rec_edu'" in bare.stderr
    assert subprocess.run(["python3", "-c", "import ipywidgets"], cwd=tmp_path, env=env,
                          capture_output=True).returncode != 0
    proc = subprocess.run(["bash", "-c", rehearsal_command(commit)], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=DEADLINE_S + 180)
    shown = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode in (0, 1), shown     # 1: parts cut short by the deadline, as they are on a CPU
    files = sorted(p.name for p in out.iterdir())
    stems = [name[:-len(".json")] for name in files if name.endswith(".json")]
    assert len(stems) == 1, files
    stem = stems[0]
    assert files == sorted([f"{stem}.json", f"{stem}.md", f"{stem}.nvidia-smi.txt", "gpu-check.log"]), files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)   # names the device tool returns
    log = (out / "gpu-check.log").read_text()
    assert "gpu_check on" in log and "done in" in log, log[-3000:]
    doc = json.loads((out / f"{stem}.json").read_text())
    assert doc["device"]["type"] == "cpu" and not doc["tiny"] and doc["deadline_s"] == DEADLINE_S
    for key, part in doc["parts"].items():   # every part ran or says why not; none broke
        assert part["status"] in ("ok", "incomplete", "skipped"), (key, part)
        assert part["status"] == "ok" or "deadline" in (part["reason"] or ""), (key, part)
    assert doc["parts"]["e"]["status"] == "ok"
    assert doc["parts"]["a"]["result"]["models"], "part a measured nothing"
    data = doc["parts"]["c"]["result"]["data"]   # the real file, read from the carried folder
    assert data["file"].endswith(f"gpu_data/{BEAUTY}") and data["items"] == 12101 and data["max_len"] == 50
    environment = doc["environment"]
    assert Path(environment["python_executable"]).parent == venv / "bin"
    assert environment["ttt4rec_edu_from"] == str((tree / "ttt4rec_edu").resolve())   # from the checkout
    assert environment["git_commit"] == commit and "GPU_CHECK_COMMIT" in environment["git_commit_from"]
    assert environment["nvidia_smi"]["found"] is False and environment["mamba_ssm_installed"] is False
    assert "not found" in (out / f"{stem}.nvidia-smi.txt").read_text()
    assert (out / f"{stem}.md").read_text().startswith("# GPU check")


def test_without_the_wheels_on_disk_the_rehearsal_is_skipped_with_the_reason(tmp_path, monkeypatch):
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "VENV", tmp_path / "venv")
    monkeypatch.setattr(module, "WHEELS", tmp_path / "no-wheels")
    with pytest.raises(pytest.skip.Exception, match="cannot be made offline here: no torch 2.13 wheel"):
        bare_venv()
    assert not (tmp_path / "venv").exists()
