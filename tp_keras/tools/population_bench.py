"""Samples per second of a population (tp_keras/core/population.py) against its members trained one after the other.

    python -m tp_keras.tools.population_bench [--members=10] [--xla=off|on|both] [--samples=2560]
        [--methods=ddtp_linear,dtpdrl,bp] [--hidden=256,256,256,256,256] [--batch_size=128] [--k_values=1,2,5,10]
        [--repeats=3] [--threads=0] [--json=out.json]
    python -m tp_keras.tools.population_bench --fit_steps=1,10 [--members=...] [--samples=...] [--methods=...]

For each method and XLA setting, in one process: `members` single models (each its own `step.Trainer`, its own
seed and shuffling order) each train `samples` samples, one model after the other, every pass one compiled
`loop.StepLoop` call; then one `Population` of the same members trains the same samples per member, the pass one
compiled `Population.loop` call. Both are built and warmed up (traced and compiled) first, then timed in
`repeats` alternating rounds; the row gives samples per second (all members' samples over the median seconds) and
the population's ratio to the singles, with each round's ratio. Then steps
per second (population batches, each a batch of every member) against K. Random MNIST-shaped data (784 inputs,
10 classes); the paper network by default.

With --fit_steps=N,...: instead, for each method, XLA setting and N, one epoch of the population through Keras
`fit` (`PopulationModel`, compile(steps_per_execution=N), the data in memory, unshuffled) against the same epoch by
its custom loop (`Population.loop`, N batches per call), alternating rounds: samples/s of each and fit's time over
the loop's.
"""
from __future__ import annotations

import functools
import json
import platform
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from tp_keras.core import loop
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.population import Population
from tp_keras.core.population_model import PopulationModel
from tp_keras.core.rules import get_rule
from tp_keras.core.step import Trainer

FLAGS = flags.FLAGS
GOAL = 1.5  # issue 29: K = 10 members at least 1.5x the samples/s of 10 single models run one after the other


def define_flags():
    flags.DEFINE_integer("members", 10, "K, the population's size, and the number of single models it is timed "
                         "against")
    flags.DEFINE_enum("xla", "off", ["off", "on", "both"], "XLA for the singles' steps and the population")
    flags.DEFINE_integer("samples", 2560, "training samples per member (one pass; whole batches)")
    flags.DEFINE_list("methods", ["ddtp_linear", "dtpdrl", "bp"], "rules to time")
    flags.DEFINE_list("hidden", ["256"] * 5, "hidden layer sizes (the paper network: five of 256)")
    flags.DEFINE_integer("batch_size", 128, "batch size")
    flags.DEFINE_list("k_values", ["1", "2", "5", "10"], "population sizes of the steps/s against K rows "
                      "(empty: none)")
    flags.DEFINE_integer("repeats", 3, "timed rounds (singles, then population, alternating); the median of each")
    flags.DEFINE_integer("threads", 0, "TensorFlow's intra- and inter-op threads (0: its default)")
    flags.DEFINE_list("fit_steps", [], "instead of the singles and K rows: the population through Keras fit "
                      "(PopulationModel) against its custom loop at these N batches per compiled call")
    flags.DEFINE_string("json", None, "also write the rows to this JSON file")


def _model(method, hidden, seed):
    return TPModel(method, 784, hidden, 10, seed=seed, **get_rule(method).used(target_stepsize=0.1, sigma=0.1))


def _trainer(method, hidden, seed, xla):
    model = _model(method, hidden, seed)
    return Trainer(model, TorchAdam(1e-4), TorchAdam(1e-4) if model.feedback_variables else None,
                   jit_compile=xla)


def _data(samples, members):
    """MNIST-shaped inputs and labels, and each member's shuffling order."""
    rng = np.random.default_rng(0)
    x = ((rng.integers(0, 256, (samples, 784)) / 255.0 - 0.1307) / 0.3081).astype("float32")
    y = rng.integers(0, 10, samples).astype("int32")
    order = np.stack([np.random.default_rng([k, 0]).permutation(samples) for k in range(members)]).astype("int32")
    return tf.constant(x), tf.constant(y), order


def _seconds(one_pass) -> float:
    start = time.perf_counter()
    one_pass()
    return time.perf_counter() - start


def singles_pass(method, hidden, x, y, order, batch_size, xla):
    """One pass of each member's own trainer, one after the other (every member's StepLoop traced and compiled
    by a first pass here): a function that runs it."""
    steps = int(order.shape[1]) // batch_size
    passes = []
    for k in range(order.shape[0]):
        trainer = _trainer(method, hidden, k, xla)
        xk, yk = tf.gather(x, order[k]), tf.gather(y, order[k])
        multi = loop.StepLoop(trainer.train_step, batch_size, jit_compile=xla)
        passes.append(functools.partial(lambda m, a, b: float(tf.reduce_sum(m(a, b, 0, steps)["loss"])),
                                        multi, xk, yk))
        passes[-1]()

    def one_pass():
        for member_pass in passes:
            member_pass()
    return one_pass


def population_pass(method, hidden, x, y, order, batch_size, xla):
    """One pass of the population of these members (traced and compiled by a first pass here): a function that
    runs it."""
    steps = int(order.shape[1]) // batch_size
    population = Population([_trainer(method, hidden, k, xla) for k in range(order.shape[0])], jit_compile=xla)

    def one_pass():
        float(tf.reduce_sum(population.loop(x, y, order, 0, steps, batch_size)["loss"]))
    one_pass()
    return one_pass


def fit_pass(method, hidden, members, x, y, batch_size, xla, steps_per_execution):
    """One epoch of `PopulationModel.fit` over the in-memory (x, y) (unshuffled; traced and compiled by a first
    epoch here): a function that runs it."""
    model = PopulationModel([_model(method, hidden, k) for k in range(members)])
    feedback = {"feedback_optimizer": TorchAdam(1e-4)} if model.members[0].feedback_variables else {}
    model.compile(optimizer=TorchAdam(1e-4), jit_compile=xla, steps_per_execution=steps_per_execution, **feedback)

    def one_pass():
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    one_pass()
    return one_pass


def loop_pass(method, hidden, members, x, y, batch_size, xla, steps_per_execution):
    """One epoch of the same population by its custom loop, `steps_per_execution` batches per `Population.loop`
    call, every member reading the rows in order as fit's unshuffled stream does (traced and compiled by a first
    epoch here): a function that runs it."""
    steps = int(x.shape[0]) // batch_size
    population = Population([_trainer(method, hidden, k, xla) for k in range(members)], jit_compile=xla)
    order = np.tile(np.arange(int(x.shape[0]), dtype="int32"), (members, 1))

    def one_pass():
        for first in range(0, steps, steps_per_execution):
            count = min(steps_per_execution, steps - first)
            float(tf.reduce_sum(population.loop(x, y, order, first * batch_size, count, batch_size)["loss"]))
    one_pass()
    return one_pass


def run_fit(methods, hidden, members, samples, batch_size, xla_settings, steps_per_execution, repeats=3) -> dict:
    """Samples/s of a population through Keras fit (`PopulationModel`) against its custom loop (`Population.loop`)
    at the same N batches per compiled call and XLA setting: built and warmed first, then `repeats` alternating
    rounds, the medians. The rows: "fit_against_loop"."""
    x, y, _ = _data(samples, members)
    steps = samples // batch_size
    report = {"machine": platform.processor() or platform.machine(), "members": members, "samples": samples,
              "batch_size": batch_size, "hidden": hidden, "fit_against_loop": []}
    print(f"network 784-{'-'.join(map(str, hidden))}-10, batch {batch_size}, {steps} batches per member, "
          f"{members} members: PopulationModel.fit against Population.loop", flush=True)
    for xla in xla_settings:
        for method in methods:
            for n in steps_per_execution:
                fit_run = fit_pass(method, hidden, members, x, y, batch_size, xla, n)
                loop_run = loop_pass(method, hidden, members, x, y, batch_size, xla, n)
                times = [(_seconds(fit_run), _seconds(loop_run)) for _ in range(repeats)]
                fit_seconds, loop_seconds = (float(np.median([t[i] for t in times])) for i in (0, 1))
                total = members * steps * batch_size
                row = {"method": method, "xla": xla, "steps_per_execution": n,
                       "fit_samples_per_second": total / fit_seconds, "loop_samples_per_second": total / loop_seconds,
                       "fit_over_loop_seconds": fit_seconds / loop_seconds,
                       "rounds": [{"fit_seconds": a, "loop_seconds": b} for a, b in times]}
                report["fit_against_loop"].append(row)
                print(f"{method:12s} XLA {'on ' if xla else 'off'}  N={n:3d}  fit {total / fit_seconds:8.0f} "
                      f"samples/s  loop {total / loop_seconds:8.0f} samples/s  fit takes x{fit_seconds / loop_seconds:5.2f}"
                      " the loop's time; rounds x" + ", x".join(f"{a / b:.2f}" for a, b in times), flush=True)
    return report


def run(methods, hidden, members, samples, batch_size, xla_settings, k_values, repeats=3) -> dict:
    x, y, order = _data(samples, members)
    steps = samples // batch_size
    report = {"machine": platform.processor() or platform.machine(), "members": members, "samples": samples,
              "batch_size": batch_size, "hidden": hidden, "against_singles": [], "against_k": []}
    print(f"network 784-{'-'.join(map(str, hidden))}-10, batch {batch_size}, {steps} batches per member, "
          f"{members} members", flush=True)
    for xla in xla_settings:
        for method in methods:
            # both built and warmed first, then timed in alternating rounds (the median of each): a load that
            # changes during the run weighs on both alike
            singles_run = singles_pass(method, hidden, x, y, order, batch_size, xla)
            population_run = population_pass(method, hidden, x, y, order, batch_size, xla)
            times = [(_seconds(singles_run), _seconds(population_run)) for _ in range(repeats)]
            singles, population = (float(np.median([t[i] for t in times])) for i in (0, 1))
            total = members * steps * batch_size
            row = {"method": method, "xla": xla, "singles_samples_per_second": total / singles,
                   "population_samples_per_second": total / population, "ratio": singles / population,
                   "rounds": [{"singles_seconds": a, "population_seconds": b} for a, b in times]}
            report["against_singles"].append(row)
            print(f"{method:12s} XLA {'on ' if xla else 'off'}  {members} singles {total / singles:8.0f} samples/s"
                  f"  population {total / population:8.0f} samples/s  x{singles / population:5.2f}  "
                  f"{'met' if singles / population >= GOAL else 'not met'} (goal >= {GOAL:g}); rounds x"
                  + ", x".join(f"{a / b:.2f}" for a, b in times), flush=True)
        for method in methods:
            for k in k_values:
                population_run = population_pass(method, hidden, x, y, order[:k], batch_size, xla)
                seconds = float(np.median([_seconds(population_run) for _ in range(repeats)]))
                row = {"method": method, "xla": xla, "members": k, "steps_per_second": steps / seconds,
                       "samples_per_second": k * steps * batch_size / seconds}
                report["against_k"].append(row)
                print(f"{method:12s} XLA {'on ' if xla else 'off'}  K={k:3d}  {steps / seconds:7.1f} steps/s  "
                      f"{k * steps * batch_size / seconds:8.0f} samples/s", flush=True)
    return report


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    xla_settings = {"off": [False], "on": [True], "both": [False, True]}[FLAGS.xla]
    k_values = [int(k) for k in FLAGS.k_values if int(k) <= FLAGS.members]
    hidden = [int(h) for h in FLAGS.hidden]
    if FLAGS.fit_steps:
        report = run_fit(FLAGS.methods, hidden, FLAGS.members, FLAGS.samples, FLAGS.batch_size, xla_settings,
                         [int(n) for n in FLAGS.fit_steps], FLAGS.repeats)
    else:
        report = run(FLAGS.methods, hidden, FLAGS.members, FLAGS.samples, FLAGS.batch_size, xla_settings, k_values,
                     FLAGS.repeats)
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
