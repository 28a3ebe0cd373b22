"""The multi-seed sweep runner (tp_keras.sweep) and the paper-table assembler (tp_keras.tables).

Table math and resume logic run on fake seed folders and a fake launcher (no TensorFlow); one real tiny sweep
runs the launcher end to end over 2 seeds on IDX files written here.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tp_keras import sweep, tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_seed(out, seed, *, status="finished", test_acc=(0.9, 0.95), val_acc=(0.91, 0.94),
               train_loss=(0.5, 0.2), epoch_seconds=(3.0, 1.0), pretrain=True, classification=True):
    """A seed folder as the launcher leaves it: metrics.jsonl (epoch 0 = feedback pre-training), summary.json
    (the experiment's bookkeeping: best validation epoch = first argmax) and config.json."""
    folder = os.path.join(out, f"seed_{seed}")
    os.makedirs(folder, exist_ok=True)
    rows = [{"epoch": 0, "rec_loss_first": 1.0, "rec_loss_init": 0.5, "fb_seconds": 9.0}] if pretrain else []
    for i in range(len(train_loss)):
        row = {"epoch": i + 1, "train_loss": train_loss[i], "epoch_seconds": epoch_seconds[i],
               "test_loss": 1.0 - test_acc[i], "val_loss": 1.0 - val_acc[i]}
        if classification:
            row.update(test_acc=test_acc[i], val_acc=val_acc[i], train_acc=0.9)
        rows.append(row)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    best = int(np.argmax(val_acc)) if classification else int(np.argmin([1 - v for v in val_acc]))
    summary = {"method": "ddtp_linear", "dataset": "mnist", "seed": seed, "status": status,
               "total_seconds": 10.0 + seed, "epochs_run": len(train_loss),
               "loss_train_last": train_loss[-1], "loss_train_best": min(train_loss),
               "loss_test_last": 1.0 - test_acc[-1], "epoch_best_loss": best + 1,
               "loss_test_val_best": 1.0 - test_acc[best]}
    if classification:
        summary.update(acc_test_last=test_acc[-1], epoch_best_acc=best + 1, acc_test_val_best=test_acc[best],
                       error_test_val_best=1.0 - test_acc[best])
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"method": "ddtp_linear", "dataset": "mnist", "precision": "float32",
                   "epochs": len(train_loss), "no_val_set": False}, f)
    return folder


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- Table math -----------------------------------------------------------------------------------------------

def test_summarize_sweep_means_sds_and_per_epoch(tmp_path):
    out = str(tmp_path / "mnist_DDTPlinear")
    accs = {0: (0.90, 0.95, 0.96), 1: (0.92, 0.93, 0.97), 2: (0.80, 0.97, 0.96)}
    vals = {0: (0.90, 0.96, 0.95), 1: (0.91, 0.92, 0.99), 2: (0.85, 0.99, 0.99)}  # seed 2: tie -> first argmax
    losses = {0: (0.5, 0.3, 0.2), 1: (0.6, 0.1, 0.15), 2: (0.7, 0.4, 0.3)}
    for s in range(3):
        write_seed(out, s, test_acc=accs[s], val_acc=vals[s], train_loss=losses[s], epoch_seconds=(5.0, 2.0, 3.0 + s))
    write_seed(out, 3, status="running", test_acc=(0.1,), val_acc=(0.1,), train_loss=(9.0,), epoch_seconds=(1.0,))
    result = sweep.summarize_sweep(out)

    assert result["cell"] == "mnist_DDTPlinear" and result["task"] == "classification"
    assert [r["seed"] for r in result["rows"]] == [0, 1, 2, 3]
    assert result["final_seeds"] == [0, 1, 2] and result["other_seeds"] == [3]
    assert result["statuses"] == {"finished": 3} and result["epochs"] == (3, 3)
    errors = [100 * (1 - 0.95), 100 * (1 - 0.97), 100 * (1 - 0.97)]  # test error at the best-validation epoch
    assert [r["error_test_val_best_pct"] for r in result["rows"][:3]] == pytest.approx(errors)
    stats = result["summary"]["error_test_val_best_pct"]
    assert stats["n"] == 3  # the running seed is left out
    assert stats["mean"] == pytest.approx(statistics.mean(errors))
    assert stats["sd"] == pytest.approx(float(np.std(errors, ddof=1)))
    assert result["summary"]["loss_train_last"]["mean"] == pytest.approx(np.mean([0.2, 0.15, 0.3]))
    assert result["summary"]["loss_train_best"]["mean"] == pytest.approx(np.mean([0.2, 0.1, 0.3]))
    assert result["summary"]["acc_test_last"]["sd"] == pytest.approx(float(np.std([0.96, 0.97, 0.96], ddof=1)))
    # Seconds per epoch: epochs >= 1 only (the pre-training row's fb_seconds is not an epoch); steady: from epoch 2.
    assert result["rows"][0]["s_per_epoch"] == pytest.approx((5 + 2 + 3) / 3)
    assert result["rows"][2]["s_per_epoch_steady"] == pytest.approx((2 + 5) / 2)
    # Per-epoch test error over the final seeds.
    per_epoch = result["per_epoch"]
    assert [e["epoch"] for e in per_epoch] == [1, 2, 3] and all(e["n"] == 3 for e in per_epoch)
    second = [100 * (1 - accs[s][1]) for s in range(3)]
    assert per_epoch[1]["test_error_pct"]["mean"] == pytest.approx(np.mean(second))
    assert per_epoch[1]["test_error_pct"]["sd"] == pytest.approx(float(np.std(second, ddof=1)))
    assert per_epoch[2]["epoch_seconds"]["mean"] == pytest.approx(4.0)

    sweep.write_results(out)
    rows = csv_rows(os.path.join(out, "results.csv"))
    assert [r["seed"] for r in rows] == ["0", "1", "2", "3", "mean", "sd", "n"]
    assert float(rows[4]["error_test_val_best_pct"]) == pytest.approx(stats["mean"])
    assert float(rows[5]["error_test_val_best_pct"]) == pytest.approx(stats["sd"])
    assert rows[6]["error_test_val_best_pct"] == "3" and rows[3]["status"] == "running"
    per_epoch_rows = csv_rows(os.path.join(out, "results_per_epoch.csv"))
    assert float(per_epoch_rows[1]["test_error_pct_mean"]) == pytest.approx(np.mean(second))
    md = open(os.path.join(out, "results.md")).read()
    assert f"**mean ± SD (n=3)**" in md
    assert f"{stats['mean']:.2f} ± {stats['sd']:.2f}" in md
    assert "not final (running, interrupted or failed, left out of the means): 3" in md
    assert "## Per epoch: test error (%), mean ± SD over seeds" in md
    assert f"| 2 | 3 | {np.mean(second):.2f} ± {np.std(second, ddof=1):.2f} |" in md


def test_summary_counts_diverged_and_single_seed_has_no_sd(tmp_path):
    out = str(tmp_path / "sw")
    write_seed(out, 0)
    write_seed(out, 1, status="diverged: non-finite the loss in epoch 2, batch 3")
    result = sweep.summarize_sweep(out)
    assert result["statuses"] == {"finished": 1, "diverged": 1} and result["summary"]["epochs_run"]["n"] == 2
    assert "1 finished, 1 diverged" in sweep.results_markdown(result)
    assert sweep.main(["--report_only", f"--out={out}"]) == 0  # rewrites the tables, runs nothing
    assert csv_rows(os.path.join(out, "results.csv"))[-1]["status"] == "1 finished, 1 diverged"
    one = str(tmp_path / "one")
    write_seed(one, 5)
    stats = sweep.summarize_sweep(one)["summary"]["error_test_val_best_pct"]
    assert stats["n"] == 1 and stats["sd"] is None
    assert sweep.format_mean_sd(stats, "pct") == "5.00"


def test_regression_sweep_uses_losses(tmp_path):
    out = str(tmp_path / "st")
    for s in range(2):
        write_seed(out, s, classification=False, val_acc=(0.5, 0.6 + s / 10), test_acc=(0.4, 0.5))
    result = sweep.summarize_sweep(out)
    assert result["task"] == "regression"
    keys = [k for k, _, _ in result["columns"]]
    assert keys[:2] == ["loss_test_val_best", "loss_test_last"] and "error_test_val_best_pct" not in keys
    assert result["summary"]["loss_test_val_best"]["mean"] == pytest.approx(0.5)
    assert result["per_epoch"][0]["test_loss"]["mean"] == pytest.approx(0.6)
    assert "## Per epoch: test loss" in sweep.results_markdown(result)


# --- Running, resuming, failures (a fake launcher: no TensorFlow) ------------------------------------------------

FAKE_LAUNCHER = textwrap.dedent('''
    """Stands in for tp_keras.launch: writes what the launcher writes, fails or diverges on request."""
    import json, os, signal, sys, time
    args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in sys.argv[1:])
    seed, workdir, epochs = int(args["seed"]), args["workdir"], int(args.get("epochs", 2))

    def interrupted(signum, frame):  # Ctrl-C leaves an "interrupted" summary, as the launcher does
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump({"status": "interrupted"}, f)
        print("error: interrupted: continue with --resume", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGINT, interrupted)
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(json.dumps(sys.argv[1:]) + "\\n")
    if os.environ.get("FAKE_SLEEP"):  # a long run
        time.sleep(float(os.environ["FAKE_SLEEP"]))
    if str(seed) in os.environ.get("FAKE_FAIL", "").split(","):
        print("Traceback (most recent call last):")
        print("error: boom in seed %d" % seed, file=sys.stderr)
        sys.exit(2)
    os.makedirs(workdir, exist_ok=True)
    rows = [{"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.5 + seed / 100 + e / 100, "val_acc": 0.5 + e / 100,
             "epoch_seconds": 1.0} for e in range(1, epochs + 1)]
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\\n" for r in rows)
    diverge = str(seed) in os.environ.get("FAKE_DIVERGE", "").split(",")
    summary = {"status": "diverged: non-finite the loss in epoch 1, batch 0" if diverge else "finished",
               "epochs_run": epochs, "error_test_val_best": 1 - rows[-1]["test_acc"], "acc_test_last":
               rows[-1]["test_acc"], "loss_train_last": 1.0 / epochs, "loss_train_best": 1.0 / epochs,
               "total_seconds": float(epochs)}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f)
    sys.exit(2 if diverge else 0)
''')


@pytest.fixture
def fake_launcher(tmp_path, monkeypatch):
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "fake_launch.py").write_text(FAKE_LAUNCHER)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    flagfile = tmp_path / "cell.flags"
    flagfile.write_text("--method=ddtp_linear\n")

    def calls_made():
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]
    return str(flagfile), calls_made


def _sweep(flagfile, out, *more):
    return sweep.main([f"--flagfile={flagfile}", f"--out={out}", "--launcher=fake_launch", *more])


def test_sweep_runs_in_parallel_reports_failures_and_resumes(fake_launcher, tmp_path, monkeypatch, capsys):
    flagfile, calls_made = fake_launcher
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    monkeypatch.setenv("FAKE_FAIL", "2")
    monkeypatch.setenv("FAKE_DIVERGE", "3")
    assert _sweep(flagfile, out, "--seeds=4", "--parallel=2", "--data_dir=/data", "--", "--epochs=3") == 1
    text = capsys.readouterr().out
    for s in range(4):
        assert f"seed {s} started" in text
    assert "seed 0 finished in" in text and "3 epochs" in text
    failed = [line for line in text.splitlines() if "seed 2 FAILED" in line]
    assert len(failed) == 1 and "(exit 2)" in failed[0] and "error: boom in seed 2" in failed[0]
    assert "seed 3 ended (final, kept in the tables)" in text and "diverged" in text
    assert "failed seeds: 2" in text
    args = {int(a[1].split("=")[1]): a for a in calls_made()}
    assert args[0] == [f"--flagfile={flagfile}", "--seed=0", f"--workdir={os.path.join(out, 'seed_0')}",
                       "--resume", "--data_dir=/data", "--epochs=3"]
    rows = csv_rows(os.path.join(out, "results.csv"))
    assert [r["seed"] for r in rows] == ["0", "1", "2", "3", "mean", "sd", "n"]
    assert rows[2]["status"] == "no summary" and rows[6]["status"] == "2 finished, 1 diverged"
    assert rows[6]["error_test_val_best_pct"] == "3"

    # Rerun: finished and diverged seeds are skipped (summary untouched), the failed seed runs again.
    mtime = os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns
    monkeypatch.setenv("FAKE_FAIL", "")
    before = len(calls_made())
    assert _sweep(flagfile, out, "--seeds=4", "--parallel=2", "--data_dir=/elsewhere", "--", "--epochs=3") == 0
    text = capsys.readouterr().out
    assert "seed 0 skipped" in text and "seed 1 skipped" in text and "seed 3 skipped" in text
    assert "seed 2 started" in text and "seed 2 finished" in text
    assert [int(a[1].split("=")[1]) for a in calls_made()[before:]] == [2]
    assert os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns == mtime
    assert csv_rows(os.path.join(out, "results.csv"))[6]["status"] == "3 finished, 1 diverged"

    # Different extra flags: finished seeds are run again (with --resume, so raising --epochs continues them).
    before = len(calls_made())
    assert _sweep(flagfile, out, "--seeds=2", "--", "--epochs=4") == 0
    text = capsys.readouterr().out
    assert "flagfile or extra flags changed" in text
    assert [a[-1] for a in calls_made()[before:]] == ["--epochs=4", "--epochs=4"]


def test_sweep_does_not_start_a_seed_whose_launcher_still_runs(fake_launcher, tmp_path, capsys):
    flagfile, calls_made = fake_launcher
    out = str(tmp_path / "sw")
    os.makedirs(os.path.join(out, "seed_0"))
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fake_launch"])
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{stray.pid}/cmdline") and time.time() < deadline:  # until it has exec'd
        with open(f"/proc/{stray.pid}/cmdline", "rb") as f:
            if b"fake_launch" in f.read():
                break
        time.sleep(0.02)
    try:
        with open(os.path.join(out, "seed_0", sweep.PID_NAME), "w") as f:
            f.write(f"{stray.pid}\n")
        assert _sweep(flagfile, out, "--seeds=2") == 1
    finally:
        stray.kill()
        stray.wait()
    text = capsys.readouterr().out
    assert f"seed 0 not started: its launcher (pid {stray.pid})" in text and "seed 1 finished" in text
    assert [a[1] for a in calls_made()] == ["--seed=1"]


def test_terminated_sweep_interrupts_its_children(fake_launcher, tmp_path):
    flagfile, calls_made = fake_launcher
    out = str(tmp_path / "sw")
    env = dict(os.environ, FAKE_SLEEP="60", PYTHONPATH=os.pathsep.join([REPO, os.environ["PYTHONPATH"]]))
    proc = subprocess.Popen([sys.executable, "-m", "tp_keras.sweep", f"--flagfile={flagfile}", f"--out={out}",
                             "--seeds=2", "--parallel=2", "--launcher=fake_launch"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while len(calls_made()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.terminate()
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted: stopping the running seeds" in text
    for s in range(2):
        assert json.load(open(os.path.join(out, f"seed_{s}", "summary.json")))["status"] == "interrupted"
        assert not os.path.exists(os.path.join(out, f"seed_{s}", sweep.PID_NAME))
    assert "FAILED (exit 2)" in text and "error: interrupted: continue with --resume" in text


def test_sweep_refuses_its_own_flags_after_the_separator(fake_launcher, tmp_path, capsys):
    flagfile, _ = fake_launcher
    assert _sweep(flagfile, str(tmp_path / "sw"), "--", "--seed=3") == 2
    assert "the sweep sets --seed, --workdir and --resume itself" in capsys.readouterr().err


# --- One real sweep ---------------------------------------------------------------------------------------------


def test_real_sweep_two_seeds_then_resume(mnist_dir, tmp_path):
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("# a tiny cell\n--method=ddtp_linear\n--dataset=mnist\n--precision=float32\n")
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    command = [sys.executable, "-m", "tp_keras.sweep", f"--flagfile={flagfile}", "--seeds=2", f"--out={out}",
               f"--data_dir={mnist_dir}", "--", "--num_hidden=2", "--size_hidden=8", "--batch_size=16",
               "--validation_size=20", "--epochs=2", "--epochs_fb=1"]
    env = dict(os.environ, PYTHONPATH=REPO)
    first = subprocess.run(command[:5] + ["--parallel=2"] + command[5:], capture_output=True, text=True,
                           cwd=str(tmp_path), env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "seed 0 finished" in first.stdout and "seed 1 finished" in first.stdout
    rows = csv_rows(os.path.join(out, "results.csv"))
    assert [r["seed"] for r in rows] == ["0", "1", "mean", "sd", "n"]
    assert [r["status"] for r in rows[:2]] == ["finished", "finished"]
    assert all(r["epochs_run"] == "2" for r in rows[:2]) and rows[4]["error_test_val_best_pct"] == "2"
    errors = [float(r["error_test_val_best_pct"]) for r in rows[:2]]
    assert float(rows[2]["error_test_val_best_pct"]) == pytest.approx(np.mean(errors))
    assert float(rows[3]["error_test_val_best_pct"]) == pytest.approx(np.std(errors, ddof=1))
    md = open(os.path.join(out, "results.md")).read()
    assert "**mean ± SD (n=2)**" in md and "| 2 | 2 |" in md  # per-epoch table: epoch 2 over 2 seeds

    # An interrupted sweep: seed 1's run did not finish. The rerun skips seed 0 and resumes seed 1.
    summary_1 = os.path.join(out, "seed_1", "summary.json")
    with open(summary_1) as f:
        summary = json.load(f)
    summary["status"] = "running"
    with open(summary_1, "w") as f:
        json.dump(summary, f)
    mtime = os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns
    second = subprocess.run(command, capture_output=True, text=True,
                            cwd=str(tmp_path), env=env, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "seed 0 skipped" in second.stdout and "seed 1 finished" in second.stdout
    assert os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns == mtime
    assert json.load(open(summary_1))["status"] == "finished"
    assert "resuming from" in open(os.path.join(out, "seed_1", "launch.log")).read()
    assert [r["status"] for r in csv_rows(os.path.join(out, "results.csv"))[:2]] == ["finished", "finished"]

    # The tables command places the sweep in Table 1's MNIST DDTP-linear cell, marked as a short horizon.
    result = subprocess.run([sys.executable, "-m", "tp_keras.tables", f"--sweeps={tmp_path / 'sweeps'}",
                             "--out=-"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    row = _table_row(result.stdout, "Table 1", "DDTP-linear")
    assert row[1].endswith("(n=2, 2 ep)†") and row[2] == "2.04 ± 0.08 %"


# --- Tables -----------------------------------------------------------------------------------------------------

def _table_row(text, title, label):
    """The cells of the row `label` in the first Markdown table after the heading containing `title`."""
    section = text[text.index(title):]
    for line in section.splitlines():
        if line.startswith(f"| {label} |"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row {label!r} under {title!r}")


def test_tables_place_cells_with_paper_column(tmp_path):
    root = tmp_path / "sweeps"
    for s in range(3):  # Table 1, MNIST, DDTP-linear, named as the reference config
        write_seed(str(root / "mnist_DDTPlinear"), s, test_acc=(0.97, 0.98 - s / 100), val_acc=(0.9, 0.95),
                   train_loss=(0.3, 0.1))
    for s in range(2):  # Table 1, Frozen-MNIST, BP, named with the launcher's method name; 100 epochs
        write_seed(str(root / "mnist_frozen_bp"), s, test_acc=(0.95,) * 100, val_acc=(0.9,) * 100,
                   train_loss=(0.1,) * 100, epoch_seconds=(1.0,) * 100)
    write_seed(str(root / "mnist_DDTPRHL_extrafb"), 0)  # a variant row
    for s in range(2):  # Table 2: training loss
        write_seed(str(root / "fashion_mnist_train_DTP"), s, train_loss=(0.5, 0.02 + s / 100))
    write_seed(str(root / "cifar10_DDTPConv"), 0, test_acc=(0.7, 0.75), val_acc=(0.7, 0.8))  # Table 3
    write_seed(str(root / "my_experiment"), 0)  # matches no cell
    (root / "empty_folder").mkdir()  # not a sweep

    assert tables.main([f"--sweeps={root}", f"--out={tmp_path / 'tables.md'}"]) == 0
    text = (tmp_path / "tables.md").read_text()

    mnist = _table_row(text, "Table 1", "DDTP-linear")
    errors = [100 * (1 - (0.98 - s / 100)) for s in range(3)]
    assert mnist[1] == f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f} % (n=3, 2 ep)†"
    assert mnist[2] == "2.04 ± 0.08 %"  # paper, MNIST
    assert mnist[3] == "–" and mnist[4] == "6.42 ± 0.17 %"  # Frozen-MNIST: no sweep; paper
    assert mnist[7] == "–" and mnist[8] == "50.36 ± 0.26 %"  # CIFAR10
    bp = _table_row(text, "Table 1", "BP")
    assert bp[3] == "5.00 ± 0.00 % (n=2, 100 ep)"  # 100 epochs: no short-horizon mark
    assert bp[4] == "4.39 ± 0.13 %" and bp[1] == "–"
    assert _table_row(text, "Table 1", "DFA")[4] == "/"  # DFA on Frozen-MNIST: not applicable in the paper
    variant = _table_row(text, "Table 1", "DDTP-RHL (extra fb)‡")
    assert variant[1].startswith("5.00 % (n=1, 2 ep)") and variant[2] == "2.10 ± 0.14 %"
    assert _table_row(text, "Table 1", "DDTP-RHL")[1] == "–"
    assert "† fewer epochs than the reference config" in text and "‡ an alternative reference config" in text

    dtp = _table_row(text, "Table 2", "DTP")
    losses = [0.02, 0.03]
    assert dtp[5] == f"({np.mean(losses) / 0.01:.2f} ± {np.std(losses, ddof=1) / 0.01:.2f})e-2 (n=2, 2 ep)†"
    assert dtp[6] == "(4.07 ± 0.42)e-2" and dtp[1] == "–" and dtp[2] == "(1.28 ± 1.04)e-7"
    assert _table_row(text, "Table 2", "BP")[4] == "0.191 ± 0.019"

    cnn = _table_row(text, "Table 3", "DDTP-linear")
    assert cnn[1] == "25.00 % (n=1, 2 ep)†" and cnn[2] == "23.99 ± 0.31 %"
    assert cnn[3] == "–" and cnn[4] == "not reported"
    assert _table_row(text, "Table 3", "DFA")[2] == "30.00 ± 0.74 %"

    assert "`mnist_frozen_DTP`" not in text  # no such sweep, no details row
    assert "| `mnist_frozen_BP` |" in text and "2 (2 finished)" in text  # details row of the BP sweep
    assert "## Sweeps that match no paper cell" in text and "my_experiment" in text
    assert "empty_folder" not in text


def test_every_reference_config_has_a_cell_and_a_paper_number():
    configs = os.path.join(REPO, "..", "shared", "reference", "configs.json")
    if os.path.exists(configs):  # the reference's final configs, where this checkout has them
        with open(configs) as f:
            names = {n for n in json.load(f)["final_configs"] if not n.startswith("toy_")}
        assert names == set(tables.CELLS)
    for name, (table, column, row, _) in tables.CELLS.items():
        if table != "3" or column == "test error":
            assert row in tables.PAPER[table][column], name
    assert tables.cell_of("mnist_dtp_pretrained") == "mnist_DTP_pretrained"
    assert tables.cell_of("Fashion-MNIST_train_DDTP_linear") == "fashion_mnist_train_DDTPlinear"
    assert tables.cell_of("mnist_gnt") is None
