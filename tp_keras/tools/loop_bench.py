"""Steps per second with one batch per compiled call against many, in both drivers (the host-bound figures).

    python -m tp_keras.loop_bench [--methods=bp,ddtp_linear,dtpdrl] [--hidden=32] [--batch_size=32]
                                  [--samples=32000] [--steps_per_call=1,100] [--drivers=loop,fit] [--xla=off]
                                  [--threads=1] [--json=out.json]

For each method, driver ('loop': the launcher's custom loop, tp_keras/core/loop.py; 'fit': Keras fit with
compile(steps_per_execution=N)) and N, it times one pass over `samples` random MNIST-shaped samples (784 inputs,
10 classes, the --hidden tanh layers) after a warm-up pass that traces and compiles, and prints steps per second
and the ratio to N = 1 of the same method and driver, all in one process. Both drivers read the same device-resident
tensors (no NumPy conversion inside either clock), and a method's settings are timed in rounds, one pass of each in
turn, the fastest of --repeats kept. A tiny network (784-32-10, batch 32)
makes the step host-bound on a CPU, as the paper's network is on a GPU; --hidden=256,256,256,256,256 --batch_size=128
is the paper's network. 'epoch' as N runs the whole pass in one call.

`figures` runs the issue's two figures (the host-bound proxy in both drivers, the paper network N = 1 against the
whole pass) and sums them up against the goals: `python -m tp_keras.bench --loop` and launch/gpu_check.py print it.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import time

from absl import app, flags

from tp_keras.core.rules import RULES, get_rule
from tp_keras.run import cli
from tp_keras.run.config import Config, ConfigError, parse_steps_per_call
from tp_keras.run.data import Dataset, Split

FLAGS = flags.FLAGS


def start_tensorflow(threads: int) -> None:
    """Imports TensorFlow with its C++ start-up lines hidden on machines without a GPU
    (cli.quiet_tensorflow_without_gpu) and its thread pools set to `threads` (0: TensorFlow's default) before
    they start."""
    def set_threads():
        import tensorflow as tf  # imported quietly by then: an import before the quiet one would print the lines
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        set_threads.done = True
    set_threads.done = False
    cli.quiet_tensorflow_without_gpu(configure=set_threads)
    if not set_threads.done:  # TensorFlow's logs were asked for: nothing was configured yet
        set_threads()


def mnist_shaped_batches(samples, batch_size, seed=0):
    """Random MNIST-shaped (normalised pixels, labels 0..9) batches, on the device."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    x = ((rng.integers(0, 256, (samples, 784)) / 255.0 - 0.1307) / 0.3081).astype("float32")
    y = rng.integers(0, 10, samples).astype("int32")
    return [(tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size]))
            for i in range(0, samples, batch_size)]


def paper_trainer(method, *, precision="float32", xla=None, angles=False, angle_damping=1.0):
    """The trainer of `method`'s paper MNIST configuration (5×256 tanh), built for MNIST-shaped data."""
    from tp_keras.run.factories import build_model, build_trainer
    import numpy as np
    config = Config.paper(method, precision=precision, jit_compile=xla, log_angles=angles,
                          gn_damping=(angle_damping,))
    shape_only = Dataset(name="bench", train=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         val=None, test=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         num_outputs=10, task="classification", image_shape=(28, 28, 1))
    return build_trainer(config, build_model(config, shape_only))


def _data(samples, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.random((samples, 784), dtype=np.float32), rng.integers(0, 10, samples).astype("int32")


def _model(method, hidden):
    from tp_keras.core.model import TPModel
    # η̂ and σ only where the method uses them (TPModel refuses a hyper-parameter its rule ignores)
    return TPModel(method, 784, [int(h) for h in hidden], 10, seed=0,
                   **get_rule(method).used(target_stepsize=0.1, sigma=0.1))


def prepare_loop(method, hidden, x, y, batch_size, steps_per_call, xla):
    """One pass of the custom trainer over device-resident (x, y), as a function, after a warm-up pass that traces
    and compiles."""
    import tensorflow as tf

    from tp_keras.core import loop
    from tp_keras.core.optimizers import TorchAdam
    from tp_keras.core.step import Trainer
    model = _model(method, hidden)
    trainer = Trainer(model, TorchAdam(1e-4), TorchAdam(1e-4) if model.feedback_variables else None,
                      jit_compile=xla)
    data = loop.Pass(x, y, batch_size)
    steps = loop.resolve_steps(steps_per_call, data.steps)
    multi_step = loop.StepLoop(trainer.train_step, batch_size, jit_compile=xla) if steps > 1 else None

    def one_pass():
        outputs = [out for out, _ in data.calls(trainer.train_step, multi_step, steps)]
        float(tf.reduce_sum(tf.stack([tf.reduce_sum(o["loss"]) for o in outputs])))  # waits for the device
    one_pass()
    return one_pass


def prepare_fit(method, hidden, x, y, batch_size, steps_per_call, xla, keras_own_function=False):
    """One `fit` epoch over the same device-resident (x, y) with compile(steps_per_execution=N), as a function,
    after a warm-up epoch. fit's own per-call work (its checks of the data, Keras' dataset, callbacks) stays in
    it: it is what a Keras user pays per epoch. `keras_own_function`: through Keras' own train function
    (TensorFlowTrainer.make_train_function) instead of TPModel's."""
    from tp_keras.core.optimizers import TorchAdam
    model = _model(method, hidden)
    steps = -(-int(x.shape[0]) // batch_size) if steps_per_call == "epoch" else int(steps_per_call)
    extra = {"feedback_optimizer": TorchAdam(1e-4)} if model.feedback_variables else {}
    model.compile(optimizer=TorchAdam(1e-4), steps_per_execution=steps, jit_compile=xla, **extra)
    if keras_own_function:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
        TensorFlowTrainer.make_train_function(model)  # fit finds a train function made and keeps it
    one_pass = lambda: model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)  # noqa: E731
    one_pass()
    return one_pass


def _on_device(x, y):
    """(x, y) as tensors: both drivers start every timed pass from the same device-resident data, so that neither
    clock holds a NumPy-to-tensor conversion."""
    import tensorflow as tf
    return tf.convert_to_tensor(x), tf.convert_to_tensor(y)


def prepare_data(method, hidden, x, y, batch_size, steps_per_call, xla):
    """One pass over Keras' own dataset of (x, y) (the array adapter's tf.data pipeline that fit iterates), N
    batches per compiled call as fit's train function fetches them, with no step: what the data alone costs fit.
    (method, hidden and xla play no part.)"""
    import tensorflow as tf
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
    adapter = ArrayDataAdapter(x, y, batch_size=batch_size, shuffle=False)
    steps = adapter.num_batches if steps_per_call == "epoch" else int(steps_per_call)

    @tf.function(autograph=False)
    def fetch(iterator):
        def body(count, batch, _):
            # one element read, so that the batch is really produced
            value = tf.reduce_sum(batch.get_value()[0][:1, :1])
            return count + 1, iterator.get_next_as_optional(), value
        first = iterator.get_next_as_optional()
        return tf.while_loop(lambda count, batch, _: tf.logical_and(count < steps, batch.has_value()), body,
                             (tf.constant(0), first, tf.constant(0.0, x.dtype)))[2]

    def one_pass():
        iterator = iter(adapter.get_tf_dataset())
        for _ in range(-(-adapter.num_batches // steps)):
            float(fetch(iterator))
    one_pass()
    return one_pass


PREPARE = {"loop": prepare_loop, "fit": prepare_fit, "data": prepare_data,
           "keras_fit": functools.partial(prepare_fit, keras_own_function=True)}


def run(methods, hidden, batch_size, samples, steps_list, drivers, xla, repeats=1) -> list[dict]:
    """For each method, every (driver, N) setting is prepared (built, traced, warmed up) first, then timed in
    `repeats` rounds that take one pass of each setting in turn, the fastest pass of each reported: a load that
    comes and goes on a shared machine then falls on every setting of the method alike, so that the ratios
    between drivers and between N compare like with like."""
    x, y = _on_device(*_data(samples))
    steps_in_pass = -(-samples // batch_size)
    rows = []
    for method in methods:
        settings = [(driver, steps) for driver in drivers for steps in steps_list]
        passes = [PREPARE[driver](method, hidden, x, y, batch_size, steps, xla) for driver, steps in settings]
        times, cpu_times = [[] for _ in settings], [[] for _ in settings]
        for _ in range(repeats):
            for one_pass, measured, cpu_measured in zip(passes, times, cpu_times):
                start, cpu_start = time.perf_counter(), time.process_time()
                one_pass()
                measured.append(time.perf_counter() - start)
                cpu_measured.append(time.process_time() - cpu_start)
        base = {}
        for (driver, steps), measured, cpu_measured in zip(settings, times, cpu_times):
            seconds = min(measured)
            rate = steps_in_pass / seconds
            base.setdefault(driver, rate)
            # The process's CPU seconds (all its threads, tf.data's among them): what the pass costs, less
            # swayed than the wall clock by other processes on a shared machine.
            row = {"method": method, "driver": driver, "steps_per_call": steps, "xla": xla,
                   "seconds": seconds, "steps_per_second": rate, "ratio_to_first": rate / base[driver],
                   "cpu_seconds": min(cpu_measured), "steps_per_cpu_second": steps_in_pass / min(cpu_measured)}
            rows.append(row)
            print(f"{method:12s} {driver:4s} N={str(steps):6s} {rate:9.1f} steps/s  x{rate / base[driver]:5.2f}  "
                  f"{row['steps_per_cpu_second']:9.1f} steps per CPU second", flush=True)
    return rows


# The issue's two figures: a network small enough that the step is host-bound on a CPU (as the paper's network is
# on a GPU), N = 1 against N = 100 in both drivers; and the paper's network, N = 1 against the whole pass.
PROXY = dict(hidden=[32], batch_size=32, samples=32000, steps_per_call=100)
PAPER = dict(hidden=[256] * 5, batch_size=128)
PROXY_GOAL, PAPER_GOAL, FIT_GOAL = 5.0, 1.02, 1.5


def figures(methods, *, xla_settings=(False,), repeats=1, paper_methods=None, paper_samples=12800,
            paper_batch_size=PAPER["batch_size"], paper_hidden=PAPER["hidden"], proxy_samples=PROXY["samples"],
            proxy_batch_size=PROXY["batch_size"], proxy_hidden=PROXY["hidden"],
            proxy_steps_per_call=PROXY["steps_per_call"]) -> dict:
    """Both figures in one process (so their ratios compare like with like), every row printed as it is measured,
    then the summary lines (`summary`). Returns {"host_bound": rows, "paper_network": rows, "summary": lines}."""
    report = {"host_bound": [], "paper_network": []}
    print(f"host-bound proxy: 784-{'-'.join(map(str, proxy_hidden))}-10, batch {proxy_batch_size}, "
          f"{proxy_samples} samples, N = 1 and {proxy_steps_per_call}, custom loop and fit", flush=True)
    for xla in xla_settings:
        report["host_bound"] += run(methods, proxy_hidden, proxy_batch_size, proxy_samples,
                                    [1, proxy_steps_per_call], ["loop", "fit"], xla, repeats)
    print(f"paper network: 784-{'-'.join(map(str, paper_hidden))}-10, batch {paper_batch_size}, {paper_samples} "
          f"samples, N = 1 and the whole pass, custom loop", flush=True)
    for xla in xla_settings:
        report["paper_network"] += run(paper_methods or methods, paper_hidden, paper_batch_size, paper_samples,
                                       [1, "epoch"], ["loop"], xla, repeats)
    report["summary"] = summary(report["host_bound"], report["paper_network"])
    print("\n".join(report["summary"]), flush=True)
    return report


def summary(host_bound, paper_network) -> list[str]:
    """The figures against the issue's goals: the proxy's speed-up of N > 1 over N = 1 with XLA off (the CPU
    default), for each XLA setting measured; the custom loop's steps/s over fit's at the same N and XLA setting;
    and the paper network's time with N = epoch over N = 1."""
    def base(rows, row):  # N = 1, XLA off, same method and driver
        return next((r for r in rows if (r["method"], r["driver"], r["steps_per_call"], r["xla"]) ==
                     (row["method"], row["driver"], 1, False)), None)
    lines = [f"summary: host-bound proxy, steps/s with N > 1 over N = 1 with XLA off (goal >= {PROXY_GOAL:g}x)"]
    for row in host_bound:
        first = base(host_bound, row)
        if row["steps_per_call"] != 1 and first is not None:
            speedup = row["steps_per_second"] / first["steps_per_second"]
            lines.append(f"  {row['method']:12s} {row['driver']:4s} N={row['steps_per_call']} XLA "
                         f"{'on ' if row['xla'] else 'off'}  x{speedup:5.2f}  {'met' if speedup >= PROXY_GOAL else 'not met'}")
    lines.append(f"summary: host-bound proxy, the custom loop's steps/s over fit's at the same N and XLA setting "
                 f"(goal <= {FIT_GOAL:g})")
    for row in host_bound:
        loop_row = next((r for r in host_bound if r["driver"] == "loop" and
                         (r["method"], r["steps_per_call"], r["xla"]) ==
                         (row["method"], row["steps_per_call"], row["xla"])), None)
        if row["driver"] == "fit" and loop_row is not None:
            ratio = loop_row["steps_per_second"] / row["steps_per_second"]
            cpu_ratio = row["cpu_seconds"] / loop_row["cpu_seconds"]
            lines.append(f"  {row['method']:12s} N={row['steps_per_call']} XLA {'on ' if row['xla'] else 'off'}  "
                         f"{ratio:5.2f}  {'met' if ratio <= FIT_GOAL else 'not met'}  (CPU seconds: {cpu_ratio:.2f})")
    lines.append(f"summary: paper network, seconds with N = epoch over N = 1, same XLA setting "
                 f"(goal <= {PAPER_GOAL:g})")
    for row in paper_network:
        if row["steps_per_call"] != 1:
            ratio = 1 / row["ratio_to_first"]
            lines.append(f"  {row['method']:12s} XLA {'on ' if row['xla'] else 'off'}  {ratio:5.2f}  "
                         f"{'met' if ratio <= PAPER_GOAL else 'not met'}")
    return lines


def _define_flags():
    """This command's flags, defined only when it runs as the program (tp_keras.tools.bench imports this module and has
    flags of the same names)."""
    flags.DEFINE_list("methods", ["bp", "ddtp_linear", "dtpdrl"], "Methods to time.")
    flags.DEFINE_list("hidden", ["32"], "Hidden layer sizes (comma-separated).")
    flags.DEFINE_integer("batch_size", 32, "Minibatch size.", lower_bound=1)
    flags.DEFINE_integer("samples", 32000, "Samples per timed pass.", lower_bound=1)
    flags.DEFINE_list("steps_per_call", ["1", "100"], "Batches per compiled call to compare (numbers or 'epoch').")
    flags.DEFINE_list("drivers", ["loop", "fit"], "loop (the custom trainer), fit (Keras), keras_fit (fit through "
                      "Keras' own train function instead of TPModel's) and/or data (Keras' dataset of the arrays "
                      "alone, fetched as fit's train function fetches it, no step).")
    flags.DEFINE_enum("xla", "off", ["on", "off"], "XLA compilation of the steps.")
    flags.DEFINE_integer("threads", 1, "TensorFlow intra- and inter-op threads (0: TensorFlow's default).",
                         lower_bound=0)
    flags.DEFINE_integer("repeats", 3, "Timed passes per setting (the fastest is reported).", lower_bound=1)
    flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")


def _parse_hidden(values):
    """--hidden as layer sizes; ConfigError naming --hidden unless each is a whole number of at least 1."""
    try:
        hidden = [int(v) for v in values]
    except ValueError:
        hidden = []
    if not hidden or min(hidden) < 1:
        raise ConfigError("hidden", f"positive layer sizes expected, got {','.join(values) or 'none'}, "
                                    "e.g. --hidden=256,256")
    return hidden


@cli.guarded(interrupted_hint="nothing was written")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    unknown = [m for m in FLAGS.methods if m not in RULES]
    if unknown or not FLAGS.methods:
        what = f"unknown {', '.join(unknown)}" if unknown else "no method given"
        raise ConfigError("methods", f"{what}; choose from {', '.join(RULES)}")
    hidden = _parse_hidden(FLAGS.hidden)
    steps_list = [parse_steps_per_call(s) for s in FLAGS.steps_per_call]
    if set(FLAGS.drivers) - set(PREPARE):
        cli.fail(f"--drivers={','.join(FLAGS.drivers)}: choose among loop, fit, keras_fit, data")
    import tensorflow as tf
    start_tensorflow(FLAGS.threads)
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
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags_one_line)


# --- feedback-first rounds: written out against compiled loops ---------------------------------------------------
CIFAR10_ITERATIONS = (20, 30, 35, 55, 20)  # the authors' L-DRL feedback steps per hidden layer on CIFAR-10


def feedback_rounds_figures(batches, *, iterations=CIFAR10_ITERATIONS, xla_settings=(False, True), repeats=3):
    """L-DRL on the paper MLP with `iterations` feedback steps per hidden layer: for each XLA setting, BP's step,
    then L-DRL's with its rounds written out (`Trainer(unroll_feedback_rounds=True)`) and looped (the default).
    Each row: the first call's seconds (trace, compile, one step) and the median over `repeats` of one timed pass
    over `batches`, as seconds per batch, steps per second and the ratio to BP's seconds per batch of that setting.
    The three steps' passes alternate (BP, unrolled, looped, BP, ...), so that a load on a shared machine falls on
    all three alike."""
    import statistics

    from tp_keras.core.step import Trainer
    from tp_keras.run.factories import build_model, feedback_optimizer, forward_optimizer
    import numpy as np
    shape_only = Dataset(name="bench", train=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         val=None, test=Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32")),
                         num_outputs=10, task="classification", image_shape=(28, 28, 1))
    steps = (("bp", None), ("ldrl unrolled", True), ("ldrl looped", False))
    rows = []
    for xla in xla_settings:
        trainers, first_calls = [], []
        for _, unroll in steps:
            if unroll is None:
                trainer = paper_trainer("bp", xla=xla)
            else:
                config = Config.paper("ldrl", jit_compile=xla, feedback_iterations=tuple(iterations))
                model = build_model(config, shape_only)
                trainer = Trainer(model, forward_optimizer(config, model), feedback_optimizer(config, model),
                                  jit_compile=xla, unroll_feedback_rounds=unroll)
            start = time.perf_counter()
            float(trainer.train_step(*batches[0])["loss"])
            first_calls.append(time.perf_counter() - start)
            trainers.append(trainer)
        passes = [[] for _ in steps]
        for _ in range(repeats):
            for trainer, times in zip(trainers, passes):
                start = time.perf_counter()
                for x, y in batches:
                    out = trainer.train_step(x, y)
                float(out["loss"])  # waits for the last step
                times.append(time.perf_counter() - start)
        bp_seconds = statistics.median(passes[0]) / len(batches)
        for (label, _), first_call, times in zip(steps, first_calls, passes):
            per_batch = statistics.median(times) / len(batches)
            row = {"step": label, "xla": xla, "first_call_seconds": first_call, "seconds_per_batch": per_batch,
                   "steps_per_second": 1.0 / per_batch, "ratio_to_bp": per_batch / bp_seconds}
            rows.append(row)
            print(f"{label:<15}{'on' if xla else 'off':<5}{first_call:>12.2f}{per_batch * 1e3:>12.2f}"
                  f"{row['steps_per_second']:>10.2f}{row['ratio_to_bp']:>8.1f}", flush=True)
    return rows
