"""Figures (tp_keras.figures) and the output-space toy computation (tp_keras.paper.output_space).

Drawing tests skip without matplotlib (the optional `plots` extra); the curve data, errors and the output-space
numbers are tested without it. Run directories are fabricated here in the launcher's layout.
"""
from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tp_keras.paper import figures
from tp_keras.paper.figures import FigureError, MissingPlotsError

PACKAGE_DIR = pathlib.Path(figures.__file__).parent.parent  # tp_keras/
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_LAYERS = 4  # 3 hidden layers + output: bp_angle has 4 entries, gnt_angle 3


def bp_value(method_offset, seed, iteration, layer):
    return 10.0 * layer + method_offset + seed + iteration / 100.0


def gnt_value(method_offset, seed, iteration, layer):
    return 50.0 + layer + method_offset - seed + iteration / 200.0


def write_run(root, name, *, method, dataset="fashion_mnist", seed=1, iterations=None, offset=0.0,
              log_interval=80, angles=True):
    """A run directory as the launcher writes it: config.json and (unless angles=False) angles.jsonl."""
    run = pathlib.Path(root) / name
    run.mkdir(parents=True)
    config = {"method": method, "dataset": dataset, "log_interval": log_interval, "seed": seed}
    (run / "config.json").write_text(json.dumps(config))
    if angles is None:  # BP run that still has an empty angles file
        (run / "angles.jsonl").write_text("")
    elif angles:
        lines = []
        for it in iterations:
            lines.append(json.dumps({
                "epoch": it // 400 + 1, "batch": it % 400, "iteration": it,
                "bp_angle": [bp_value(offset, seed, it, l) for l in range(1, NUM_LAYERS + 1)],
                "gnt_angle": [gnt_value(offset, seed, it, l) for l in range(1, NUM_LAYERS)]}))
        (run / "angles.jsonl").write_text("\n".join(lines) + "\n")
    return str(run)


@pytest.fixture
def runs(tmp_path):
    """Two methods × two seeds (seed 2 logs one extra point) and two BP runs without angles."""
    short, long = list(range(0, 800, 80)), list(range(0, 880, 80))
    dirs = [
        write_run(tmp_path, "ddtp_s1", method="ddtp_linear", seed=1, iterations=short, offset=0.0),
        write_run(tmp_path, "ddtp_s2", method="ddtp_linear", seed=2, iterations=long, offset=0.0),
        write_run(tmp_path, "dtpdrl_s1", method="dtpdrl", seed=1, iterations=short, offset=5.0),
        write_run(tmp_path, "dtpdrl_s2", method="dtpdrl", seed=2, iterations=long, offset=5.0),
        write_run(tmp_path, "bp_s1", method="bp", angles=False),
        write_run(tmp_path, "bp_s2", method="bp", seed=2, angles=None),
    ]
    return dirs, short


def assert_png(path, min_size=200):
    path = pathlib.Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_size and image.shape[1] >= min_size, image.shape
    assert np.ptp(image[..., :3]) > 0.5  # something is drawn, not a blank canvas


# --------------------------------------------------------------------------------------------------------------
# Rolling statistics and alignment curves (no matplotlib needed).


def test_rolling_mean_std_matches_direct_computation():
    values = np.random.default_rng(0).normal(size=23) * 5 + 40
    values[7] = np.nan  # skipped like pandas does
    window = 5
    mean, std = figures.rolling_mean_std(values, window)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1):i + 1]
        chunk = chunk[~np.isnan(chunk)]
        np.testing.assert_allclose(mean[i], chunk.mean(), rtol=1e-12)
        if len(chunk) > 1:
            np.testing.assert_allclose(std[i], chunk.std(ddof=1), rtol=1e-12)
        else:
            assert np.isnan(std[i])
    # min_periods=1: the first points average what is there.
    assert mean[0] == values[0] and np.isnan(std[0])
    np.testing.assert_allclose(mean[2], values[:3].mean(), rtol=1e-12)
    # A window of 1 is the series itself; a window longer than the series is the expanding mean.
    np.testing.assert_array_equal(figures.rolling_mean_std(values, 1)[0], values)
    np.testing.assert_allclose(figures.rolling_mean_std(values[:4], 30)[0],
                               np.cumsum(values[:4]) / np.arange(1, 5), rtol=1e-12)
    assert figures.rolling_mean_std([], 3)[0].size == 0
    with pytest.raises(FigureError, match="window"):
        figures.rolling_mean_std(values, 0)


def test_alignment_curves_average_seeds_over_common_points(runs):
    dirs, common = runs
    data = figures.alignment_curves(dirs)
    assert list(data) == ["fashion_mnist"]
    entry = data["fashion_mnist"]
    assert entry["layer"] == NUM_LAYERS - 1  # None means the last hidden layer
    assert list(entry["methods"]) == ["ddtp_linear", "dtpdrl"]  # the rows' order of the paper's Table 1
    assert sorted(os.path.basename(p) for p in entry["skipped"]) == ["bp_s1", "bp_s2"]
    for method, offset in (("ddtp_linear", 0.0), ("dtpdrl", 5.0)):
        curve = entry["methods"][method]
        np.testing.assert_array_equal(curve["iteration"], common)  # seed 2's extra point is dropped
        assert sorted(curve["seeds"]) == [1, 2]
        layer = NUM_LAYERS - 1
        expected_bp = [(bp_value(offset, 1, i, layer) + bp_value(offset, 2, i, layer)) / 2 for i in common]
        expected_gnt = [(gnt_value(offset, 1, i, layer) + gnt_value(offset, 2, i, layer)) / 2 for i in common]
        np.testing.assert_allclose(curve["bp_angle"], expected_bp, rtol=1e-12)
        np.testing.assert_allclose(curve["gnt_angle"], expected_gnt, rtol=1e-12)
    first = figures.alignment_curves(dirs, layer=1)["fashion_mnist"]["methods"]["ddtp_linear"]
    np.testing.assert_allclose(first["bp_angle"][0], (bp_value(0, 1, 0, 1) + bp_value(0, 2, 0, 1)) / 2)


def test_alignment_errors_are_one_line(runs, tmp_path):
    dirs, _ = runs
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(FigureError, match="has no config.json") as err:
        figures.alignment_curves([dirs[0], str(empty)])
    assert "\n" not in str(err.value)
    with pytest.raises(FigureError, match=r"layer 4 is out of range .*valid hidden layers are 1\.\.3"):
        figures.alignment_curves(dirs, layer=NUM_LAYERS)
    with pytest.raises(FigureError, match=r"valid hidden layers are 1\.\.3"):
        figures.alignment_curves(dirs, layer=0)
    with pytest.raises(FigureError, match="no run with angles"):
        figures.alignment_curves([d for d in dirs if "bp_" in d])


# --------------------------------------------------------------------------------------------------------------
# Drawing.


def test_alignment_figure_writes_png(runs, tmp_path):
    pytest.importorskip("matplotlib")
    dirs, _ = runs
    out = tmp_path / "figs" / "alignment.png"
    written = figures.alignment_figure(dirs, out, layer=2, window=3)
    assert written == [str(out)]
    assert_png(out)


def test_alignment_figure_one_file_per_dataset(tmp_path):
    pytest.importorskip("matplotlib")
    its = list(range(0, 400, 80))
    dirs = [write_run(tmp_path, "a", method="dtpdrl", dataset="mnist", iterations=its),
            write_run(tmp_path, "b", method="dtpdrl", dataset="cifar10", iterations=its)]
    written = figures.alignment_figure(dirs, str(tmp_path / "align.png"))
    assert written == [str(tmp_path / "align_cifar10.png"), str(tmp_path / "align_mnist.png")]
    for path in written:
        assert_png(path)
    assert not (tmp_path / "align.png").exists()


def test_nullspace_figure_from_dict_and_file(tmp_path):
    pytest.importorskip("matplotlib")
    results = {"layer": 2, "methods": {
        "dtp_pretrained": {"label": "DTP", "mean": 0.9, "std": 0.05, "n": 200},
        "ddtp_linear": {"label": "DDTP-linear", "mean": 0.1, "std": 0.03, "n": 200}}}
    out = figures.nullspace_figure(results, tmp_path / "nullspace.png")
    assert out == str(tmp_path / "nullspace.png")
    assert_png(out)
    path = tmp_path / "nullspace.json"
    path.write_text(json.dumps(results))
    assert_png(figures.nullspace_figure(str(path), tmp_path / "from_file.png"))
    with pytest.raises(FigureError, match="mean and std"):
        figures.nullspace_figure({"layer": 2, "methods": {"dtp": {"mean": 0.5}}}, tmp_path / "bad.png")


def test_missing_matplotlib_raises_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(MissingPlotsError) as err:
        figures._pyplot()
    assert str(err.value) == 'figures need matplotlib: pip install -e ".[plots]"'


# --------------------------------------------------------------------------------------------------------------
# Output-space toy figure (docs/semantics.md §13.7).


@pytest.fixture(scope="module")
def output_space_data():
    from tp_keras.paper.output_space import compute
    return compute()


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_output_space_arrows(output_space_data):
    d = output_space_data
    towards_label = d["label"] - d["y"]  # −∇_y MSE is parallel to label − y
    distance = np.linalg.norm(towards_label)
    for key in ("gnt_arrow", "bp_arrow"):
        np.testing.assert_allclose(np.linalg.norm(d[key]), distance / 2, rtol=1e-12)
    # With tanh layers GNT is close to, not exactly on, the output-space gradient (the local loss weights each
    # unit by s'^2); on this tiny 4-4-4-2 network BP happens to point nearly at the label too.
    assert _cosine(d["gnt_arrow"], towards_label) > 0.99
    assert _cosine(d["bp_arrow"], towards_label) > 0.9
    assert d["grid_y1"].shape == d["grid_y2"].shape == d["loss_grid"].shape == (100, 100)
    np.testing.assert_allclose(d["grid_y1"][0, [0, -1]], d["label"][0] + np.array([-1.1, 1.1]) * distance)
    np.testing.assert_allclose(d["grid_y2"][[0, -1], 0], d["label"][1] + np.array([-1.1, 1.1]) * distance)
    np.testing.assert_allclose(
        d["loss_grid"], ((d["grid_y1"] - d["label"][0]) ** 2 + (d["grid_y2"] - d["label"][1]) ** 2) / 2)


def test_gnt_moves_output_along_negative_gradient_exactly_when_linear():
    """The exact statements behind the figure: every layer's GN step satisfies J_ℓΔh_ℓ = e_L, and for a linear
    network the GNT weight steps move the output exactly along −e_L (paper Theorem 5), while BP's output step
    −lr·JJᵀe_L points elsewhere."""
    import tensorflow as tf
    from tp_keras.core.targets import gauss_newton_steps, output_error, output_jacobians
    from tp_keras.paper import output_space as osp
    from tp_keras.run.data import make_student_teacher

    data = make_student_teacher(93, num_train=1, num_test=1, num_val=1, size_input=4, size_output=2,
                                teacher_hidden=(8,), dtype="float64")
    x, label = tf.constant(data.val.x), tf.constant(data.val.y)
    for activation in ("tanh", "linear"):
        layers = osp.make_student(93, hidden_activation=activation)
        hs = osp._forward([layer.kernel for layer in layers], layers, x)
        error = output_error(hs[-1], label, "regression", 1)
        jacobians = output_jacobians(layers, hs)
        for jac, step in zip(jacobians, gauss_newton_steps(jacobians, error)):
            np.testing.assert_allclose(np.einsum("boi,bi->bo", jac.numpy(), step.numpy()), error.numpy(),
                                       rtol=1e-9, atol=1e-14)
    # `layers` is now the linear student.
    towards_label = (label - hs[-1]).numpy()[0]
    gnt = osp.output_change(layers, x, osp.gnt_gradients(layers, x, label))
    bp = osp.output_change(layers, x, osp.bp_gradients(layers, x, label))
    assert _cosine(gnt, towards_label) > 1 - 1e-9
    assert _cosine(bp, towards_label) < 0.9999


def test_output_space_figure_writes_png(output_space_data, tmp_path):
    pytest.importorskip("matplotlib")
    out = figures.output_space_figure(output_space_data, tmp_path / "output_space.png")
    assert_png(out)
    with pytest.raises(FigureError, match="bp_arrow"):
        figures.output_space_figure({k: v for k, v in output_space_data.items() if k != "bp_arrow"},
                                    tmp_path / "bad.png")


# --------------------------------------------------------------------------------------------------------------
# Command line and imports.


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_DIR.parent))
    return subprocess.run([sys.executable, "-m", "tp_keras.figures", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_nullspace_and_bad_command(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "nullspace.json"
    results.write_text(json.dumps({"layer": 2, "methods": {"ddtp_linear": {"mean": 0.2, "std": 0.1}}}))
    out = tmp_path / "nullspace.png"
    ok = _cli("nullspace", f"--results={results}", f"--out={out}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.strip() == str(out) and out.read_bytes()[:8] == PNG_SIGNATURE
    bad = _cli("histogram", f"--out={out}", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown command 'histogram'")


def test_cli_errors_in_process(runs, tmp_path, capsys):
    dirs, _ = runs

    def fails(*args):
        with pytest.raises(SystemExit) as exit_info:
            figures.main(["figures", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "missing command" in fails()
    assert "--runs" in fails("alignment", f"--out={tmp_path / 'a.png'}")
    assert "--out" in fails("nullspace", "--results=r.json")
    assert "does not apply" in fails("nullspace", "--results=r.json", "--layer=2", "--out=x.png")
    assert "valid hidden layers are 1..3" in fails("alignment", f"--runs={','.join(dirs)}", "--layer=9",
                                                  f"--out={tmp_path / 'a.png'}")
    assert "has no config.json" in fails("alignment", f"--runs={tmp_path}", f"--out={tmp_path / 'a.png'}")


def _top_level_imports(path):
    """Modules imported by statements that run at import time (not inside functions or classes)."""
    names = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names.append(base)
                names.extend(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])
            elif isinstance(node, ast.ExceptHandler):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return names


def test_matplotlib_is_imported_lazily_and_only_by_figures():
    top = _top_level_imports(PACKAGE_DIR / "paper" / "figures.py")
    assert not [n for n in top if n.split(".")[0] in ("matplotlib", "tensorflow", "keras")], top
    assert not [n for n in top if "output_space" in n], top
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.name == "figures.py" or path.parent.name == "search":  # the search draws its own (`search` extra)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        anywhere = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        anywhere += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in anywhere if n.split(".")[0] == "matplotlib"], f"{path.name} imports matplotlib"
    # (Importing figures, as nullspace does, loads no matplotlib: figures imports it inside the functions that draw.)
