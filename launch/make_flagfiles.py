"""Writes launch/<name>.flags for every table config of tp_keras/reference/configs.py (one file per paper cell).

    python launch/make_flagfiles.py           # (re)write every flagfile
    python launch/make_flagfiles.py --check   # exit 1, naming them, if any file differs from what would be written

Each file: a header comment (the reference config; the paper's table, cell and number, or why the config has
none; the setting; an estimated cost on the 2-core CPU of docs/performance.md; what was measured for it at full
length, where `results/<name>/` holds runs; any deliberate departure from the reference file, docs/semantics.md §15;
the command), then one flag per line with every value at full precision
(repr of the float). Imports no TensorFlow.
"""
from __future__ import annotations

import os
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tp_keras.reference import configs as P  # noqa: E402
from tp_keras.reference import facts as paper_facts  # noqa: E402
from tp_keras.paper.sweep_results import format_mean_sd, summarize_sweep  # noqa: E402

RESULTS = os.path.join(os.path.dirname(HERE), "results")  # the committed 100-epoch runs

# ---- Cost model (an estimate; every input is a figure measured in docs/performance.md) --------------------------
# One pass over 55,000 MNIST samples, 5x256, each method's MNIST config, float32, 2 threads, XLA off, on the 2-core
# CPU (docs/performance.md, "CPU throughput: one pass of every method", `python -m tp_keras.bench`): a training
# pass, and a feedback-only pass (pre-training and extra feedback epochs).
TRAIN_PASS_S = {"bp": 1.90, "dfa": 1.84, "dtp": 3.31, "dtp_pretrained": 3.16, "dtpdrl": 4.51, "ddtp_linear": 2.69,
                "ddtp_control": 2.61, "ddtp_rhl": 7.10}
FB_PASS_S = {"dtp": 1.90, "dtp_pretrained": 1.93, "dtpdrl": 3.42, "ddtp_linear": 2.06, "ddtp_control": 1.83,
             "ddtp_rhl": 5.57}
# Whole runs are slower than the benchmark's bare passes (evaluation, shuffling, the Python loop, tracing): the
# 3-epoch end-to-end MNIST runs (docs/performance.md, "Short horizon: 3 epochs on real MNIST") took 1.2-1.5x the
# passes they contain.
RUN_FACTOR = 1.3
# float64 / float32 train-pass time (docs/performance.md, "CPU throughput": measured for bp, dfa, dtp, dtpdrl,
# ddtp_linear; dtp_pretrained is dtp's step; ddtp_rhl and ddtp_control not measured, 2.0 assumed).
F64_FACTOR = {"bp": 1.63, "dfa": 1.63, "dtp": 1.96, "dtp_pretrained": 1.96, "dtpdrl": 1.96, "ddtp_linear": 2.18,
              "ddtp_rhl": 2.0, "ddtp_control": 2.0}
MEASURED_F64 = ("bp", "dfa", "dtp", "dtpdrl", "ddtp_linear")
# Per-sample work relative to the 784-256x5-10 MLP, counted as forward multiply-adds.
MLP_MACS = 784 * 256 + 4 * 256 * 256 + 256 * 10                       # 465,408
CIFAR_MLP_FACTOR = (3072 * 1024 + 2 * 1024 * 1024 + 1024 * 10) / MLP_MACS  # 5,253,120 / 465,408 = 11.3
CNN_MACS = 32 * 32 * 5 * 5 * 3 * 32 + 16 * 16 * 5 * 5 * 32 * 64 + 4096 * 512 + 512 * 10  # 17.7M (docs/semantics.md §8)
CNN_FACTOR = CNN_MACS / MLP_MACS                                       # 38
TRAIN_SAMPLES = {("mnist", False): 55000, ("mnist", True): 60000, ("fashion_mnist", False): 55000,
                 ("fashion_mnist", True): 60000, ("cifar10", False): 45000, ("cifar10", True): 50000}

DATA_DIR = {"mnist": "../shared/data/mnist",
            "fashion_mnist": "../shared/data/fashion_mnist",
            "cifar10": "../shared/data/cifar10"}
DATA_NOTE = {"mnist": "the four MNIST IDX .gz files",
             "fashion_mnist": "the four Fashion-MNIST IDX .gz files",
             "cifar10": "cifar-10-python.tar.gz or cifar-10-batches-py/"}
DATASET_NAME = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}

# Flags in file order. MLP cells get the architecture flags; only DDTP-RHL cells get its random layer's.
HYPER_FLAGS = ("lr", "target_stepsize", "beta1", "beta2", "epsilon", "forward_wd", "lr_fb", "beta1_fb", "beta2_fb",
               "epsilon_fb", "feedback_wd", "sigma")
SCHEDULE_FLAGS = ("batch_size", "epochs", "epochs_fb", "extra_fb_epochs")


def flag_lines(name: str) -> list[str]:
    c = P.FINAL_CONFIGS[name]
    cnn = c["architecture"] == "cnn"
    lines = [f"--method={c['method']}", f"--dataset={c['dataset']}", f"--precision={c['precision']}"]
    if cnn:
        lines.append("--architecture=cnn")
    else:
        lines += [f"--num_hidden={c['num_hidden']}", f"--size_hidden={c['size_hidden']}"]
    for key in HYPER_FLAGS:
        value = c[key]
        text = ",".join(repr(v) for v in value) if isinstance(value, tuple) else repr(value)
        lines.append(f"--{key}={text}")
    if c["method"] == "ddtp_rhl":
        lines.append(f"--size_hidden_fb={c['size_hidden_fb']}")
        lines.append("--recurrent_input" if c["recurrent_input"] else "--norecurrent_input")
    lines += [f"--{key}={c[key]!r}" for key in SCHEDULE_FLAGS]
    if c["no_val_set"]:
        lines.append("--no_val_set")
    if c["only_train_first_layer"]:
        lines.append("--only_train_first_layer")
    lines.append(f"--cell={name}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sig(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def cost_line(name: str) -> str:
    c = P.FINAL_CONFIGS[name]
    m = c["method"]
    fb = FB_PASS_S.get(m, 0.0)
    epoch = TRAIN_PASS_S[m] + c["extra_fb_epochs"] * fb
    precision = F64_FACTOR[m] if c["precision"] == "float64" else 1.0
    samples = TRAIN_SAMPLES[(c["dataset"], c["no_val_set"])]
    if c["architecture"] == "cnn":
        size, size_text = CNN_FACTOR, f", x {CNN_FACTOR:.0f} per sample (CNN multiply-adds: 17.7M vs 0.47M)"
    elif c["dataset"] == "cifar10":
        size, size_text = CIFAR_MLP_FACTOR, f", x {CIFAR_MLP_FACTOR:.1f} per sample (3x1024 vs 5x256 weights)"
    else:
        size, size_text = 1.0, ""
    scale = RUN_FACTOR * precision * size * samples / 55000
    epoch_s = epoch * scale
    total = c["epochs"] * epoch_s + c["epochs_fb"] * fb * scale
    passes = f"a {m} training pass {TRAIN_PASS_S[m]} s"
    if c["extra_fb_epochs"]:
        passes += f" + {c['extra_fb_epochs']} feedback-only pass{'es' if c['extra_fb_epochs'] > 1 else ''} x {fb} s"
    parts = [f"{passes} per epoch (MNIST, float32, measured), x {RUN_FACTOR} (whole runs vs bare passes)"]
    if c["precision"] == "float64":
        parts.append(f"x {precision} float64" + (" (measured)" if m in MEASURED_F64 else " (assumed)"))
    if samples != 55000:
        parts.append(f"x {samples}/55000 samples")
    extra = ""
    if c["architecture"] == "cnn":
        extra = "; the CNN was not timed and convolutions run below this CPU's matmul rate, so likely more"
    elif c["only_train_first_layer"]:
        extra = "; Frozen-MNIST skips the frozen layers' local losses and weight updates, so likely somewhat less"
    pre = f" + {c['epochs_fb']} pre-training passes" if c["epochs_fb"] else ""
    return (f"Cost: an estimate, not measured for this config: ~{_sig(epoch_s)} s/epoch, ~{_duration(total)} for "
            f"{c['epochs']} epochs{pre} on the 2-core CPU (2 threads, XLA off), from docs/performance.md: "
            f"{', '.join(parts)}{size_text}{extra}.")


def measured_line(name: str) -> str | None:
    """What was measured for the config in `results/<name>/` (Table 1 at 100 epochs, float32 runs;
    a float64 rerun goes to `results/<name>_float64/`), or None."""
    folder = os.path.join(RESULTS, name)
    if not os.path.isdir(folder):
        return None
    result = summarize_sweep(folder)
    stats = result["summary"]["error_test_val_best_pct"]
    if not stats["n"]:
        return None
    seeds = result["final_seeds"]
    return (f"Measured here: {format_mean_sd(stats, 'pct')}% over {stats['n']} seed{'s' if stats['n'] != 1 else ''} "
            f"({', '.join(map(str, seeds))}), {result['epochs'][1]} epochs, float32 (results/{name}/; "
            f"`python -m tp_keras.tables --results=results`; wall times and every miss explained in "
            f"docs/performance.md, "
            f"\"Table 1 at 100 epochs\").")


def setting_line(name: str) -> str:
    c = P.FINAL_CONFIGS[name]
    if c["architecture"] == "cnn":
        arch = "the Table 3 CNN (docs/semantics.md §8), per-layer lr and epsilon"
    else:
        arch = f"MLP {c['size_input']}-{c['size_hidden']}x{c['num_hidden']}-10"
        if c["method"] == "ddtp_rhl":
            arch += f", random feedback layer {c['size_hidden_fb']}" + (", recurrent input" if c["recurrent_input"]
                                                                         else "")
    schedule = f"{c['epochs']} epochs"
    if c["epochs_fb"] or c["extra_fb_epochs"]:
        schedule += (f", {c['epochs_fb']} feedback pre-training epochs, {c['extra_fb_epochs']} feedback-only "
                     f"epoch{'s' if c['extra_fb_epochs'] != 1 else ''} after each epoch")
    split = "no validation set (trains on the whole training set)" if c["no_val_set"] else \
        "5000-sample validation split"
    frozen = ", only the first hidden layer's forward weights train (Frozen-MNIST, docs/semantics.md §11)" \
        if c["only_train_first_layer"] else ""
    return (f"Setting: {c['method']} on {DATASET_NAME[c['dataset']]}{frozen}; {arch}; {c['precision']} (as the "
            f"reference ran it); {schedule}; {split}.")


def _comment(text: str) -> list[str]:
    """One header item as comment lines of at most 118 characters; continuation lines are indented."""
    return textwrap.wrap(text, 118, initial_indent="# ", subsequent_indent="#   ", break_long_words=False,
                         break_on_hyphens=False)


def render(name: str) -> str:
    c = P.FINAL_CONFIGS[name]
    data = c["dataset"]
    header = _comment(f"{name}: the reference's final_configs/{name}.py (network_type {c['network_type']}), "
                      "every value exact (as the reference resolved it).")
    header += _comment(f"Paper: {paper_facts.paper_result(name)}.")
    header += _comment(setting_line(name))
    header += _comment(cost_line(name))
    measured = measured_line(name)
    if measured:
        header += _comment(measured)
    if name in P.NOTES:
        header += _comment(f"Note: {P.NOTES[name]}")
    # The command stays on one line, to be copied.
    header.append(f"# Run: python -m tp_keras.launch --flagfile=launch/{name}.flags --data_dir={DATA_DIR[data]}")
    header += _comment(f"  (--data_dir: a folder with {DATA_NOTE[data]}; without it tensorflow-datasets is used. "
                       f"Writes runs/{name}_seed42 unless --workdir; --seed=N for another seed.)")
    return "\n".join(header + flag_lines(name)) + "\n"


def main(argv) -> int:
    check = "--check" in argv[1:]
    stale = []
    for name in P.FINAL_CONFIGS:
        path = os.path.join(HERE, f"{name}.flags")
        text = render(name)
        current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if current != text:
            stale.append(os.path.basename(path))
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python launch/make_flagfiles.py", file=sys.stderr)
            return 1
        print(f"{len(P.FINAL_CONFIGS)} flagfiles up to date")
        return 0
    print(f"wrote {len(stale)} of {len(P.FINAL_CONFIGS)} flagfiles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
