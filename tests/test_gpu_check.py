"""scripts/gpu_check.py: the tiny CPU run works end to end, a failing part is recorded and the next one runs,
and the deadline stops a running part and skips the rest — so the script is known to work before a GPU minute
is spent on it."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args, timeout=240, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def numbers(obj, path="$"):
    """Every int/float in a JSON document, with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def the_json(folder: Path) -> dict:
    files = sorted(folder.glob("*.json"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".md").is_file()
    return json.loads(files[0].read_text())


@pytest.mark.slow
def test_tiny_cpu_run_checks_every_part(tmp_path):
    proc = run_script("--device", "cpu", "--tiny", "--bf16", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = the_json(tmp_path)
    assert doc["tiny"] is True and doc["device"]["type"] == "cpu" and doc["schema"] == 1
    assert list(doc["parts"]) == ["a", "b", "c", "d", "e"]
    for key, part in doc["parts"].items():
        assert part["status"] == "ok" or (part["status"] == "skipped" and part["reason"]), (key, part)
    for path, value in numbers(doc):
        assert math.isfinite(value), path
    assert doc["non_finite_values"] == []     # none was replaced by null either
    script = load_script()
    variants = [v for v, _, _ in script.model_variants()]
    assert {"ttt4rec-transformer-mlp", "ttt4rec-transformer-linear", "ttt4rec-mamba-mlp",
            "ttt4rec-mamba-linear", "sasrec", "pop"} <= set(variants)
    a = doc["parts"]["a"]["result"]
    assert [row["variant"] for row in a["models"]] == variants
    assert all(row["ok"] and row["score_rel"] <= script.SCORE_RTOL for row in a["models"])
    assert all("bf16_loss_rel" in row for row in a["models"])  # --bf16 checked on the CPU's autocast too
    b = doc["parts"]["b"]["result"]
    assert {row["compare"] for row in b["agreement"]} == {"minibatch_loop vs dual", "token_loop vs dual"}
    assert all(row["ok"] for row in b["agreement"])
    assert all(row["dual_ms"] > 0 and row["token_loop_ms"] > 0 and row["sasrec_step_ms"] > 0 for row in b["timing"])
    c = doc["parts"]["c"]["result"]
    trained = [row for row in c["epochs"] if row["variant"] != "pop"]
    assert len(trained) == len(variants) - 1 and all(row["train_samples_per_s"] > 0 for row in trained)
    assert [row["variant"] for row in c["protocol"]] == ["ttt4rec-transformer-mlp", "sasrec"]
    assert all(1 <= row["epochs"] <= 3 and 0 <= row["test_ndcg@10"] <= 1 for row in c["protocol"])
    d = doc["parts"]["d"]["result"]
    assert d["backend"] == "gloo" and d["world_size"] == 1 and d["epochs"] == 1
    ratio = {row["key"]: row for row in doc["headline"]}
    epochs = {row["variant"]: row["epoch_s"] for row in trained}
    assert ratio["ttt_vs_sasrec_epoch"]["value"] == pytest.approx(
        epochs["ttt4rec-transformer-mlp"] / epochs["sasrec"])
    assert ratio["fp32_vs_bf16_ttt4rec_epoch"]["value"] is None  # the trainer's bf16 is CUDA-only
    assert "CUDA only" in ratio["fp32_vs_bf16_ttt4rec_epoch"]["how"]
    assert [row["variant"] for row in c["epochs"]][:2] == ["ttt4rec-transformer-mlp", "sasrec"]  # headline first
    assert [row.get("train_mode_modules") for row in a["models"] if row["variant"] in ("gru4rec", "narm")] == \
        [["gru"], ["gru"]]
    env = doc["environment"]
    assert len(env["source_sha256"]) == 64 and env["mamba_ssm_installed"] is False
    assert "not those of the fused kernel" in env["mamba4rec_scan"]
    assert {"cudnn", "nccl", "git_commit", "git_commit_from", "nvidia_smi"} <= set(env)
    assert (tmp_path / env["nvidia_smi"]["file"]).is_file()


def _report(script, tmp_path):
    doc = {"schema": 1, "kind": script.KIND, "tiny": True, "date": "2000-01-01", "started_at": "x",
           "command": "test", "deadline_s": 60.0, "device": {"type": "cpu", "name": "cpu", "slug": "cpu"},
           "environment": {}, "settings": {},
           "parts": {k: {"title": t, "status": "pending", "reason": None, "elapsed_s": None, "result": {}}
                     for k, t in script.PARTS}}
    return script.Report(tmp_path, doc)


def test_a_part_that_raises_is_recorded_and_the_next_part_runs(tmp_path):
    script = load_script()
    report = _report(script, tmp_path)
    ran = []

    def broken(rec):
        rec["before the bug"] = 1.5
        raise ZeroDivisionError("boom in part a")

    def fine(rec):
        ran.append("b")
        rec["value"] = 2.0
        return "ok"

    def check_fails(rec):
        raise script.PartFailed("scores differ")

    def report_part(rec):
        ran.append("e")
        return "ok"

    script.run_parts([("a", broken), ("b", fine), ("c", check_fails), ("e", report_part)], report,
                     script.Deadline(60, start=time.monotonic()))
    doc = json.loads(report.json_path.read_text())   # written to disk, not only in memory
    assert ran == ["b", "e"]
    assert doc["parts"]["a"]["status"] == "error" and "boom in part a" in doc["parts"]["a"]["reason"]
    assert doc["parts"]["a"]["result"] == {"before the bug": 1.5}   # what it had measured is kept
    assert "ZeroDivisionError" in doc["parts"]["a"]["traceback"]
    assert doc["parts"]["b"]["status"] == "ok" and doc["parts"]["b"]["result"] == {"value": 2.0}
    assert doc["parts"]["c"]["status"] == "failed" and doc["parts"]["c"]["reason"] == "scores differ"
    assert doc["parts"]["d"]["status"] == "pending"   # not in the list given
    assert doc["parts"]["e"]["status"] == "ok"
    assert report.md_path.read_text().startswith("# GPU check")


def test_the_deadline_stops_a_running_part_and_skips_the_rest(tmp_path):
    script = load_script()
    report = _report(script, tmp_path)
    ran = []

    def endless(rec):
        for step in range(600):       # 30 s unless the alarm stops it
            rec["steps"] = step
            time.sleep(0.05)
        return "ok"

    def never(rec):
        ran.append("d")
        return "ok"

    start = time.monotonic()
    script.run_parts([("c", endless), ("d", never), ("e", lambda rec: ran.append("e") or "ok")], report,
                     script.Deadline(1.0, start=start))
    elapsed = time.monotonic() - start
    assert elapsed < 6, elapsed
    doc = json.loads(report.json_path.read_text())
    assert doc["parts"]["c"]["status"] == "incomplete" and "deadline" in doc["parts"]["c"]["reason"]
    assert 0 < doc["parts"]["c"]["result"]["steps"] < 599
    assert doc["parts"]["d"]["status"] == "skipped" and "deadline" in doc["parts"]["d"]["reason"]
    assert ran == ["e"]      # the report still runs after the deadline
    assert doc["parts"]["e"]["status"] == "ok"


def test_parts_a_and_b_each_get_a_share_and_part_c_stops_at_part_ds_reserve(tmp_path):
    """A slow part a or b cannot eat part c's headline rows: each is cut at its share of the deadline; part c runs
    until part d's reserve, part d gets the rest."""
    script = load_script()
    report = _report(script, tmp_path)
    spent = {}

    def endless(key):
        def run(rec):
            started = time.monotonic()
            try:
                for step in range(400):
                    rec["steps"] = step
                    time.sleep(0.02)
            finally:
                spent[key] = time.monotonic() - started
            return "ok"
        return run

    deadline = script.Deadline(4.0, start=time.monotonic())
    script.run_parts([(k, endless(k)) for k in "abcd"] + [("e", lambda rec: "ok")], report, deadline,
                     reserve_for_d=1.0)
    doc = json.loads(report.json_path.read_text())
    for key in "abcd":
        assert doc["parts"][key]["status"] == "incomplete", (key, doc["parts"][key])
    assert "share of the deadline (15%)" in doc["parts"]["a"]["reason"]
    assert spent["a"] == pytest.approx(0.6, abs=0.25) and spent["b"] == pytest.approx(0.6, abs=0.25)
    assert spent["c"] == pytest.approx(4.0 - 1.2 - 1.0, abs=0.35)    # until part d's reserve of 1 s
    assert spent["d"] == pytest.approx(1.0, abs=0.3)
    assert doc["parts"]["e"]["status"] == "ok"


def test_comparison_mode_puts_rnns_back_in_training_mode_without_changing_the_scores():
    """Part a compares in evaluation mode, but cuDNN's RNN backward refuses it: GRU4Rec's and NARM's GRU go back to
    training mode, which gives exactly the scores of evaluation mode (their dropout is 0)."""
    import torch

    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.utils import set_seed

    script = load_script()
    seq, lengths, _ = script.random_batch(40, 6, 8)
    for name in ("gru4rec", "narm"):
        set_seed(0)
        model = build_model(name, 40, 8)
        plain = model.eval().score_all(seq, lengths)
        model, names = script.comparison_mode(model)
        assert names == ["gru"]
        assert model.gru.training and not any(m.training for n, m in model.named_modules() if n != "gru")
        assert torch.equal(model.score_all(seq, lengths), plain)
    set_seed(0)
    stacked = build_model("gru4rec", 40, 8)
    stacked.gru = torch.nn.GRU(64, 64, num_layers=2, dropout=0.3, batch_first=True)
    with pytest.raises(ValueError, match="dropout 0.3 between its 2 layers"):
        script.comparison_mode(stacked)


def test_part_c_rewrites_the_report_after_every_row(tmp_path):
    """A hard kill loses at most the row being measured: after each epoch row the JSON on disk already holds it."""
    import torch

    script = load_script()
    args = script.build_parser().parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    deadline = script.Deadline(120, start=time.monotonic())
    report = _report(script, tmp_path)
    on_disk = []

    def save():
        report.write()
        c = json.loads(report.json_path.read_text())["parts"]["c"]["result"]
        on_disk.append(len([r for r in c.get("epochs", []) if "epoch_s" in r or "note" in r]))

    ctx = script.Context(args, torch.device("cpu"), deadline, save=save)
    script.run_parts([("c", lambda rec: script.part_beauty(ctx, rec))], report, deadline, ctx=ctx)
    rows = len(script.model_variants())
    assert json.loads(report.json_path.read_text())["parts"]["c"]["status"] == "ok"
    for n in range(1, rows + 1):     # the file grew one measured row at a time
        assert n in on_disk, (n, on_disk)
    assert on_disk == sorted(on_disk)


def test_command_line_deadline_and_bad_arguments(tmp_path):
    proc = run_script("--device", "cpu", "--tiny", "--deadline-s", "0.5", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = the_json(tmp_path)
    assert doc["deadline_s"] == 0.5
    for key in "abcd":
        assert doc["parts"][key]["status"] == "skipped" and "deadline" in doc["parts"][key]["reason"]
    assert doc["parts"]["e"]["status"] == "ok"
    assert all(row["value"] is None for row in doc["headline"])
    for args, message in ((["--device", "cpu", "--tiny"], "--tiny needs --out"),
                          (["--device", "cpu", "--parts", "az", "--out", str(tmp_path)], "unknown part(s) z"),
                          (["--device", "cpu", "--data", str(tmp_path / "missing.txt")], "no such file"),
                          (["--device", "cpu", "--deadline-s", "-3"], "must be positive")):
        bad = run_script(*args, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr


def test_headline_ratios_and_goals():
    script = load_script()
    doc = {"parts": {"b": {"result": {"timing": [{"L": 100, "dual_ms": 2.0, "token_loop_ms": 30.0}]}},
                     "c": {"result": {"data": {"name": "beauty"}, "batch_size": 2048,
                                      "epochs": [{"variant": "ttt4rec-transformer-mlp", "epoch_s": 3.0},
                                                 {"variant": "sasrec", "epoch_s": 1.0}],
                                      "bf16": {"epoch_s": 2.5}}}}}
    rows = {row["key"]: row for row in script.headline(doc)}
    assert rows["ttt_vs_sasrec_epoch"]["value"] == 3.0 and rows["ttt_vs_sasrec_epoch"]["met"] is False
    assert rows["token_loop_vs_dual_L100"]["value"] == 15.0 and rows["token_loop_vs_dual_L100"]["met"] is True
    assert rows["fp32_vs_bf16_ttt4rec_epoch"]["value"] == pytest.approx(1.2)
    assert rows["fp32_vs_bf16_ttt4rec_epoch"]["met"] is False
    found = []
    assert script.json_safe({"x": float("nan"), "y": [float("inf"), 1.0]}, found) == {"x": None, "y": [None, 1.0]}
    assert found == ["$.x = nan", "$.y[0] = inf"]


def test_protocol_in_stretches_equals_one_uninterrupted_run(tmp_path, monkeypatch):
    """Part c trains the protocol in stretches of epochs that fit before the deadline, resuming from the trainer's
    checkpoint in between; the result must be the one of a single run with the same settings."""
    import torch

    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.train import train
    from ttt4rec_edu.utils import set_seed

    script = load_script()
    args = script.build_parser().parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    ctx = script.Context(args, torch.device("cpu"), script.Deadline(120, start=time.monotonic()))
    _, splits, _ = script.load_data(ctx)
    import ttt4rec_edu.train as trainer

    calls, real_train = [], trainer.train
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append((a[2].epochs, k["resume"])) or
                        real_train(*a, **k))
    row = {}
    # a first guess of 10 s per epoch and 35 s left: the first stretch is one epoch (35 − 2 × 10 fits one), then
    # the measured epoch time (well under a second) lets the second stretch take the other two
    script.run_protocol(ctx, "sasrec", {}, splits, time.monotonic() + 35, row, first_epoch_s=10.0)
    assert row["epochs"] == 3 and len(row["valid_ndcg@10_per_epoch"]) == 3
    assert calls == [(1, True), (3, True)]     # two stretches: epoch 1, then epochs 2-3 resumed
    monkeypatch.undo()
    set_seed(0)
    model = build_model("sasrec", splits.num_items, splits.max_len)
    single = train(model, splits, script._train_config(ctx, epochs=3, patience=5))
    assert row["valid_ndcg@10_per_epoch"] == [h["valid"]["ndcg@10"] for h in single["history"]]
    assert row["test_ndcg@10"] == single["test"]["ndcg@10"] and row["best_epoch"] == single["best_epoch"]


def test_part_c_without_time_for_its_epochs_is_incomplete_not_ok(tmp_path):
    """Less time left than part d's reserve: part c skips every model (saying why) and is recorded as incomplete."""
    import torch

    script = load_script()
    args = script.build_parser().parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    ctx = script.Context(args, torch.device("cpu"), script.Deadline(120, start=time.monotonic()))
    script.load_data(ctx)       # loaded before, so that part c finds its time used up at its first row
    report = _report(script, tmp_path)
    deadline = script.Deadline(31.0, start=time.monotonic())   # 1 s before part d's reserve of 30 s
    script.run_parts([("c", lambda rec: script.part_beauty(ctx, rec))], report, deadline, ctx=ctx, reserve_for_d=30)
    part = json.loads(report.json_path.read_text())["parts"]["c"]
    assert part["status"] == "incomplete" and "no time left" in part["reason"], part
    assert all("deadline" in row["skipped"] for row in part["result"]["epochs"])
    assert all("no time left" in row["reason"] for row in part["result"]["protocol"])


def test_without_the_data_file_it_stops_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    """Parts c and d need Amazon Beauty: without the file (no --data, no gpu_data/, no cache or mirror) the script
    stops before any part runs, in one line, exit 2 — not after parts a and b have spent the GPU minutes."""
    script = load_script()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(script, "REPO", empty)               # no gpu_data/ folder
    monkeypatch.setenv("TTT4REC_DATA_MIRRORS", str(empty))   # no mirror and an empty cache
    monkeypatch.setenv("TTT4REC_DATA_DIR", str(empty))
    for parts in ("abcde", "c", "d"):
        with pytest.raises(SystemExit) as exit_:
            script.main(["--device", "cpu", "--parts", parts, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "no Amazon Beauty file for parts c and d" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()          # nothing ran, nothing was written
    empty_file = tmp_path / "empty.txt"
    empty_file.write_text("")
    with pytest.raises(SystemExit):
        script.main(["--device", "cpu", "--data", str(empty_file), "--out", str(tmp_path / "out")])
    assert "the file is empty" in capsys.readouterr().err


def test_a_cuda_index_beyond_the_gpus_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    import torch

    script = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as exit_:
        script.main(["--device", "cuda:1", "--parts", "ab", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.strip().splitlines()[-1].endswith("--device cuda:1: must be cuda:0 ... cuda:0 (torch sees 1 CUDA "
                                                 "GPU(s) here), got cuda:1")
    assert not (tmp_path / "out").exists()


def test_two_runs_never_share_a_file_and_the_commit_comes_from_the_environment(tmp_path, monkeypatch):
    script = load_script()
    first = _report(script, tmp_path)
    first.doc["started_at"] = "2000-01-01T10:11:12+00:00"
    first = script.Report(tmp_path, first.doc)
    first.write()
    second = script.Report(tmp_path, dict(first.doc))
    assert first.stem == "2000-01-01-101112-cpu-tiny" and second.stem == "2000-01-01-101112-cpu-tiny-2"
    monkeypatch.setenv(script.COMMIT_ENV, "0123abc")
    assert script.commit_record() == {"git_commit": "0123abc",
                                      "git_commit_from": f"environment variable {script.COMMIT_ENV}"}
    monkeypatch.setenv(script.COMMIT_ENV, "COMMIT")   # the placeholder left in by mistake: recorded, flagged
    assert "replace COMMIT" in script.commit_record()["git_commit_note"]


def test_the_source_digest_names_the_code(tmp_path):
    script = load_script()
    for name in ("ttt4rec_edu/a.py", "ttt4rec_edu/sub/b.py", "scripts/gpu_check.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    first = script.source_digest(tmp_path)
    (tmp_path / "ttt4rec_edu" / "notes.txt").write_text("not source")
    assert script.source_digest(tmp_path) == first
    (tmp_path / "ttt4rec_edu" / "sub" / "b.py").write_text("changed")
    assert script.source_digest(tmp_path) != first


def test_the_device_command_is_documented_verbatim_everywhere():
    """One command for the GPU machine: the README, chapter 10 and the script's docstring show exactly the string
    that tests/test_gpu_rehearsal.py runs (chapter 10 with shell line continuations), with the carried folder and
    the timeout."""
    script = load_script()
    command = script.DEVICE_COMMAND
    assert command.startswith("set -o pipefail;") and " python3 scripts/gpu_check.py " in command
    assert '--out "$OUT"' in command and 'tee "$OUT/gpu-check.log"' in command and "install" not in command
    chapter = json.loads((REPO / "book" / "10_gpu_rerun.ipynb").read_text())
    chapter_text = "\n".join("".join(cell["source"]) for cell in chapter["cells"])
    for where, text in (("README.md", (REPO / "README.md").read_text()), ("chapter 10", chapter_text),
                        ("the docstring", script.__doc__)):
        joined = re.sub(r"\s*\\\n\s*", " ", text)     # a shell line continuation (the page is 88 wide)
        assert command in joined, where
        assert 'carry=["gpu_data"]' in text and f"timeout_s={script.DEVICE_TIMEOUT_S}" in text, where
    assert script.device_command("abc1234").count("GPU_CHECK_COMMIT=abc1234 ") == 1
    assert "COMMIT " not in script.device_command("abc1234").replace("GPU_CHECK_COMMIT", "")
    ignored = subprocess.run(["git", "check-ignore", "-q", "gpu_data/amazon-beauty-5core.txt"], cwd=REPO)
    assert ignored.returncode == 0      # the carried data folder is never committed


def test_print_device_command_fills_in_the_commit_and_warns_about_the_size(monkeypatch, capsys):
    script = load_script()
    if script._git("rev-parse", "--short", "HEAD") is None:
        pytest.skip("not a git checkout")
    monkeypatch.setattr(script, "SENT_LIMIT_BYTES", 1)     # anything is too much: the warning must show
    assert script.main(["--print-device-command"]) == 0
    out, err = capsys.readouterr()
    carry, command = out.strip().splitlines()
    assert carry == f'carry=["gpu_data"] timeout_s={script.DEVICE_TIMEOUT_S}'
    commit = re.search(r"GPU_CHECK_COMMIT=(\S+) ", command).group(1)
    assert re.fullmatch(r"[0-9a-f]{7,40}", commit) and command == script.device_command(commit)
    assert "over the device tool's 0 MiB" in err


def test_a_targeted_rerun_gives_its_part_the_whole_deadline(tmp_path):
    """Without part c there is nothing to protect: a rerun of part a alone is not cut at 15 %."""
    script = load_script()
    report = _report(script, tmp_path)
    deadline = script.Deadline(1.0, start=time.monotonic())

    def a_bit(rec):
        time.sleep(0.4)     # beyond 15 % of 1 s
        return "ok"

    script.run_parts([("a", a_bit), ("e", lambda rec: "ok")], report, deadline, shares={})
    assert json.loads(report.json_path.read_text())["parts"]["a"]["status"] == "ok"


def test_modules_torch_loads_lazily_are_imported_before_any_alarm(tmp_path):
    """An alarm that stops a part in the middle of torch's lazy import of torch._dynamo (and sympy) left a
    half-initialised sympy behind, and every later part failed on it. Part a alone never imports them, so a run of
    part a that ends with both loaded shows that main imported them up front, outside any alarm."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); import gpu_check; "
            f"code = gpu_check.main(['--device', 'cpu', '--tiny', '--parts', 'a', '--out', {str(tmp_path)!r}]); "
            "print('loaded:', [m for m in gpu_check.LAZY_IMPORTS if m in sys.modules], code)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded: ['sympy', 'torch._dynamo'] 0" in proc.stdout, proc.stdout[-2000:]
    assert "could not preload" not in proc.stdout
