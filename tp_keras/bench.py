"""Benchmark: training throughput of every registered method on MNIST-shaped data, BP in the same run.

    python -m tp_keras.bench [--methods=bp,dtp,...] [--samples=55000] [--threads=1] [--xla=both]
                             [--precision=float32] [--repeats=2] [--json=bench.json]

For each method (its paper MNIST configuration: 5×256 tanh, batch 128) and each XLA setting, it times one
training pass (targets, feedback step, forward step on every batch) and one feedback-only pass over `samples`
random MNIST-shaped samples, after a warm-up that traces and compiles the steps. The batches are prepared on the
device beforehand, so the figures measure the step itself. Reported: seconds per pass (minimum over repeats),
samples/s, and the ratio of the train pass to BP's with the same XLA setting.
"""
from __future__ import annotations

import json
import os
import platform
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", None, "Methods to time (default: every registered method; BP is always added).")
flags.DEFINE_integer("samples", 55000, "Samples per pass (55000 = one MNIST training epoch).")
flags.DEFINE_integer("batch_size", 128, "Minibatch size.")
flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads (0: TensorFlow's default, all cores).")
flags.DEFINE_enum("xla", "both", ["on", "off", "both"], "XLA settings to time.")
flags.DEFINE_enum("precision", "float32", ["float32", "float64"], "Precision.")
flags.DEFINE_integer("repeats", 2, "Timed passes per setting (the minimum is reported).")
flags.DEFINE_bool("angles", False, "Also time a training pass that logs BP and GNT angles on every batch "
                  "(--log_interval=1), and its ratio to the plain training pass.")
flags.DEFINE_float("angle_damping", 1.0, "GNT damping λ of the timed angle pass (λ = 0 takes the slower "
                   "pseudo-inverse path).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def _batches(samples, batch_size, seed=0):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    x = ((rng.integers(0, 256, (samples, 784)) / 255.0 - 0.1307) / 0.3081).astype("float32")
    y = rng.integers(0, 10, samples).astype("int32")
    return [(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]))
            for i in range(0, samples, batch_size)]


def _time_pass(step, batches, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, y in batches:
            out = step(x, y)
        float(out["loss"])  # wait for the last step
        best = min(best, time.perf_counter() - t0)
    return best


def bench_method(method, batches, *, xla, precision, repeats, angles=False, angle_damping=1.0):
    from tp_keras.config import Config
    from tp_keras.data import Dataset, Split
    from tp_keras.experiment import build_model, build_trainer
    import numpy as np
    config = Config.paper(method, precision=precision, jit_compile=xla, log_angles=angles,
                          gn_damping=(angle_damping,))
    shape_only = Dataset(name="bench", train=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         val=None, test=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         num_outputs=10, task="classification", image_shape=(28, 28, 1))
    model = build_model(config, shape_only)
    trainer = build_trainer(config, model)
    # Warm-up: trace and compile for the full and the last (smaller) batch shapes.
    for x, y in batches[:2] + batches[-1:]:
        trainer.train_step(x, y)
        if trainer.trains_feedback:
            trainer.feedback_step(x, y)
        if angles:
            trainer.angle_step(x, y)
    result = {"train_seconds": _time_pass(trainer.train_step, batches, repeats)}
    if angles:
        result["angle_seconds"] = _time_pass(trainer.angle_step, batches, repeats)
        result["angle_ratio"] = result["angle_seconds"] / result["train_seconds"]
    if trainer.trains_feedback:
        result["feedback_seconds"] = _time_pass(trainer.feedback_step, batches, repeats)
    return result


def main(argv):
    del argv
    import tensorflow as tf
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from tp_keras.methods import METHODS
    methods = FLAGS.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise app.UsageError(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    methods = ["bp"] + [m for m in methods if m != "bp"]
    xla_settings = {"on": [True], "off": [False], "both": [False, True]}[FLAGS.xla]
    batches = _batches(FLAGS.samples, FLAGS.batch_size)
    rows = []
    print(f"tp_keras.bench: {FLAGS.samples} samples, batch {FLAGS.batch_size}, 5x256 tanh, {FLAGS.precision}, "
          f"threads={FLAGS.threads or 'default'}, TF {tf.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    header = f"{'method':<16}{'xla':<5}{'train s':>9}{'samples/s':>11}{'x BP':>7}{'fb-only s':>11}"
    if FLAGS.angles:
        header += f"{'angles s':>10}{'x train':>9}"
    print(header)
    print("-" * len(header))
    bp_time = {}
    for xla in xla_settings:
        for method in methods:
            r = bench_method(method, batches, xla=xla, precision=FLAGS.precision, repeats=FLAGS.repeats,
                             angles=FLAGS.angles, angle_damping=FLAGS.angle_damping)
            if method == "bp":
                bp_time[xla] = r["train_seconds"]
            row = {"method": method, "xla": xla, **r, "samples_per_second": FLAGS.samples / r["train_seconds"],
                   "ratio_to_bp": r["train_seconds"] / bp_time[xla]}
            rows.append(row)
            fb = f"{row['feedback_seconds']:>11.2f}" if "feedback_seconds" in row else f"{'-':>11}"
            angle = f"{row['angle_seconds']:>10.2f}{row['angle_ratio']:>9.2f}" if "angle_seconds" in row else ""
            print(f"{method:<16}{'on' if xla else 'off':<5}{row['train_seconds']:>9.2f}"
                  f"{row['samples_per_second']:>11.0f}{row['ratio_to_bp']:>7.2f}{fb}{angle}", flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"samples": FLAGS.samples, "batch_size": FLAGS.batch_size, "precision": FLAGS.precision,
                       "threads": FLAGS.threads, "angle_damping": FLAGS.angle_damping if FLAGS.angles else None,
                       "tensorflow": tf.__version__, "results": rows}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
