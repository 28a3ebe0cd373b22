"""Results: the seed sweep and the commands that read results never mix or drop runs silently.

In the catalogue style of tests/test_bad_inputs.py: each command runs in-process (main() with captured stderr) and a
refusal is exactly one `error: <what>; <fix>` line with its documented exit status, leaving what it refused to
touch byte for byte as it was. A run whose files cannot be read is reported (a § mark and a note naming the file in
the table, a `warning:` line on stderr) and left out of n, never skipped quietly. No training runs here: the sweep
folders are written by tests/test_sweep.write_seed and tests/test_results.write_result, and the one sweep that
runs (slow) trains with tests/fake_runner.py.
"""
import json
import os

import pytest

from tp_keras.paper import figures, sweep, sweep_results, tables
from test_bad_inputs import _one_line
from test_results import _curve, write_result
from test_sweep import _sweep, _table_row, csv_rows, fake_runner, write_seed  # noqa: F401


def _run(main, argv, capsys):
    """(exit status, stderr lines, stdout) of a command's main run in this process."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, [line for line in captured.err.splitlines() if line.strip()], captured.out


def _snapshot(folder):
    """Every file under `folder` with its bytes, and every folder: what a refusal must leave unchanged."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            state[os.path.relpath(os.path.join(root, name), folder) + "/"] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, folder)] = f.read()
    return state


def _flagfile(tmp_path, name, method):
    path = tmp_path / f"{name}.flags"
    path.write_text(f"--method={method}\n")
    return str(path)


def _ddtp_sweep_folder(out, flagfile, seeds=(0, 1, 2)):
    """A finished DDTP-linear sweep of `flagfile` as the sweep leaves it: seed folders and sweep.json (its setting
    as the sweep records it)."""
    from tp_keras.search import runs
    for seed in seeds:
        write_seed(out, seed, test_acc=(0.97, 0.98 - seed / 100), val_acc=(0.9, 0.95))
    setting = sweep.setting_of(runs.config_from_args(runs.read_flagfile(flagfile)))
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"flagfile": flagfile, "extra": [], "data_dir": None, "seeds": list(seeds), "parallel": 1,
                   "setting": setting}, f)
    sweep_results.write_results(out)


# --- A sweep folder belongs to one flagfile ----------------------------------------------------------------------

def test_sweep_into_another_flagfiles_folder_is_refused_and_changes_nothing(fake_runner, tmp_path, capsys):
    """DTPDRL swept into DDTP-linear's folder. Refused before any work, exit status 1 (README:
    Multi-seed sweeps), and the folder (sweep.json, results.md, every seed) byte-identical, so the tables still
    put DDTP-linear's numbers in DDTP-linear's row."""
    _, calls_made = fake_runner
    ddtp = _flagfile(tmp_path, "mnist_DDTPlinear", "ddtp_linear")
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    _ddtp_sweep_folder(out, ddtp)
    before = _snapshot(out)
    dtpdrl = _flagfile(tmp_path, "mnist_DTPDRL", "dtpdrl")
    status, lines, _ = _run(sweep.main, [f"--flagfile={dtpdrl}", f"--out={out}", "--runner=fake_runner",
                                         "--seeds=3"], capsys)
    _one_line(status, lines, exit_status=sweep.EXIT_OTHER_SWEEP,
              starts=f"--out={out} holds the sweep of another flagfile ({ddtp}, not {dtpdrl}); choose another --out "
                     "(e.g. --out=sweeps/mnist_DTPDRL), or rerun that sweep with its own flagfile")
    assert _snapshot(out) == before and calls_made() == []
    status, lines, _ = _run(tables.main, [f"--sweeps={tmp_path / 'sweeps'}", "--out=-"], capsys)
    assert status == 0 and lines == []


def test_sweep_with_other_settings_of_the_same_flagfile_is_refused(fake_runner, tmp_path, capsys):
    """Another method through the extra flags, or a folder written before sweep.json recorded its setting (its seeds'
    config.json say what ran): the same refusal; only --epochs (and what a run may change on --resume) may differ."""
    ddtp = _flagfile(tmp_path, "mnist_DDTPlinear", "ddtp_linear")
    out = str(tmp_path / "mnist_DDTPlinear")
    _ddtp_sweep_folder(out, ddtp)
    before = _snapshot(out)
    status, lines, _ = _run(sweep.main, [f"--flagfile={ddtp}", f"--out={out}", "--runner=fake_runner", "--",
                                         "--method=dtpdrl"], capsys)
    _one_line(status, lines, exit_status=1, starts=f"--out={out} holds a sweep of {ddtp} with other settings "
                                                   "(method='ddtp_linear' there, 'dtpdrl' here")
    assert _snapshot(out) == before

    os.remove(os.path.join(out, "sweep.json"))  # a folder whose seeds alone say what ran
    before = _snapshot(out)
    status, lines, _ = _run(sweep.main, [f"--flagfile={_flagfile(tmp_path, 'mnist_DDTPlinear2', 'dtpdrl')}",
                                         f"--out={out}", "--runner=fake_runner"], capsys)
    _one_line(status, lines, exit_status=1, starts=f"--out={out} holds runs of other settings (seed 0: "
                                                   "method='ddtp_linear' there, 'dtpdrl' here)")
    assert _snapshot(out) == before

    from tp_keras.search import runs
    more_epochs = sweep.setting_of(runs.config_from_args(["--method=ddtp_linear", "--epochs=300", "--noprogress"]))
    sweep.check_folder_owner(out, ddtp, more_epochs)  # the same flagfile with more epochs: the sweep goes on


_RERUN_SEED = "or delete the folder {seed_1} to run the seed again"


@pytest.mark.parametrize("record, content, says, fix", [
    ("seed_1/config.json", '{"method": "ddtp_li', "{path} cannot be read (not JSON", _RERUN_SEED),
    ("seed_1/config.json", '["ddtp_linear"]', "{path} cannot be read (not a JSON object (a list))", _RERUN_SEED),
    ("sweep.json", '"mnist_DDTPlinear.flags"', "its sweep.json cannot be read (not a JSON object (a str))",
     "or repair {path}")])
def test_sweep_folder_with_an_unreadable_record_is_refused(fake_runner, tmp_path, capsys, record, content, says, fix):
    """A truncated config.json, or a record holding JSON that is no object: whose runs the folder holds is unknown,
    so the sweep refuses (exit 1) naming the file and the fix, and touches nothing."""
    ddtp = _flagfile(tmp_path, "mnist_DDTPlinear", "ddtp_linear")
    out = str(tmp_path / "mnist_DDTPlinear")
    _ddtp_sweep_folder(out, ddtp)
    path = os.path.join(out, record)
    with open(path, "w") as f:
        f.write(content)
    before = _snapshot(out)
    status, lines, _ = _run(sweep.main, [f"--flagfile={ddtp}", f"--out={out}", "--runner=fake_runner"], capsys)
    names = {"path": path, "seed_1": os.path.join(out, "seed_1")}
    _one_line(status, lines, exit_status=1, starts=f"--out={out}: " + says.format(**names),
              contains=[fix.format(**names)])
    assert _snapshot(out) == before


def test_the_settings_a_resumed_run_may_change_are_config_settings():
    """rundir.RESUME_MAY_DIFFER names config.json keys (a renamed Config field left in it would make resume and the
    sweep's folder check compare a setting they should not); the sweep's runs may differ in those and the seed."""
    import dataclasses
    from tp_keras.run import rundir
    from tp_keras.run.config import Config
    fields = {field.name for field in dataclasses.fields(Config)}
    assert set(rundir.RESUME_MAY_DIFFER) <= fields, set(rundir.RESUME_MAY_DIFFER) - fields
    assert set(sweep_results.SETTING_MAY_DIFFER) == set(rundir.RESUME_MAY_DIFFER) | {"seed"} and "seed" in fields


@pytest.mark.slow
def test_sweep_of_another_flagfile_after_a_real_sweep(fake_runner, tmp_path, capsys):
    """End to end on worker processes: a sweep, then another flagfile into its folder (refused, exit 1, the folder
    and its study.db unchanged, no seed run), then the first flagfile again (all seeds skipped, exit 0)."""
    _, calls_made = fake_runner
    ddtp = _flagfile(tmp_path, "mnist_DDTPlinear", "ddtp_linear")
    out = str(tmp_path / "mnist_DDTPlinear")
    assert _sweep(ddtp, out, "--seeds=2") == 0
    capsys.readouterr()
    before, calls = _snapshot(out), len(calls_made())
    status, lines, _ = _run(sweep.main, [f"--flagfile={_flagfile(tmp_path, 'mnist_DTPDRL', 'dtpdrl')}",
                                         f"--out={out}", "--runner=fake_runner", "--seeds=2"], capsys)
    _one_line(status, lines, exit_status=1, starts=f"--out={out} holds the sweep of another flagfile")
    assert _snapshot(out) == before and len(calls_made()) == calls
    assert _sweep(ddtp, out, "--seeds=2") == 0
    assert "seed 0 skipped" in capsys.readouterr().out and len(calls_made()) == calls


# --- Sweep settings refused before any work ----------------------------------------------------------------------

@pytest.mark.parametrize("args, starts", [
    (["--first_seed=-1"], "--first_seed: -1 must be between 0 and 4294967295 (the launcher's seeds); e.g. "
                          "--first_seed=0"),
    (["--first_seed=4294967295", "--seeds=2"], "--seeds: 4294967295..4294967296 passes the last seed, 4294967295; "
                                               "lower --first_seed or --seeds"),
])
def test_sweep_seeds_out_of_range(fake_runner, tmp_path, capsys, args, starts):
    flagfile, calls_made = fake_runner
    out = tmp_path / "sw"
    _one_line(*_run(sweep.main, [f"--flagfile={flagfile}", f"--out={out}", "--runner=fake_runner", *args],
                    capsys)[:2], starts=starts)
    assert not out.exists() and calls_made() == []


def test_sweep_out_naming_a_file(fake_runner, tmp_path, capsys):
    flagfile, _ = fake_runner
    (tmp_path / "afile").write_text("keep me")
    _one_line(*_run(sweep.main, [f"--flagfile={flagfile}", f"--out={tmp_path / 'afile'}"], capsys)[:2],
              starts=f"--out={tmp_path / 'afile'} exists and is not a folder; choose another --out")
    _one_line(*_run(sweep.main, [f"--flagfile={flagfile}", f"--out={tmp_path / 'afile' / 'sw'}"], capsys)[:2],
              starts=f"--out={tmp_path / 'afile' / 'sw'}: {tmp_path / 'afile'} is a file, not a folder; choose "
                     "another --out")
    _one_line(*_run(sweep.main, ["--report_only", f"--out={tmp_path / 'afile'}"], capsys)[:2],
              starts=f"--out={tmp_path / 'afile'} exists and is not a folder")
    assert (tmp_path / "afile").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["afile", "cell.flags"]


def test_sweep_report_only_without_a_sweep(tmp_path, capsys):
    _one_line(*_run(sweep.main, ["--report_only", f"--out={tmp_path / 'nothere'}"], capsys)[:2],
              starts=f"--out={tmp_path / 'nothere'}: no such folder, so there are no results to report; name the "
                     "sweep's folder")
    assert not (tmp_path / "nothere").exists()
    (tmp_path / "empty").mkdir()
    _one_line(*_run(sweep.main, ["--report_only", f"--out={tmp_path / 'empty'}"], capsys)[:2],
              starts=f"--out={tmp_path / 'empty'} holds no seed_<S> folders")
    assert os.listdir(tmp_path / "empty") == []


# --- An unreadable run is reported, never dropped quietly ---------------------------------------------------------

def _three_seed_results(tmp_path):
    root = str(tmp_path / "results")
    for seed, last in zip((1, 2, 3), (2.0, 2.1, 2.2)):
        write_result(root, "mnist_DDTPlinear", seed, _curve(last))
    write_result(root, "mnist_BP", 1, _curve(2.0))
    return root


@pytest.mark.parametrize("damage", ["summary", "metrics_line", "summary_not_object"])
def test_table1_marks_a_run_it_cannot_read(tmp_path, capsys, damage):
    """One of three seeds with a corrupt summary.json. The cell says n=2 and '1 unreadable§', a
    note under the table names the file, stderr warns about it; the same for a metrics.jsonl line that is not JSON
    (the curves and the table leave out the same seed)."""
    root = _three_seed_results(tmp_path)
    seed_2 = os.path.join(root, "mnist_DDTPlinear", "seed_2")
    if damage == "summary":
        bad, where = os.path.join(seed_2, "summary.json"), "not JSON"
        with open(bad, "w") as f:
            f.write('{"status": "finished", "error_test_val_')
    elif damage == "summary_not_object":
        bad, where = os.path.join(seed_2, "summary.json"), "not a JSON object (a list)"
        with open(bad, "w") as f:
            f.write("[1, 2]")
    else:
        bad, where = os.path.join(seed_2, "metrics.jsonl"), "line 3: not JSON"
        lines = open(bad).read().splitlines(keepends=True)
        lines[2] = '{"epoch": 3, "test_acc": 0.9\n'
        open(bad, "w").writelines(lines)
    status, errors, out = _run(tables.main, [f"--results={root}", "--out=-"], capsys)
    assert status == 0
    last = [2.0, 2.2]
    mean, sd = sum(last) / 2, ((2.0 - 2.1) ** 2 + (2.2 - 2.1) ** 2) ** 0.5
    assert _table_row(out, "Table 1", "DDTP-linear")[1] == f"{mean:.2f} ± {sd:.2f} (n=2, 1 unreadable§)"
    assert _table_row(out, "Table 1", "BP")[1] == "2.00 (n=1)"
    note = [line for line in out.splitlines() if line.startswith("§")]
    assert len(note) == 1 and f"seed 2 ({bad}: {where}" in note[0], out
    assert len(errors) == 1 and errors[0].startswith(f"warning: {bad}: {where}"), errors
    assert f"seed 2 of {os.path.join(root, 'mnist_DDTPlinear')} is left out of the means" in errors[0]

    data = figures.learning_curves(root)["mnist"]["ddtp_linear"]  # the curves count the seeds Table 1 counts
    assert set(data["n"]) == {2} and data["unreadable"] == [2]


def test_sweep_tables_and_report_mark_an_unreadable_seed(tmp_path, capsys):
    out = str(tmp_path / "sweeps" / "mnist_DDTPlinear")
    for seed in range(3):
        write_seed(out, seed)
    bad = os.path.join(out, "seed_1", "summary.json")
    with open(bad, "w") as f:
        f.write("")
    status, errors, text = _run(sweep.main, ["--report_only", f"--out={out}"], capsys)
    assert status == 0 and "3 seed folders, 2 final" in text
    assert len(errors) == 1 and errors[0].startswith(f"warning: {bad}: not JSON")
    rows = csv_rows(os.path.join(out, "results.csv"))
    assert rows[1]["status"].startswith("unreadable: summary.json not JSON")
    assert rows[-1]["error_test_val_best_pct"] == "2"  # the "n" row
    md = open(os.path.join(out, "results.md")).read()
    assert "**mean ± SD (n=2)**" in md and f"**Unreadable, left out of the means: seed 1 ({bad}: not JSON" in md

    status, errors, text = _run(tables.main, [f"--sweeps={tmp_path / 'sweeps'}", "--out=-"], capsys)
    assert status == 0 and len(errors) == 1 and errors[0].startswith(f"warning: {bad}: not JSON")
    assert _table_row(text, "Table 1", "DDTP-linear")[1] == "5.00 ± 0.00 % (n=2, 2 ep, 1 unreadable§)†"
    assert f"§ left out of n, a file of theirs cannot be read" in text and f"seed 1 ({bad}: not JSON" in text
    assert "2 (2 finished); unreadable§: 1" in text  # the details row


def test_a_line_being_written_is_not_damage_but_a_finished_runs_torn_line_is(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "test_ac')
    assert sweep_results.read_jsonl_checked(str(path), final=False) == ([{"epoch": 1}], [])
    rows, problems = sweep_results.read_jsonl_checked(str(path), final=True)
    assert rows == [{"epoch": 1}] and len(problems) == 1 and problems[0].startswith("line 2: not JSON")
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')  # a bad line in the middle is damage, running or not
    assert sweep_results.read_jsonl_checked(str(path), final=False)[1][0].startswith("line 2: not JSON")


def test_curves_warn_about_a_corrupt_metrics_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    root = _three_seed_results(tmp_path)
    bad = os.path.join(root, "mnist_DDTPlinear", "seed_3", "metrics.jsonl")
    with open(bad, "a") as f:
        f.write("\x00\x00garbage\n")
    status, errors, text = _run(figures.main, ["figures", "curves", f"--results={root}",
                                               f"--out={tmp_path / 'curves.png'}"], capsys)
    assert status == 0 and text.split() == [str(tmp_path / "curves_mnist.png")]
    assert len(errors) == 1 and errors[0].startswith(f"warning: {bad}: line 101: not JSON"), errors


# --- tables: bad command lines ------------------------------------------------------------------------------------

def test_tables_refusals(tmp_path, capsys):
    _one_line(*_run(tables.main, [f"--results={tmp_path / 'nowhere'}", "--out=-"], capsys)[:2],
              starts=f"--results={tmp_path / 'nowhere'}: no such folder; run from the repository's root (it holds "
                     "results/) or name the results folder")
    (tmp_path / "afile").write_text("")
    _one_line(*_run(tables.main, [f"--results={tmp_path / 'afile'}", "--out=-"], capsys)[:2],
              starts=f"--results={tmp_path / 'afile'} is a file, not a folder; run from the repository's root")
    (tmp_path / "empty").mkdir()
    _one_line(*_run(tables.main, [f"--sweeps={tmp_path / 'empty'}", "--out=-"], capsys)[:2],
              starts=f"--sweeps={tmp_path / 'empty'}: no sweep folder in it (<cell>/seed_<S>/summary.json); name a "
                     "folder of sweep folders, e.g. --sweeps=sweeps")
    _one_line(*_run(tables.main, ["--reslts=results", "--out=-"], capsys)[:2],
              starts="unknown option --reslts=results; did you mean --results? (python -m tp_keras.tables --help)")
    _one_line(*_run(tables.main, ["--color", "--out=-"], capsys)[:2],
              starts="unknown option --color; the options are --sweeps, --results, --out")
    _one_line(*_run(tables.main, ["--out"], capsys)[:2], starts="argument --out: expected one argument; "
                                                                 "python -m tp_keras.tables --help lists the options")
    assert sorted(os.listdir(tmp_path)) == ["afile", "empty"]


def test_a_folder_mixing_settings_shows_no_mean(tmp_path, capsys):
    """A folder whose seeds ran different methods (written before sweeps refused that, or by hand): Table 1 shows
    no mean for it ('mixed settings¶', a note naming the seed and the setting, a warning on stderr) and the curves
    leave it out."""
    root = _three_seed_results(tmp_path)
    for seed, method in ((1, "ddtp_linear"), (2, "ddtp_linear"), (3, "dtpdrl")):
        with open(os.path.join(root, "mnist_DDTPlinear", f"seed_{seed}", "config.json"), "w") as f:
            json.dump({"method": method, "dataset": "mnist", "seed": seed, "epochs": 100}, f)
    status, errors, out = _run(tables.main, [f"--results={root}", "--out=-"], capsys)
    assert status == 0 and _table_row(out, "Table 1", "DDTP-linear")[1] == "mixed settings¶"
    assert "▲" not in _table_row(out, "Table 1", "DDTP-linear")[1] and _table_row(out, "Table 1", "BP")[1] == \
        "2.00 (n=1)"
    folder = os.path.join(root, "mnist_DDTPlinear")
    assert f"`{folder}`: seed 3: method='dtpdrl' (seed 1: 'ddtp_linear')." in out
    assert errors == [f"warning: {folder} mixes runs of different settings (seed 3: method='dtpdrl' (seed 1: "
                      "'ddtp_linear')); the tables show no mean for it: sweep each setting into its own folder"]
    assert list(figures.learning_curves(root)["mnist"]) == ["bp"]
    assert figures.unreadable_runs(tables.collect(tables.find_sweeps(root)))["mnist"] == [
        "mnist_DDTPlinear (mixed settings)"]


def test_sweep_report_only_into_a_folder_it_cannot_write(tmp_path, capsys):
    out = str(tmp_path / "sw")
    write_seed(out, 0)
    os.mkdir(os.path.join(out, "results.csv"))
    _one_line(*_run(sweep.main, ["--report_only", f"--out={out}"], capsys)[:2],
              starts=f"cannot write {os.path.join(out, 'results.csv')}: it is a folder (EISDIR); choose another --out")
