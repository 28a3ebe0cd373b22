"""Steps per second with one batch per compiled call against many, in both drivers (the host-bound figures).

    python -m tp_keras.loop_bench [--methods=bp,ddtp_linear,dtpdrl] [--hidden=32] [--batch_size=32]
                                  [--samples=32000] [--steps_per_call=1,100] [--drivers=loop,fit] [--xla=off]
                                  [--threads=1] [--json=out.json]

For each method, driver ('loop': the launcher's custom loop, tp_keras/loop.py; 'fit': Keras fit with
compile(steps_per_execution=N)) and N, it times one pass over `samples` random MNIST-shaped samples (784 inputs,
10 classes, the --hidden tanh layers) after a warm-up pass that traces and compiles, and prints steps per second
and the ratio to N = 1 of the same method and driver, all in one process. A tiny network (784-32-10, batch 32)
makes the step host-bound on a CPU, as the paper's network is on a GPU; --hidden=256,256,256,256,256 --batch_size=128
is the paper's network. 'epoch' as N runs the whole pass in one call.
"""
from __future__ import annotations

import json
import os
import platform
import time

from absl import app, flags

from tp_keras.run import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["bp", "ddtp_linear", "dtpdrl"], "Methods to time.")
flags.DEFINE_list("hidden", ["32"], "Hidden layer sizes (comma-separated).")
flags.DEFINE_integer("batch_size", 32, "Minibatch size.", lower_bound=1)
flags.DEFINE_integer("samples", 32000, "Samples per timed pass.", lower_bound=1)
flags.DEFINE_list("steps_per_call", ["1", "100"], "Batches per compiled call to compare (numbers or 'epoch').")
flags.DEFINE_list("drivers", ["loop", "fit"], "loop (the custom trainer) and/or fit (Keras).")
flags.DEFINE_enum("xla", "off", ["on", "off"], "XLA compilation of the steps.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).",
                     lower_bound=0)
flags.DEFINE_integer("repeats", 3, "Timed passes per setting (the fastest is reported).", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")


def _data(samples, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.random((samples, 784), dtype=np.float32), rng.integers(0, 10, samples).astype("int32")


def _model(method, hidden):
    from tp_keras.core.model import TPModel
    return TPModel(method, 784, [int(h) for h in hidden], 10, target_stepsize=0.1, sigma=0.1, seed=0)


def time_loop(method, hidden, x, y, batch_size, steps_per_call, xla, repeats=1) -> float:
    """Seconds of one pass of the custom trainer (after a warm-up pass; the fastest of `repeats`)."""
    import tensorflow as tf

    from tp_keras.core import loop
    from tp_keras.core.optimizers import TorchAdam
    from tp_keras.core.step import Trainer
    model = _model(method, hidden)
    trainer = Trainer(model, TorchAdam(1e-4), TorchAdam(1e-4) if model.feedback_variables else None,
                      jit_compile=xla)
    data = loop.Pass(tf.constant(x), tf.constant(y), batch_size)
    steps = loop.resolve_steps(steps_per_call, data.steps)
    multi_step = loop.StepLoop(trainer.train_step, batch_size, jit_compile=xla) if steps > 1 else None

    def one_pass():
        outputs = [out for out, _ in data.calls(trainer.train_step, multi_step, steps)]
        float(tf.reduce_sum(tf.stack([tf.reduce_sum(o["loss"]) for o in outputs])))  # waits for the device
    one_pass()
    return _fastest(one_pass, repeats)


def time_fit(method, hidden, x, y, batch_size, steps_per_call, xla, repeats=1) -> float:
    """Seconds of one `fit` epoch with compile(steps_per_execution=N) (after a warm-up epoch; the fastest of
    `repeats`)."""
    from tp_keras.core.optimizers import TorchAdam
    model = _model(method, hidden)
    steps = -(-len(x) // batch_size) if steps_per_call == "epoch" else int(steps_per_call)
    extra = {"feedback_optimizer": TorchAdam(1e-4)} if model.feedback_variables else {}
    model.compile(optimizer=TorchAdam(1e-4), steps_per_execution=steps, jit_compile=xla, **extra)
    one_pass = lambda: model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)  # noqa: E731
    one_pass()
    return _fastest(one_pass, repeats)


def _fastest(one_pass, repeats) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - start)
    return min(times)


def run(methods, hidden, batch_size, samples, steps_list, drivers, xla, repeats=1) -> list[dict]:
    x, y = _data(samples)
    steps_in_pass = -(-samples // batch_size)
    rows = []
    timers = {"loop": time_loop, "fit": time_fit}
    for method in methods:
        for driver in drivers:
            base = None
            for steps in steps_list:
                seconds = timers[driver](method, hidden, x, y, batch_size, steps, xla, repeats)
                rate = steps_in_pass / seconds
                base = rate if base is None else base
                row = {"method": method, "driver": driver, "steps_per_call": steps, "xla": xla,
                       "seconds": seconds, "steps_per_second": rate, "ratio_to_first": rate / base}
                rows.append(row)
                print(f"{method:12s} {driver:4s} N={str(steps):6s} {rate:9.1f} steps/s  x{rate / base:5.2f}",
                      flush=True)
    return rows


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    from tp_keras.run.config import parse_steps_per_call
    steps_list = [parse_steps_per_call(s) for s in FLAGS.steps_per_call]
    if set(FLAGS.drivers) - {"loop", "fit"}:
        cli.fail(f"--drivers={','.join(FLAGS.drivers)}: choose among loop, fit")
    import tensorflow as tf

    def set_threads():
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    cli.quiet_tensorflow_without_gpu(configure=set_threads)
    if tf.config.threading.get_intra_op_parallelism_threads() != FLAGS.threads:  # TF's logs were asked for
        set_threads()
    hidden = [int(h) for h in FLAGS.hidden]
    print(f"tp_keras.loop_bench: 784-{'-'.join(map(str, hidden))}-10, batch {FLAGS.batch_size}, {FLAGS.samples} "
          f"samples, XLA {FLAGS.xla}, threads {FLAGS.threads}, TF {tf.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, GPUs {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    rows = run(FLAGS.methods, hidden, FLAGS.batch_size, FLAGS.samples, steps_list, FLAGS.drivers, FLAGS.xla == "on",
               FLAGS.repeats)
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"hidden": hidden, "batch_size": FLAGS.batch_size, "samples": FLAGS.samples,
                       "threads": FLAGS.threads, "repeats": FLAGS.repeats, "tensorflow": tf.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags_one_line)
