"""tp_keras.bench: every requested method against BP, at several thread settings (one child process each)."""
import json
import re
import subprocess
import sys

import pytest

from conftest import assert_no_tensorflow_startup_noise
from test_bad_inputs import _one_line


@pytest.mark.slow
def test_bench_reports_every_requested_method_against_bp_at_each_thread_setting(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", "--methods=ddtp_rhl", "--samples=256",
                             "--batch_size=64", "--repeats=1", "--xla=off", "--threads=1,2", "--angles",
                             f"--json={out}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert_no_tensorflow_startup_noise(result.stderr)
    report = json.loads(out.read_text())
    assert report["threads"] == [1, 2] and report["errors"] == []
    assert report["methods"] == ["bp", "ddtp_rhl"] and report["angles"] is True
    assert {"peak_rss_mib", "rss_growth_mib", "gpu_peak_mib"} <= set(report["fields"])
    rows = report["results"]
    assert [(r["threads"], r["method"]) for r in rows] == [
        (threads, method) for threads in (1, 2) for method in ("bp", "ddtp_rhl")]
    for threads in (1, 2):
        group = [r for r in rows if r["threads"] == threads]
        assert all(r["xla"] is False for r in group)
        assert group[0]["method"] == "bp" and group[0]["ratio_to_bp"] == 1.0
        for row in group:
            assert row["train_seconds"] > 0
            assert row["ratio_to_bp"] == row["train_seconds"] / group[0]["train_seconds"]
            assert row["samples_per_second"] == 256 / row["train_seconds"]
            assert row["peak_rss_mib"] > 0 and row["rss_growth_mib"] >= 0
            assert row["peak_rss_mib"] >= row["rss_growth_mib"]
        # The high-water mark never decreases within one process, and BP (the first model built) raised it.
        peaks = [r["peak_rss_mib"] for r in group]
        assert peaks == sorted(peaks) and group[0]["rss_growth_mib"] > 0
        assert "feedback_seconds" in group[1] and "feedback_seconds" not in group[0]  # BP trains no feedback
        tp = group[1]
        assert tp["angle_seconds"] > 0 and tp["angle_ratio"] == tp["angle_seconds"] / tp["train_seconds"]
    # The combined table: one line per method and thread setting.
    table = result.stdout.split("all thread settings")[1]
    for threads in (1, 2):
        for method in ("bp", "ddtp_rhl"):
            assert re.search(rf"^{method}\s+{threads}\s+off\s", table, re.M), (method, threads, table)
    assert "[threads=1]" in result.stdout and "[threads=2]" in result.stdout  # each child's output is echoed


@pytest.mark.slow
def test_bench_loop_prints_the_host_bound_and_paper_network_figures(tmp_path):
    """--loop: N = 1 against N > 1 for the host-bound proxy (custom loop and fit) and N = 1 against the whole pass
    for the paper network, in one process, with the summary against the goals (tiny sizes)."""
    out = tmp_path / "loop.json"
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", "--loop", "--methods=ddtp_linear",
                             "--samples=48", "--batch_size=16", "--proxy_samples=160", "--proxy_steps_per_call=4",
                             "--repeats=1", "--xla=off", f"--json={out}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["loop"] is True and report["threads"] == [1] and report["methods"] == ["bp", "ddtp_linear"]
    assert [(r["method"], r["driver"], r["steps_per_call"]) for r in report["host_bound"]] == [
        (m, d, n) for m in ("bp", "ddtp_linear") for d in ("loop", "fit") for n in (1, 4)]
    assert [(r["method"], r["steps_per_call"]) for r in report["paper_network"]] == [
        (m, n) for m in ("bp", "ddtp_linear") for n in (1, "epoch")]
    for rows, steps in ((report["host_bound"], 160 // 32), (report["paper_network"], 48 // 16)):
        for row in rows:
            assert row["xla"] is False and row["steps_per_second"] == steps / row["seconds"] > 0
            first = next(r for r in rows if (r["method"], r["driver"], r["steps_per_call"]) ==
                         (row["method"], row["driver"], 1))
            assert row["ratio_to_first"] == row["steps_per_second"] / first["steps_per_second"]
    for line in report["summary"]:
        assert line in result.stdout
    assert re.search(r"^  ddtp_linear\s+fit\s+N=4 XLA off\s+x\s*[\d.]+\s+(met|not met)$", result.stdout, re.M)
    assert re.search(r"^  ddtp_linear\s+XLA off\s+[\d.]+\s+(met|not met)$", result.stdout, re.M)
    assert "784-32-10, batch 32" in result.stdout and "784-256-256-256-256-256-10, batch 16" in result.stdout
    assert_no_tensorflow_startup_noise(result.stderr)


def test_op_profile_sums_the_steps_ops_by_type_and_names_the_matmuls_and_the_noise():
    from tp_keras.tools import op_profile
    result = op_profile.profile("ddtp_linear", "feedback", batch_size=8, calls=2)
    by_type, by_name = result["by_type"], result["by_name"]
    assert any("MatMul" in op for op in by_type) and "StatelessRandomUniformV2" in by_type
    # Every named op is counted under its type, once.
    assert set(by_type) == {name.rpartition(":")[2] for name in by_name}
    assert sum(by_name.values()) == pytest.approx(sum(by_type.values())) == pytest.approx(result["op_ms"])
    assert 0 < result["op_ms"] and 0 < result["ms_per_call"]
    assert "ms per call unprofiled" in op_profile.report(result, top=3)


def test_op_profile_refuses_the_feedback_step_of_a_method_without_one():
    from tp_keras.tools import op_profile
    from tp_keras.run.config import ConfigError
    with pytest.raises(ConfigError, match="^--step: bp trains no feedback weights; choose --step=train or eval"):
        op_profile.profile("bp", "feedback", batch_size=8, calls=1)


def test_loop_bench_builds_a_model_for_every_method():
    """loop_bench (and gpu_check's paper part) builds every rule's model with η̂ and σ only where the rule uses
    them: TPModel refuses a hyper-parameter its rule ignores."""
    from tp_keras.core.rules import RULES
    from tp_keras.tools import loop_bench
    for method in RULES:
        model = loop_bench._model(method, ["8", "8"])
        assert model.rule.name == method


LOOP_BENCH_REFUSALS = {
    "--methods=zz": "--methods: unknown zz; choose from bp, ",
    "--methods=": "--methods: no method given; choose from bp, ",
    "--hidden=x": "--hidden: positive layer sizes expected, got x, e.g. --hidden=256,256",
    "--hidden=8,0": "--hidden: positive layer sizes expected, got 8,0",
    "--steps_per_call=x": "--steps_per_call: 'x' is not a number of batches per compiled call",
    "--drivers=zz": "--drivers=zz: choose among loop, fit",
    "extra": "unexpected argument 'extra'",
}


def test_loop_bench_and_op_profile_refuse_a_bad_flag_in_one_line_before_tensorflow_loads(tmp_path):
    """`python -m tp_keras.loop_bench` (and op_profile) end a bad setting with one `error: ...; <fix>` line, exit
    status 2, no traceback, before TensorFlow loads (one process each, all at once: ~1 s)."""
    runs = {arg: subprocess.Popen([sys.executable, "-m", "tp_keras.loop_bench", arg], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for arg in LOOP_BENCH_REFUSALS}
    runs["op_profile"] = subprocess.Popen([sys.executable, "-m", "tp_keras.op_profile", "--method=zz"], cwd=tmp_path,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    starts = dict(LOOP_BENCH_REFUSALS, op_profile="--method: unknown 'zz'; choose from bp, ")
    for arg, run in runs.items():
        out, err = run.communicate(timeout=120)
        _one_line(run.returncode, [line for line in err.splitlines() if line.strip()], starts=starts[arg])
        assert out == "" and "tensorflow" not in err.lower(), (arg, out, err)


# --- the conv-net cost figure (--conv) ---------------------------------------------------------------------------
@pytest.mark.slow  # traces 3 rules' steps (~2 min on the loaded 2-core CPU)
def test_conv_figures_give_every_rule_against_bp():
    """conv_bench.figures on a 2-channel 8×8 net of the comparison's structure: one row per rule, BP first, each
    ratio its seconds over BP's, the epoch ratio counting the flagfiles' feedback-only passes."""
    from tp_keras.tools import conv_bench
    batches = conv_bench.fashion_mnist_shaped_batches(8, 4, image_shape=(8, 8, 1))
    lines = []
    rows = conv_bench.figures(batches, methods=("ldrl", "dtpdrl"), xla_settings=(False,), repeats=1,
                              report=lines.append, channels=(2, 2, 2, 2))
    assert [r["method"] for r in rows] == ["bp", "ldrl", "dtpdrl"] and len(lines) == 4
    bp = rows[0]
    assert bp["ratio_to_bp"] == bp["cpu_ratio_to_bp"] == bp["epoch_ratio_to_bp"] == 1.0
    assert bp["feedback_seconds_per_batch"] is None and bp["extra_feedback_passes"] == 0
    for row in rows:
        assert set(row) == set(conv_bench.FIELDS)
        assert row["first_call_seconds"] > 0 and row["seconds_per_batch"] > 0 and row["cpu_seconds_per_batch"] > 0
        assert row["ratio_to_bp"] == row["seconds_per_batch"] / bp["seconds_per_batch"]
        assert row["cpu_ratio_to_bp"] == row["cpu_seconds_per_batch"] / bp["cpu_seconds_per_batch"]
        assert row["samples_per_second"] == 4 / row["seconds_per_batch"]
    ldrl, dtpdrl = rows[1], rows[2]
    assert ldrl["extra_feedback_passes"] == 0 and ldrl["epoch_ratio_to_bp"] == ldrl["ratio_to_bp"]
    assert dtpdrl["extra_feedback_passes"] == 1 and dtpdrl["feedback_seconds_per_batch"] > 0
    assert dtpdrl["epoch_ratio_to_bp"] == pytest.approx(
        (dtpdrl["seconds_per_batch"] + dtpdrl["feedback_seconds_per_batch"]) / bp["seconds_per_batch"])


@pytest.mark.slow
def test_bench_conv_prints_and_writes_the_figure(tmp_path):
    out = tmp_path / "conv.json"
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", "--conv", "--methods=fw_dtp", "--samples=128",
                             "--repeats=1", "--xla=off", f"--json={out}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["conv"] is True and report["methods"] == ["bp", "fw_dtp"] and report["threads"] == [2]
    assert [r["method"] for r in report["rows"]] == ["bp", "fw_dtp"]
    assert "fw_dtp" in result.stdout and "x BP" in result.stdout


@pytest.mark.slow  # a subprocess that loads TensorFlow
def test_bench_conv_refuses_a_rule_without_a_conv_version_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", "--conv", "--methods=gnt"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--methods" in result.stderr and "gnt" in result.stderr and "conv" in result.stderr


# --- populations against single models (--population) ---------------------------------------------------------

@pytest.mark.slow  # a subprocess training the paper network
def test_bench_population_prints_and_writes_the_figure(tmp_path):
    """--population runs population_bench.run on the paper network: one row per rule against the singles, whose
    ratio is the singles' seconds over the population's, and one steps/s row per K up to --members."""
    out = tmp_path / "population.json"
    result = subprocess.run([sys.executable, "-m", "tp_keras.bench", "--population", "--members=2",
                             "--methods=ddtp_linear", "--samples=256", "--repeats=1", "--xla=off", f"--json={out}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["population"] is True and report["members"] == 2 and report["hidden"] == [256] * 5
    rows = report["against_singles"]
    assert [r["method"] for r in rows] == ["bp", "ddtp_linear"]
    for row in rows:
        (round_,) = row["rounds"]
        assert row["ratio"] == pytest.approx(round_["singles_seconds"] / round_["population_seconds"])
    assert sorted({r["members"] for r in report["against_k"]}) == [1, 2]
    assert "population" in result.stdout and "goal >= 1.5" in result.stdout
