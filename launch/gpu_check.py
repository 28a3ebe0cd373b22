"""The GPU check, ready to run on a GPU machine: one command, one JSON.

    python launch/gpu_check.py --data_dir=<folder with the MNIST IDX files> --out=gpu_check.json

Parts, measured in the order --parts gives (the default puts the most wanted first, so that a run stopped at a time
limit still leaves the figures that matter most):
- agree: whether the GPU computes what the CPU does: bp, ddtp_linear and dtpdrl, two float64 training steps of the
  paper network on each device (for each --xla setting, the same on both: XLA draws the noise differently), the
  largest weight difference; the script stops if one exceeds 1e-7 (an update is ~1e-3). Skipped without a GPU
  (with --tiny, the CPU against itself: a test of the script).
- run: a full MNIST DDTP-linear run with its feedback pre-training (the paper's configuration, --epochs epochs, 100
  by default) through tp_keras.run.experiment with the device's defaults, timed end to end.
- paper: steps per second of every method, custom loop, on the paper network (784-5×256-10, batch 128), with N = 1
  and N = the whole pass, for each --xla setting.
- proxy: the host-bound proxy (784-32-10, batch 32) for bp, ddtp_linear and dtpdrl, N = 1 and N = 100, loop and
  fit, for each --xla setting (paper and proxy: tp_keras.tools.loop_bench, as `python -m tp_keras.bench --loop`
  prints them).

The JSON (with the machine, TensorFlow's devices and each part's seconds) is rewritten after every part and every
method. The tests run the script on a CPU with tiny sizes (--tiny).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository, when run as a file

from tp_keras.run import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder with the four MNIST IDX .gz files.")
flags.DEFINE_string("out", "gpu_check.json", "The JSON file written.")
flags.DEFINE_integer("epochs", 100, "Epochs of the DDTP-linear run.")
PARTS = ("agree", "run", "paper", "proxy")
flags.DEFINE_list("parts", list(PARTS), "What to measure, in this order: agree, run, paper, proxy.")
flags.DEFINE_list("xla", ["on", "off"], "XLA settings of the agree, paper and proxy parts, in this order.")
flags.DEFINE_integer("paper_samples", 55000, "Samples in one pass of the paper part (55000: the paper's epoch).")
flags.DEFINE_bool("tf32", False, "TensorFloat-32 float32 matmuls in every part (off: full float32, the launcher's "
                  "default).")
flags.DEFINE_bool("tiny", False, "Tiny sizes (a CPU test of the script): one method, few samples, 2 epochs.")


def _ddtp_linear_run(tiny):
    from tp_keras.run.config import Config
    from tp_keras.run.experiment import train_and_evaluate
    settings = dict(data_dir=FLAGS.data_dir, epochs=2 if tiny else FLAGS.epochs, progress=not tiny, tf32=FLAGS.tf32)
    if tiny:
        settings.update(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, epochs_fb=1)
    config = Config.paper("ddtp_linear", **settings)
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        summary = train_and_evaluate(config, workdir)
        return {"epochs": config.epochs, "epochs_fb": config.epochs_fb,
                "wall_seconds": time.perf_counter() - start, "summary": dict(summary)}


def _agreement(tiny, device, xla_settings):
    """{method: {"xla_off"/"xla_on": max |device - CPU| weight}} after two float64 training steps on each."""
    import numpy as np
    import tensorflow as tf

    from tp_keras.tools import loop_bench
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 784)), rng.integers(0, 10, 256).astype("int32")

    def weights(where, method, xla):
        with tf.device(where):
            trainer = loop_bench.paper_trainer(method, precision="float64", xla=xla)
            for start in (0, 128):
                trainer.train_step(tf.constant(x[start:start + 128]), tf.constant(y[start:start + 128]))
            return [v.numpy() for v in trainer.model.trainable_variables]
    agreement = {}
    for method in ["ddtp_linear"] if tiny else ["bp", "ddtp_linear", "dtpdrl"]:
        for xla in xla_settings:
            cpu, gpu = weights("CPU:0", method, xla), weights(device, method, xla)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(cpu, gpu))
            agreement.setdefault(method, {})[f"xla_{'on' if xla else 'off'}"] = diff
            print(f"gpu_check: {method} XLA {'on' if xla else 'off'}: max |{device} - CPU:0| weight after 2 float64 "
                  f"steps {diff:.2e}", flush=True)
    return agreement


def main(argv):
    del argv
    for part in FLAGS.parts:
        if part not in PARTS:
            raise app.UsageError(f"--parts: unknown part {part!r}; use {', '.join(PARTS)}")
    for setting in FLAGS.xla:
        if setting not in ("on", "off"):
            raise app.UsageError(f"--xla: {setting!r} is neither on nor off")
    cli.quiet_tensorflow_without_gpu()
    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(FLAGS.tf32)

    from tp_keras.core.rules import RULES
    from tp_keras.tools import loop_bench
    tiny = FLAGS.tiny
    xla_settings = [setting == "on" for setting in FLAGS.xla]
    report = {"machine": platform.machine(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
              "devices": [d.name for d in tf.config.list_physical_devices()], "tf32": FLAGS.tf32, "host_bound": [],
              "paper_network": [], "part_seconds": {}}

    def write():
        report["summary"] = loop_bench.summary(report["host_bound"], report["paper_network"])
        with open(FLAGS.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)

    for part in FLAGS.parts:
        part_start = time.perf_counter()
        if part == "agree":
            has_gpu = bool(tf.config.list_physical_devices("GPU"))
            if not (has_gpu or tiny):
                report["gpu_cpu_agreement"] = "skipped: no GPU"
                continue
            report["gpu_cpu_agreement"] = _agreement(tiny, "GPU:0" if has_gpu else "CPU:0", xla_settings)
            write()
            if max(d for by_xla in report["gpu_cpu_agreement"].values() for d in by_xla.values()) > 1e-7:
                raise SystemExit("gpu_check: the GPU's weights differ from the CPU's by more than 1e-7 in float64; "
                                 "check the CUDA libraries TensorFlow loaded before trusting its timings")
        elif part == "run":
            report["ddtp_linear_run"] = _ddtp_linear_run(tiny)
            print(f"gpu_check: DDTP-linear run of {report['ddtp_linear_run']['epochs']} epochs: "
                  f"{report['ddtp_linear_run']['wall_seconds']:.1f} s", flush=True)
        elif part == "paper":
            samples, batch_size, hidden = (160, 16, [16, 16]) if tiny else (
                FLAGS.paper_samples, loop_bench.PAPER["batch_size"], loop_bench.PAPER["hidden"])
            print(f"paper network: 784-{'-'.join(map(str, hidden))}-10, batch {batch_size}, {samples} samples, "
                  "N = 1 and the whole pass, custom loop", flush=True)
            for xla in xla_settings:
                for method in ["ddtp_linear"] if tiny else list(RULES):
                    report["paper_network"] += loop_bench.run([method], hidden, batch_size, samples, [1, "epoch"],
                                                              ["loop"], xla)
                    write()
        else:
            proxy = loop_bench.PROXY
            samples, batch_size, steps = (160, 8, 4) if tiny else (
                proxy["samples"], proxy["batch_size"], proxy["steps_per_call"])
            print(f"host-bound proxy: 784-{'-'.join(map(str, proxy['hidden']))}-10, batch {batch_size}, {samples} "
                  f"samples, N = 1 and {steps}, custom loop and fit", flush=True)
            for xla in xla_settings:
                for method in ["ddtp_linear"] if tiny else ["bp", "ddtp_linear", "dtpdrl"]:
                    report["host_bound"] += loop_bench.run([method], proxy["hidden"], batch_size, samples,
                                                           [1, steps], ["loop", "fit"], xla)
                    write()
        report["part_seconds"][part] = time.perf_counter() - part_start
        write()
    print("\n".join(report["summary"]), flush=True)
    print(f"gpu_check: wrote {FLAGS.out}", flush=True)


if __name__ == "__main__":
    flags.mark_flag_as_required("data_dir")
    app.run(main, flags_parser=cli.parse_flags_one_line)
