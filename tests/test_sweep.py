"""The multi-seed sweep (tp_keras.sweep, an Optuna study over seeds) and the paper-table assembler (tp_keras.tables).

Table math runs on fake seed folders; running, resuming and failures on worker processes that train with
tests/fake_runner.py (no TensorFlow); one real tiny sweep trains 2 seeds end to end on IDX files written here.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from tp_keras.paper import sweep, sweep_results, tables

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
    result = sweep_results.summarize_sweep(out)

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

    sweep_results.write_results(out)
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
    result = sweep_results.summarize_sweep(out)
    assert result["statuses"] == {"finished": 1, "diverged": 1} and result["summary"]["epochs_run"]["n"] == 2
    assert "1 finished, 1 diverged" in sweep_results.results_markdown(result)
    assert sweep.main(["--report_only", f"--out={out}"]) == 0  # rewrites the tables, runs nothing
    assert csv_rows(os.path.join(out, "results.csv"))[-1]["status"] == "1 finished, 1 diverged"
    one = str(tmp_path / "one")
    write_seed(one, 5)
    stats = sweep_results.summarize_sweep(one)["summary"]["error_test_val_best_pct"]
    assert stats["n"] == 1 and stats["sd"] is None
    assert sweep_results.format_mean_sd(stats, "pct") == "5.00"


def test_regression_sweep_uses_losses(tmp_path):
    out = str(tmp_path / "st")
    for s in range(2):
        write_seed(out, s, classification=False, val_acc=(0.5, 0.6 + s / 10), test_acc=(0.4, 0.5))
    result = sweep_results.summarize_sweep(out)
    assert result["task"] == "regression"
    keys = [k for k, _, _ in result["columns"]]
    assert keys[:2] == ["loss_test_val_best", "loss_test_last"] and "error_test_val_best_pct" not in keys
    assert result["summary"]["loss_test_val_best"]["mean"] == pytest.approx(0.5)
    assert result["per_epoch"][0]["test_loss"]["mean"] == pytest.approx(0.6)
    assert "## Per epoch: test loss" in sweep_results.results_markdown(result)


# --- Running, resuming, failures (worker processes with tests/fake_runner.py: no TensorFlow) ---------------------

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def fake_runner(tmp_path, monkeypatch):
    """The sweep's workers train with tests/fake_runner.py; returns (flagfile, calls made: [{workdir, args, pid}])."""
    pytest.importorskip("optuna")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, TESTS]))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    flagfile = tmp_path / "cell.flags"
    flagfile.write_text("--method=ddtp_linear\n")

    def calls_made():
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]
    return str(flagfile), calls_made


def _sweep(flagfile, out, *more):
    return sweep.main([f"--flagfile={flagfile}", f"--out={out}", "--runner=fake_runner", *more])


@pytest.mark.slow
def test_sweep_runs_seeds_on_workers_reports_failures_and_resumes(fake_runner, tmp_path, monkeypatch, capsys):
    flagfile, calls_made = fake_runner
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    monkeypatch.setenv("FAKE_FAIL", "2")
    monkeypatch.setenv("FAKE_DIVERGE", "3")
    assert _sweep(flagfile, out, "--seeds=6", "--parallel=3", "--data_dir=/data", "--", "--epochs=3") == 1
    text = capsys.readouterr().out
    assert "seed 0 finished in" in text and "3 epochs" in text
    failed = [line for line in text.splitlines() if "seed 2 FAILED" in line]
    assert len(failed) == 1 and "RuntimeError: boom in seed 2" in failed[0]
    assert failed[0].endswith(f"[log {os.path.join(out, 'seed_2', 'launch.log')}]")
    assert "Traceback" in open(os.path.join(out, "seed_2", "launch.log")).read()  # the details stay in the log
    assert "seed 3 ended (final, kept in the tables)" in text and "diverged" in text
    assert "failed seeds: 2 (rerun the same command to retry them)" in text
    assert sorted(c["workdir"] for c in calls_made()) == [f"seed_{s}" for s in range(6)]  # each seed once
    assert calls_made()[0]["args"][:2] == ["--method=ddtp_linear", "--epochs=3"]
    assert all(c["args"][-2:] == [f"--seed={c['workdir'][5:]}", "--data_dir=/data"] for c in calls_made())
    rows = csv_rows(os.path.join(out, "results.csv"))
    assert [r["seed"] for r in rows] == ["0", "1", "2", "3", "4", "5", "mean", "sd", "n"]
    assert rows[2]["status"] == "no summary" and rows[8]["status"] == "4 finished, 1 diverged"

    # Rerun: finished and diverged seeds are skipped (summary untouched), the failed seed runs again.
    mtime = os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns
    monkeypatch.setenv("FAKE_FAIL", "")
    before = len(calls_made())
    assert _sweep(flagfile, out, "--seeds=6", "--parallel=2", "--data_dir=/elsewhere", "--", "--epochs=3") == 0
    text = capsys.readouterr().out
    assert all(f"seed {s} skipped" in text for s in (0, 1, 3, 4, 5))
    assert "seed 2 finished" in text
    assert [c["workdir"] for c in calls_made()[before:]] == ["seed_2"]
    assert os.stat(os.path.join(out, "seed_0", "summary.json")).st_mtime_ns == mtime
    assert csv_rows(os.path.join(out, "results.csv"))[8]["status"] == "5 finished, 1 diverged"

    # Different extra flags: finished seeds run again and continue from their checkpoints (--epochs raised).
    before = len(calls_made())
    assert _sweep(flagfile, out, "--seeds=2", "--", "--epochs=4") == 0
    text = capsys.readouterr().out
    assert "flagfile or extra flags changed since it finished: continuing from its checkpoint" in text
    assert [c["args"][1] for c in calls_made()[before:]] == ["--epochs=4", "--epochs=4"]
    assert "resuming from" in open(os.path.join(out, "seed_0", "launch.log")).read()
    assert json.load(open(os.path.join(out, "seed_0", "summary.json")))["epochs_run"] == 4


@pytest.mark.slow
def test_report_only_and_rerun_on_a_folder_of_the_previous_sweep(fake_runner, tmp_path, capsys):
    """A folder written before the sweep ran on the engine (the old runner's sweep.json, sweep_seed.json, pid file,
    no study.db): --report_only rewrites its tables without Optuna's database, and a rerun skips its final seeds."""
    flagfile, calls_made = fake_runner
    out = str(tmp_path / "old")
    for s in range(2):
        folder = write_seed(out, s)
        with open(os.path.join(folder, "sweep_seed.json"), "w") as f:
            json.dump({"identity": {"flagfile": os.path.abspath(flagfile), "extra": ["--epochs=2"]},
                       "args": [f"--flagfile={flagfile}", f"--seed={s}"], "started": "2026-01-01T00:00:00"}, f)
        with open(os.path.join(folder, "sweep_child.pid"), "w") as f:
            f.write("999999\n")
    write_seed(out, 2, status="interrupted", test_acc=(0.5,), val_acc=(0.5,), train_loss=(1.0,), epoch_seconds=(1.0,))
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"flagfile": flagfile, "extra": ["--epochs=2"], "data_dir": None, "seeds": [0, 1, 2],
                   "parallel": 1, "launcher": "tp_keras.launch"}, f)
    assert sweep.main(["--report_only", f"--out={out}"]) == 0
    assert "3 seed folders, 2 final" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(out, "study.db"))
    assert [r["status"] for r in csv_rows(os.path.join(out, "results.csv"))][:3] == ["finished", "finished",
                                                                                     "interrupted"]
    assert _sweep(flagfile, out, "--seeds=3", "--", "--epochs=2") == 0
    text = capsys.readouterr().out
    assert "seed 0 skipped" in text and "seed 1 skipped" in text and "seed 2: status 'interrupted'" in text
    assert [c["workdir"] for c in calls_made()] == ["seed_2"]


@pytest.mark.slow
def test_terminated_sweep_interrupts_its_workers_and_resumes(fake_runner, tmp_path):
    flagfile, calls_made = fake_runner
    out = str(tmp_path / "sw")
    command = [sys.executable, "-m", "tp_keras.sweep", f"--flagfile={flagfile}", f"--out={out}", "--seeds=2",
               "--parallel=2", "--runner=fake_runner"]
    proc = subprocess.Popen(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="60"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300  # a loaded machine (or the suite's other process) can take a minute to start them
    while len(calls_made()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert len(calls_made()) == 2, "the sweep did not start both seeds in 300 s"
    proc.terminate()
    text, _ = proc.communicate(timeout=90)
    assert proc.returncode == 143, text  # the launcher's status for SIGTERM
    assert text.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM;"), text
    assert "interrupted: each seed keeps its finished epochs; rerun the same command to resume" in text
    for s in range(2):
        assert json.load(open(os.path.join(out, f"seed_{s}", "summary.json")))["status"] == "interrupted"
    again = subprocess.run(command, env=dict(os.environ, FAKE_EPOCH_SECONDS="0"), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "seed 0 finished" in again.stdout and "seed 1 finished" in again.stdout


def test_sweep_refusals_are_one_line(fake_runner, tmp_path, capsys, monkeypatch):
    flagfile, _ = fake_runner
    out = str(tmp_path / "sw")
    assert _sweep(flagfile, out, "--", "--seed=3") == 2
    assert capsys.readouterr().err == ("error: --seed=3: the sweep sets --seed, --workdir and --resume itself; use "
                                       "--seeds/--first_seed and --out\n")
    assert _sweep(flagfile, out, "--", "--foo=1") == 2
    assert capsys.readouterr().err.startswith("error: --foo: not a launcher flag")
    monkeypatch.setenv("FAKE_PREPARE_FAIL", "--data_dir: no MNIST files in /nowhere")
    assert _sweep(flagfile, out) == 2
    assert capsys.readouterr().err == "error: --data_dir: no MNIST files in /nowhere\n"
    with pytest.raises(SystemExit):
        sweep.main(["--seeds=0", f"--flagfile={flagfile}"])
    assert capsys.readouterr().err.count("\n") == 1


# --- One real sweep ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_sweep_two_seeds_then_resume(mnist_dir, tmp_path, capsys):
    """Training for real, one worker training both seeds in its process (workers in parallel: the fake-runner
    tests above): results, the rerun of an interrupted seed, and the tables command's cell."""
    pytest.importorskip("optuna")
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("# a tiny cell\n--method=ddtp_linear\n--dataset=mnist\n--precision=float32\n")
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    command = [sys.executable, "-m", "tp_keras.sweep", f"--flagfile={flagfile}", "--seeds=2", f"--out={out}",
               f"--data_dir={mnist_dir}", "--", "--num_hidden=2", "--size_hidden=8", "--batch_size=16",
               "--validation_size=20", "--epochs=2", "--epochs_fb=1"]
    env = dict(os.environ, PYTHONPATH=REPO)
    first = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
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
    capsys.readouterr()
    assert tables.main([f"--sweeps={tmp_path / 'sweeps'}", "--out=-"]) == 0
    row = _table_row(capsys.readouterr().out, "Table 1", "DDTP-linear")
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
    configs = os.environ.get("TP_KERAS_REFERENCE_CONFIGS", "")
    if os.path.isfile(configs):  # the reference's final configs, where a developer names them
        with open(configs) as f:
            names = {n for n in json.load(f)["final_configs"] if not n.startswith("toy_")}
        assert names == set(tables.CELLS)
    for name, cell in tables.CELLS.items():
        if cell.column != "cifar10_train":  # the CNN's training loss, which the paper does not print
            assert tables.paper_text(cell.table, cell.column, cell.method) not in ("–", "not reported"), name
    assert tables.cell_of("mnist_dtp_pretrained") == "mnist_DTP_pretrained"
    assert tables.cell_of("Fashion-MNIST_train_DDTP_linear") == "fashion_mnist_train_DDTPlinear"
    assert tables.cell_of("mnist_gnt") is None
