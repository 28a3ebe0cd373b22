"""Table 1 and the learning curves from a results folder (results/<cell>/seed_<S>/summary.json and metrics.jsonl,
what the repository keeps of each 100-epoch run): the numbers, the marks against the paper, missing cells, and the
data series each curve plots. The folder is written here; no training runs."""
import json
import os

import numpy as np
import pytest

from tp_keras.paper import figures, tables
from tp_keras.reference import facts as paper_facts


def write_result(root, cell, seed, test_errors, *, best=None, status="finished"):
    """One seed folder as the repository keeps it: metrics.jsonl (one row per epoch, test_acc from `test_errors`
    in %) and summary.json (status, epochs run, the test error at the best-validation epoch `best`, default the
    last)."""
    folder = os.path.join(root, cell, f"seed_{seed}")
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for epoch, error in enumerate(test_errors, start=1):
            f.write(json.dumps({"epoch": epoch, "test_acc": 1 - error / 100, "val_acc": 0.9, "train_loss": 0.1})
                    + "\n")
    best = len(test_errors) if best is None else best
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"status": status, "epochs_run": len(test_errors), "seed": seed,
                   "error_test_val_best": test_errors[best - 1] / 100, "loss_train_last": 0.1}, f)


def _curve(last, start=8.0, epochs=100):
    """A test-error series in % falling from `start` to `last` over `epochs` epochs."""
    return list(np.linspace(start, last, epochs))


@pytest.fixture
def results(tmp_path):
    root = str(tmp_path / "results")
    for seed, last in zip((1, 2, 3), (2.0, 2.1, 2.2)):  # within one paper SD of DDTP-linear's 2.04 ± 0.08
        write_result(root, "mnist_DDTPlinear", seed, _curve(last))
    write_result(root, "mnist_BP", 42, _curve(2.5))  # BP 1.98 ± 0.14: more than one SD above
    for seed, last in zip((1, 2), (10.8, 10.9)):  # DTPDRL 11.22 ± 0.20: more than one SD below
        write_result(root, "fashion_mnist_DTPDRL", seed, _curve(last, start=15.0))
    write_result(root, "mnist_DFA", 1, _curve(2.2)[:40], status="running")  # not final: missing from the table
    write_result(root, "mnist_DTP", 1, [5.0, 3.0], best=1)  # a 2-epoch run: short horizon
    write_result(root, "mnist_DDTPRHL_extrafb", 1, _curve(2.0))  # a DDTP-RHL variant: a row of its own
    write_result(root, "fashion_mnist_train_BP", 1, _curve(1.0))  # Table 2: not in Table 1's columns
    return root


def _row(text, label):
    for line in text.splitlines():
        if line.startswith(f"| {label} |"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row {label!r}")


def test_table1_from_results_numbers_marks_and_missing_cells(results, tmp_path):
    out = tmp_path / "table1.md"
    assert tables.main([f"--results={results}", f"--out={out}"]) == 0
    text = out.read_text()
    assert "| method | MNIST: ours | MNIST: paper | Fashion-MNIST: ours | Fashion-MNIST: paper |" in text
    assert "Frozen-MNIST" not in text and "CIFAR10" not in text  # MNIST and Fashion-MNIST only

    last = [2.0, 2.1, 2.2]
    assert _row(text, "DDTP-linear") == [
        "DDTP-linear", f"{np.mean(last):.2f} ± {np.std(last, ddof=1):.2f} (n=3)", "2.04 ± 0.08", "missing",
        "11.11 ± 0.35"]
    assert _row(text, "BP")[1:3] == ["2.50 (n=1) ▲", "1.98 ± 0.14"]  # one seed: no SD; 0.52 > 0.14 above
    assert _row(text, "DTPDRL")[1:] == ["missing", "2.21 ± 0.09", "10.85 ± 0.07 (n=2) ▼", "11.22 ± 0.20"]
    assert _row(text, "DFA")[1] == "missing (1 seed not finished)"
    assert _row(text, "DTP")[1] == "5.00 (n=1, 2 ep†) ▲"  # the best-validation epoch's 5 %, short horizon
    assert _row(text, "DDTP-RHL")[1:3] == ["missing", "2.10 ± 0.14"]
    assert _row(text, "DDTP-RHL (extra fb)‡")[1:3] == ["2.00 (n=1)", "2.10 ± 0.14"]  # the paper's RHL number
    assert [_row(text, paper_facts.method_label(m))[0] for m in paper_facts.TABLE_METHODS]  # all eight rows
    for note in ("▲ / ▼ ours is more than one", "† fewer epochs", "‡ an alternative reference config"):
        assert note in text


def test_table1_marks_use_the_paper_sd_strictly():
    chosen = {paper_facts.Cell(1, "mnist", "bp", None): {
        "cell": "mnist_BP", "result": {"summary": {"error_test_val_best_pct": {"mean": 1.98 + 0.13, "sd": None,
                                                                                "n": 1}},
                                       "epochs": (100, 100), "other_seeds": []}}}
    row = tables.results_rows(chosen)[0]
    assert row["method"] == "bp" and row["mnist"]["mark"] == "" and row["mnist"]["paper"] == (1.98, 0.14)
    chosen[paper_facts.Cell(1, "mnist", "bp", None)]["result"]["summary"]["error_test_val_best_pct"]["mean"] = 1.83
    assert tables.results_rows(chosen)[0]["mnist"]["mark"] == "▼"


def test_table1_refuses_both_sources_and_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        tables.main(["--results=results", "--sweeps=sweeps", "--out=-"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        tables.main([f"--results={tmp_path / 'nowhere'}", "--out=-"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"--results={tmp_path / 'nowhere'}: no such folder; run from the "
                                                    "repository's root (it holds results/) or name the results "
                                                    "folder, e.g. --results=path/to/results")


def test_learning_curves_series(results):
    data = figures.learning_curves(results)
    assert list(data) == ["mnist", "fashion_mnist"]  # Table 1's column order
    # Table 1's row order; DFA has no final seed, the RHL variant and Table 2's cell are no curve.
    assert list(data["mnist"]) == ["bp", "ddtp_linear", "dtp"]
    assert list(data["fashion_mnist"]) == ["dtpdrl"]
    ddtp = data["mnist"]["ddtp_linear"]
    seeds = np.array([_curve(last) for last in (2.0, 2.1, 2.2)])
    assert ddtp["cell"] == "mnist_DDTPlinear"
    np.testing.assert_array_equal(ddtp["epoch"], np.arange(1, 101))
    np.testing.assert_allclose(ddtp["mean"], seeds.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ddtp["sd"], seeds.std(axis=0, ddof=1), rtol=1e-9, atol=1e-12)
    assert set(ddtp["n"]) == {3}
    bp = data["mnist"]["bp"]
    np.testing.assert_allclose(bp["mean"], _curve(2.5), rtol=1e-12)
    assert np.all(np.isnan(bp["sd"])) and set(bp["n"]) == {1}  # one seed: no SD
    np.testing.assert_allclose(data["mnist"]["dtp"]["mean"], [5.0, 3.0], rtol=1e-12)


def test_learning_curves_figure_one_file_per_dataset(results, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs" / "learning_curves.png"
    assert figures.main(["figures", "curves", f"--results={results}", f"--out={out}"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / "figs" / f"learning_curves_{d}.png") for d in ("mnist", "fashion_mnist")]
    assert all(os.path.getsize(path) > 1000 for path in written)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(figures.FigureError, match="no Table 1 cell with a finished seed"):
        figures.learning_curves_figure(str(empty), str(out))
