"""Benchmark: training throughput and memory of every registered method on MNIST-shaped data, BP in the same run.

    python -m tp_keras.bench [--methods=bp,dtp,...] [--samples=55000] [--threads=1,2] [--xla=both]
                             [--precision=float32] [--repeats=2] [--angles] [--json=bench.json]
    python -m tp_keras.bench --loop [--methods=bp,ddtp_linear,dtpdrl] [--samples=12800] [--xla=both]
                             [--proxy_samples=32000] [--proxy_steps_per_call=100] [--json=loop.json]
    python -m tp_keras.bench --conv [--methods=bp,ldrl,...] [--samples=1280] [--xla=both] [--repeats=3]
                             [--threads=2] [--json=conv.json]
    python -m tp_keras.bench --population [--members=10] [--methods=bp,ddtp_linear,dtpdrl] [--samples=1280]
                             [--xla=off] [--repeats=3] [--threads=0] [--json=population.json]

For each method (its paper MNIST configuration: 5×256 tanh, batch 128) and each XLA setting, it times one
training pass (targets, feedback step, forward step on every batch) and one feedback-only pass over `samples`
random MNIST-shaped samples, after a warm-up that traces and compiles the steps. The batches are prepared on the
device beforehand, so the figures measure the step itself. With `--angles` it also times a training pass that
logs BP and GNT angles on every batch (GNT damping `--angle_damping`). BP is always measured, first.

Thread settings. `--threads` takes one value or a comma-separated list (default 1,2); 0 is TensorFlow's default
(all cores). TensorFlow fixes its thread pools when it initialises, so one process can measure one setting only:
with a single value the benchmark runs in this process; with several (e.g. `--threads=1,2`) this process starts
one child `python -m tp_keras.bench` per value, in turn (never concurrently), with the same flags, that value and
`--json` to a temporary file. The children's output is echoed prefixed with `[threads=N]`, then their rows are
merged into one table and one JSON file. A failing child is reported in one line naming its thread setting; the
other settings are still reported, and the exit status is 1.

Reported per method, thread setting and XLA setting (a JSON row; the table's column in brackets):

    method, threads, xla                  the setting (threads 0: TensorFlow's default)
    train_seconds        [train s]        seconds of one training pass, minimum over --repeats
    samples_per_second   [samples/s]      samples / train_seconds
    ratio_to_bp          [x BP]           train_seconds / BP's train_seconds at the same threads and XLA setting
    feedback_seconds     [fb-only s]      one feedback-only pass (only methods that train a feedback path)
    angle_seconds        [angles s]       one training pass logging angles on every batch (--angles only)
    angle_ratio          [x train]        angle_seconds / train_seconds (--angles only)
    peak_rss_mib         [peak MiB]       the process's peak resident set size (getrusage ru_maxrss, MiB) after
                                          this setting's timed passes: the high-water mark of the whole process
                                          so far, which never decreases, so it includes every earlier method and
                                          setting of the same process (and the prepared batches, TensorFlow, ...)
    rss_growth_mib       [+MiB]           how much that high-water mark rose while this setting ran (from just
                                          before its model was built to after its timed passes). 0 means the
                                          setting stayed under an earlier peak; it is a lower bound on the extra
                                          memory the setting needed, exact only when it set a new peak (BP, the
                                          first setting measured, usually does)
    gpu_peak_mib         [GPU MiB]        with a GPU: TensorFlow's peak allocation on GPU:0 during this setting
                                          (get_memory_info('GPU:0')['peak'] after reset_memory_stats before the
                                          model is built), MiB; null without a GPU or where unsupported

The JSON file: {"samples", "batch_size", "precision", "repeats", "xla", "methods", "threads" (the list of thread
settings), "angles", "angle_damping" (null without --angles), "tensorflow", "machine", "cpus", "gpus", "fields"
(the descriptions above), "results" (the rows, grouped by thread setting, then XLA setting, BP first in each
group), "errors" (one {"threads", "error"} per failed child)}.

`--feedback_rounds` (one thread setting, 1 by default; --samples=1280 is 10 batches): L-DRL on the paper MLP with
the authors' CIFAR-10 feedback steps K = (20, 30, 35, 55, 20), its rounds written out in the graph
(`Trainer(unroll_feedback_rounds=True)`) against one compiled loop per group of rounds (the default), BP in the same
run: per XLA setting and step, the first call's seconds (trace + compile + one step), seconds per batch (median of
--repeats timed passes), steps/s and the ratio to BP (tp_keras.tools.loop_bench.feedback_rounds_figures). The JSON
file: {"feedback_rounds": true, the settings, "iterations", "rows"}.

`--conv` (one thread setting, 2 by default; --samples=1280 by default, 10 batches; --repeats passes each, median):
the Fashion-MNIST conv comparison's five rules (bp, ldrl, dtpdrl, ddtp_linear, fw_dtp; launch/fashion_mnist_conv_*)
on its network, in one process, passes alternating: per XLA setting and rule, the first call's seconds, seconds and
process CPU seconds per batch, samples/s, × BP (wall and CPU), the feedback-only step's seconds per batch where the
rule trains feedback, and one epoch's cost against BP's with the feedback-only passes its flagfile runs per epoch
(tp_keras.tools.conv_bench.figures). The JSON file: {"conv": true, the settings, "fields", "rows"}.

`--population` (one thread setting, TensorFlow's default unless --threads names one; --samples per member, 1280
by default): K = --members models of one rule in one compiled program (tp_keras/core/population.py) against the
same K single models trained one after the other in this process, each its own Trainer and compiled loop, on the
paper network (784-5×256-10, --batch_size), each member its own seed and shuffling order; both built and warmed
first, then timed in --repeats alternating rounds: samples/s of each and the population's ratio (goal >= 1.5),
then steps/s against K = 1, 2, 5, 10 up to --members (tp_keras.tools.population_bench.run). The JSON file:
{"population": true, the settings, "against_singles", "against_k" (the rows)}.

`--loop`: many batches per compiled call (tp_keras/core/loop.py) against one, all in one process at one thread
setting (1 by default): the host-bound proxy (784-32-10, batch 32, --proxy_samples samples: the step's ops, not
its arithmetic, dominate, as for the paper network on a GPU) with N = 1 and N = --proxy_steps_per_call, in the
custom loop and in Keras fit (compile(steps_per_execution=N)); then the paper network (784-5×256-10, --batch_size,
--samples) with N = 1 and N = the whole pass in the custom loop; each at every --xla setting. Every row gives steps
per second and its ratio to N = 1 (tp_keras.tools.loop_bench.run); the closing summary sets the proxy's speed-up over
N = 1 with XLA off (the CPU default) against the goal of 5×, the custom loop's steps/s over fit's at the same N and
XLA setting against 1.5, and the paper network's time with N = epoch over N = 1 against 1.02. Both drivers read the
same device-resident tensors, and a method's settings are timed in alternating rounds. The JSON file: {"loop": true, the settings, "host_bound", "paper_network" (the rows), "summary"
(the summary lines), "errors": []}.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from tp_keras.core.rules import RULES
from tp_keras.run import cli, memory, rundir
from tp_keras.run.config import Config, ConfigError, check_integer
from tp_keras.run.rundir import atomic_write
from tp_keras.tools import conv_bench, loop_bench

try:
    import resource
except ImportError:  # not on Windows
    resource = None

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", None, "Methods to time (default: every registered method; BP is always added).")
flags.DEFINE_integer("samples", 55000, "Samples per pass (55000 = one MNIST training epoch).", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Minibatch size.", lower_bound=1)
flags.DEFINE_list("threads", ["1", "2"], "TensorFlow intra- and inter-op threads, one value or a comma-separated "
                  "list (0: TensorFlow's default, all cores); several values run one child process each.")
flags.DEFINE_enum("xla", "both", ["on", "off", "both"], "XLA settings to time.")
flags.DEFINE_enum("precision", "float32", ["float32", "float64"], "Precision.")
flags.DEFINE_integer("repeats", 2, "Timed passes per setting (the minimum is reported).", lower_bound=1)
flags.DEFINE_bool("angles", False, "Also time a training pass that logs BP and GNT angles on every batch "
                  "(--log_interval=1), and its ratio to the plain training pass.")
flags.DEFINE_float("angle_damping", 1.0, "GNT damping λ of the timed angle pass (λ = 0 takes the slower "
                   "pseudo-inverse path).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_bool("loop", False, "Instead of the per-method table, the figures of many batches per compiled call: "
                  "the host-bound proxy (784-32-10, batch 32, --proxy_samples) with N = 1 and "
                  "--proxy_steps_per_call in the custom loop and in fit, and the paper network (--samples, "
                  "--batch_size) with N = 1 and the whole pass (default methods bp,ddtp_linear,dtpdrl; one thread "
                  "setting).")
flags.DEFINE_bool("feedback_rounds", False, "Instead of the per-method table, L-DRL's feedback rounds written out "
                  "against compiled loops: the paper MLP with the authors' CIFAR-10 feedback steps "
                  "K = (20, 30, 35, 55, 20), first-call (trace + compile) seconds and steps/s of BP, L-DRL unrolled "
                  "and L-DRL looped at each --xla setting, over --samples (e.g. 1280), median of --repeats.")
flags.DEFINE_bool("conv", False, "Instead of the per-method table, the conv-net cost figure: bp, ldrl, dtpdrl, "
                  "ddtp_linear and fw_dtp on the Fashion-MNIST conv comparison's network (32,32,64,64 channels), "
                  "first-call seconds, seconds and CPU seconds per batch, samples/s, x BP, feedback-only seconds per "
                  "batch, at each --xla setting, median of --repeats alternating passes over --samples (default "
                  "1280); one thread setting (default 2).")
flags.DEFINE_bool("population", False, "Instead of the per-method table, a population of --members models of one "
                  "rule in one compiled program against the same models trained one after the other (default "
                  "methods bp,ddtp_linear,dtpdrl; paper network; --samples per member, default 1280; one thread "
                  "setting, default TensorFlow's).")
flags.DEFINE_integer("members", 10, "--population: K, the population's size.", lower_bound=1)
flags.DEFINE_integer("proxy_samples", 32000, "--loop: samples per pass of the host-bound proxy.", lower_bound=1)
flags.DEFINE_integer("proxy_steps_per_call", 100, "--loop: the proxy's batches per compiled call compared with 1.",
                     lower_bound=2)

# The flags a child process gets unchanged (it gets its own --threads and --json).
_FORWARDED_FLAGS = ("methods", "samples", "batch_size", "xla", "precision", "repeats", "angles", "angle_damping")

FIELDS = {
    "threads": "TensorFlow intra- and inter-op threads (0: TensorFlow's default)",
    "xla": "XLA compilation of the steps (jit_compile)",
    "train_seconds": "seconds of one training pass, minimum over repeats",
    "samples_per_second": "samples / train_seconds",
    "ratio_to_bp": "train_seconds / BP's train_seconds at the same threads and XLA setting",
    "feedback_seconds": "seconds of one feedback-only pass (methods that train a feedback path)",
    "angle_seconds": "seconds of one training pass logging BP and GNT angles on every batch (--angles)",
    "angle_ratio": "angle_seconds / train_seconds (--angles)",
    "peak_rss_mib": "process peak resident set size (ru_maxrss) after this setting's timed passes, MiB: the "
                    "high-water mark of the process so far, including every earlier setting of the process",
    "rss_growth_mib": "rise of that high-water mark while this setting ran (model build to end of its timed "
                      "passes), MiB; 0 if it stayed under an earlier peak, so a lower bound on its extra memory",
    "gpu_peak_mib": "TensorFlow's peak allocation on GPU:0 during this setting (reset before the model is "
                    "built), MiB; null without a GPU",
}


def _parse_threads(values):
    try:
        threads = [int(v) for v in values]
    except ValueError:
        raise ConfigError("threads", f"integers expected, got {','.join(values)}, e.g. --threads=1,2") from None
    if not threads or any(not 0 <= t <= 4096 for t in threads):
        raise ConfigError("threads", f"integers between 0 and 4096 expected, got {','.join(values)}, e.g. "
                                     "--threads=1,2")
    return list(dict.fromkeys(threads))  # drop repeats, keep the order


def _check_settings(methods):
    """One-line refusals, before any timing: sizes out of range, a --json that could not be written, and data
    or models that would not fit in memory."""
    check_integer("samples", FLAGS.samples, 1, example=55000)
    check_integer("batch_size", FLAGS.batch_size, 1, example=128)
    check_integer("repeats", FLAGS.repeats, 1, example=2)
    if FLAGS.loop:
        check_integer("proxy_samples", FLAGS.proxy_samples, 1, example=32000)
        for name in ("precision", "angles"):
            if FLAGS[name].present:
                raise ConfigError(name, f"--loop times float32 training passes only; drop --{name}")
    if FLAGS.conv:
        for name in ("precision", "angles", "loop", "feedback_rounds"):
            if FLAGS[name].present:
                raise ConfigError(name, f"--conv times the float32 conv figure alone; drop --{name}")
        for method in methods:
            reason = conv_bench.refusal(method)
            if reason:
                raise ConfigError("methods", f"{method} has no conv version ({reason}); choose from "
                                             f"{', '.join(conv_bench.CONV_METHODS)} or another conv rule")
    if FLAGS.json:
        rundir.check_writable(FLAGS.json, "--json")
    if FLAGS.conv:
        return
    for method in methods:
        config = Config.paper(method, precision=FLAGS.precision, batch_size=FLAGS.batch_size,
                              log_angles=FLAGS.angles)
        memory.check_fits(config, "samples", input_size=784, image_shape=(28, 28, 1), num_outputs=10,
                          num_train=FLAGS.samples, num_eval=0)


def _peak_rss_mib():
    """The process's peak resident set size so far in MiB (None where getrusage is unavailable)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _gpu_reset():
    """Resets GPU:0's peak-memory counter; False when there is no GPU or it cannot be reset."""
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        return False
    try:
        tf.config.experimental.reset_memory_stats("GPU:0")
        return True
    except Exception:  # unsupported device or allocator: report no GPU figure rather than fail
        return False


def _gpu_peak_mib():
    import tensorflow as tf
    try:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    except Exception:
        return None


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
    gpu = _gpu_reset()
    rss_before = _peak_rss_mib()
    trainer = loop_bench.paper_trainer(method, precision=precision, xla=xla, angles=angles,
                                       angle_damping=angle_damping)
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
    peak = _peak_rss_mib()
    result["peak_rss_mib"] = peak
    result["rss_growth_mib"] = None if peak is None else peak - rss_before
    result["gpu_peak_mib"] = _gpu_peak_mib() if gpu else None
    return result


def _header(angles, gpu):
    header = f"{'method':<16}{'threads':>8} {'xla':<4}{'train s':>9}{'samples/s':>11}{'x BP':>7}{'fb-only s':>11}"
    if angles:
        header += f"{'angles s':>10}{'x train':>9}"
    header += f"{'peak MiB':>10}{'+MiB':>8}"
    if gpu:
        header += f"{'GPU MiB':>9}"
    return header


def _format_row(row, angles, gpu):
    def num(key, width, fmt):
        value = row.get(key)
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"
    line = (f"{row['method']:<16}{row['threads'] or 'default':>8} {'on' if row['xla'] else 'off':<4}"
            f"{row['train_seconds']:>9.2f}{row['samples_per_second']:>11.0f}{row['ratio_to_bp']:>7.2f}"
            f"{num('feedback_seconds', 11, '.2f')}")
    if angles:
        line += num("angle_seconds", 10, ".2f") + num("angle_ratio", 9, ".2f")
    line += num("peak_rss_mib", 10, ".0f") + num("rss_growth_mib", 8, ".0f")
    if gpu:
        line += num("gpu_peak_mib", 9, ".0f")
    return line


def _report(methods, threads, tensorflow, machine, cpus, gpus, results, errors):
    return {"samples": FLAGS.samples, "batch_size": FLAGS.batch_size, "precision": FLAGS.precision,
            "repeats": FLAGS.repeats, "xla": FLAGS.xla, "methods": methods, "threads": threads,
            "angles": FLAGS.angles, "angle_damping": FLAGS.angle_damping if FLAGS.angles else None,
            "tensorflow": tensorflow, "machine": machine, "cpus": cpus, "gpus": gpus, "fields": FIELDS,
            "results": results, "errors": errors}


def _xla_settings() -> list[bool]:
    """The XLA settings --xla asks for, in the order they are measured."""
    return {"on": [True], "off": [False], "both": [False, True]}[FLAGS.xla]


def run_in_process(methods, threads):
    """Measures every method at one thread setting in this process; prints the table as it goes."""
    loop_bench.start_tensorflow(threads)  # the first import of TensorFlow, which must come through it to be quiet
    import tensorflow as tf
    gpus = len(tf.config.list_physical_devices("GPU"))
    xla_settings = _xla_settings()
    batches = loop_bench.mnist_shaped_batches(FLAGS.samples, FLAGS.batch_size)
    print(f"tp_keras.bench: {FLAGS.samples} samples, batch {FLAGS.batch_size}, 5x256 tanh, {FLAGS.precision}, "
          f"threads={threads or 'default'}, TF {tf.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, GPUs: {gpus}")
    header = _header(FLAGS.angles, gpus)
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for xla in xla_settings:
        bp_time = None
        for method in methods:
            r = bench_method(method, batches, xla=xla, precision=FLAGS.precision, repeats=FLAGS.repeats,
                             angles=FLAGS.angles, angle_damping=FLAGS.angle_damping)
            if method == "bp":
                bp_time = r["train_seconds"]
            row = {"method": method, "threads": threads, "xla": xla, **r,
                   "samples_per_second": FLAGS.samples / r["train_seconds"],
                   "ratio_to_bp": r["train_seconds"] / bp_time}
            rows.append(row)
            print(_format_row(row, FLAGS.angles, gpus), flush=True)
    return _report(methods, [threads], tf.__version__, platform.machine(), os.cpu_count(), gpus, rows, [])


LOOP_METHODS = ["bp", "ddtp_linear", "dtpdrl"]


def run_loop(methods, threads):
    """--loop: tp_keras.tools.loop_bench.figures at one thread setting, in this process (ratios within one run)."""
    loop_bench.start_tensorflow(threads)  # the first import of TensorFlow, which must come through it to be quiet
    import tensorflow as tf
    gpus = len(tf.config.list_physical_devices("GPU"))
    xla_settings = _xla_settings()
    print(f"tp_keras.bench --loop: float32, threads={threads or 'default'}, repeats {FLAGS.repeats}, "
          f"TF {tf.__version__}, {platform.machine()}, {os.cpu_count()} cpus, GPUs: {gpus}", flush=True)
    figures = loop_bench.figures(methods, xla_settings=xla_settings, repeats=FLAGS.repeats,
                                 paper_samples=FLAGS.samples, paper_batch_size=FLAGS.batch_size,
                                 proxy_samples=FLAGS.proxy_samples, proxy_steps_per_call=FLAGS.proxy_steps_per_call)
    return {"loop": True, "samples": FLAGS.samples, "batch_size": FLAGS.batch_size,
            "proxy_samples": FLAGS.proxy_samples, "proxy_steps_per_call": FLAGS.proxy_steps_per_call,
            "repeats": FLAGS.repeats, "xla": FLAGS.xla, "methods": methods, "threads": [threads],
            "tensorflow": tf.__version__, "machine": platform.machine(), "cpus": os.cpu_count(), "gpus": gpus,
            **figures, "errors": []}


def run_feedback_rounds(threads):
    """--feedback_rounds: tp_keras.tools.loop_bench.feedback_rounds_figures at one thread setting, in this
    process (ratios within one run)."""
    loop_bench.start_tensorflow(threads)  # the first import of TensorFlow, which must come through it to be quiet
    import tensorflow as tf
    batches = loop_bench.mnist_shaped_batches(FLAGS.samples, FLAGS.batch_size)
    iterations = loop_bench.CIFAR10_ITERATIONS
    print(f"tp_keras.bench --feedback_rounds: 784-5x256-10, batch {FLAGS.batch_size}, {len(batches)} batches, "
          f"L-DRL K = {iterations}, float32, threads={threads or 'default'}, median of {FLAGS.repeats}, "
          f"TF {tf.__version__}, {platform.machine()}, {os.cpu_count()} cpus", flush=True)
    print(f"{'step':<15}{'xla':<5}{'first call s':>12}{'ms/batch':>12}{'steps/s':>10}{'x BP':>8}", flush=True)
    rows = loop_bench.feedback_rounds_figures(batches, iterations=iterations, xla_settings=_xla_settings(),
                                              repeats=FLAGS.repeats)
    return {"feedback_rounds": True, "samples": FLAGS.samples, "batch_size": FLAGS.batch_size,
            "repeats": FLAGS.repeats, "xla": FLAGS.xla, "iterations": list(iterations), "threads": [threads],
            "tensorflow": tf.__version__, "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows,
            "errors": []}


CONV_SAMPLES = 1280
CONV_THREADS = 2
POPULATION_SAMPLES = 1280  # 10 batches of 128 per member
PAPER_HIDDEN = [256] * 5


def run_conv(methods, threads):
    """--conv: tp_keras.tools.conv_bench.figures at one thread setting, in this process (ratios within one run)."""
    loop_bench.start_tensorflow(threads)  # the first import of TensorFlow, which must come through it to be quiet
    import tensorflow as tf
    samples = FLAGS.samples if FLAGS["samples"].present else CONV_SAMPLES
    batches = conv_bench.fashion_mnist_shaped_batches(samples, FLAGS.batch_size)
    print(f"tp_keras.bench --conv: 28x28x1, conv {','.join(map(str, conv_bench.CHANNELS))} (max-pool after 2 and 4) "
          f"-> 10, batch {FLAGS.batch_size}, {len(batches)} batches, float32, threads={threads or 'default'}, median "
          f"of {FLAGS.repeats}, TF {tf.__version__}, {platform.machine()}, {os.cpu_count()} cpus, GPUs: "
          f"{len(tf.config.list_physical_devices('GPU'))}", flush=True)
    rows = conv_bench.figures(batches, methods=methods, xla_settings=_xla_settings(), repeats=FLAGS.repeats,
                              report=lambda line: print(line, flush=True))
    return {"conv": True, "samples": len(batches) * FLAGS.batch_size, "batch_size": FLAGS.batch_size,
            "repeats": FLAGS.repeats, "xla": FLAGS.xla, "methods": methods,
            "threads": [threads], "tensorflow": tf.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "fields": conv_bench.FIELDS, "rows": rows, "errors": []}


def run_population(methods, threads):
    """--population: tp_keras.tools.population_bench.run at one thread setting, in this process (ratios within one
    run)."""
    loop_bench.start_tensorflow(threads)  # the first import of TensorFlow, which must come through it to be quiet
    import tensorflow as tf
    from tp_keras.tools import population_bench
    samples = FLAGS.samples if FLAGS["samples"].present else POPULATION_SAMPLES
    print(f"tp_keras.bench --population: TF {tf.__version__}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"threads={threads or 'default'}, median of {FLAGS.repeats} alternating rounds", flush=True)
    report = population_bench.run(methods, PAPER_HIDDEN, FLAGS.members, samples, FLAGS.batch_size,
                                  _xla_settings(), [k for k in (1, 2, 5, 10) if k <= FLAGS.members], FLAGS.repeats)
    return {"population": True, "repeats": FLAGS.repeats, "xla": FLAGS.xla, "methods": methods,
            "threads": [threads], "tensorflow": tf.__version__, "cpus": os.cpu_count(), **report, "errors": []}


def _one_thread_setting(threads_list, default, flag):
    """--conv, --loop, --population measure one thread setting per run: `default` unless --threads names one."""
    if not FLAGS["threads"].present:
        return default
    if len(threads_list) > 1:
        raise ConfigError("threads", f"--{flag} measures one thread setting per run, got {','.join(FLAGS.threads)}; "
                                     f"e.g. --threads={default or 1}")
    return threads_list[0]


def _child_error(stderr_text):
    """The one line of a child's stderr that says what went wrong (a traceback's last line, absl's error)."""
    lines = [line.strip() for line in stderr_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^([\w.]*(Error|Exception|Interrupt)\b|FATAL|Fatal)", line):
            return line
    return lines[-1] if lines else "no error output"


def run_children(methods, threads_list):
    """Runs one child process per thread setting, in turn; echoes their output and merges their JSON reports."""
    results, errors, info = [], [], None
    print(f"tp_keras.bench: thread settings {', '.join(str(t or 'default') for t in threads_list)}, "
          f"one child process each", flush=True)
    with tempfile.TemporaryDirectory(prefix="tp_keras_bench_") as tmp:
        for threads in threads_list:
            out = os.path.join(tmp, f"threads_{threads}.json")
            args = [FLAGS[name].serialize() for name in _FORWARDED_FLAGS]
            cmd = [sys.executable, "-m", "tp_keras.bench", *[a for a in args if a], f"--threads={threads}",
                   f"--json={out}"]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            stderr_path = os.path.join(tmp, f"threads_{threads}.stderr")
            with open(stderr_path, "w") as stderr:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
                for line in proc.stdout:
                    print(f"[threads={threads}] {line}", end="", flush=True)
                returncode = proc.wait()
            if returncode == 0 and os.path.exists(out):
                with open(out) as f:
                    report = json.load(f)
                results += report["results"]
                info = info or report
            else:
                with open(stderr_path) as f:
                    error = f"exit status {returncode}: {_child_error(f.read())}"
                errors.append({"threads": threads, "error": error})
                print(f"tp_keras.bench: threads={threads or 'default'} failed ({error})", flush=True)
    info = info or {}
    report = _report(methods, threads_list, info.get("tensorflow"), info.get("machine", platform.machine()),
                     info.get("cpus", os.cpu_count()), info.get("gpus"), results, errors)
    print()
    print(f"tp_keras.bench, all thread settings: {FLAGS.samples} samples, batch {FLAGS.batch_size}, 5x256 tanh, "
          f"{FLAGS.precision}, TF {report['tensorflow']}, {report['machine']}, {report['cpus']} cpus, "
          f"GPUs: {report['gpus']}")
    header = _header(FLAGS.angles, report["gpus"])
    print(header)
    print("-" * len(header))
    for row in results:
        print(_format_row(row, FLAGS.angles, report["gpus"]))
    for error in errors:
        print(f"threads={error['threads'] or 'default'}: failed ({error['error']})")
    return report


@cli.guarded(interrupted_hint="nothing was written")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    threads_list = _parse_threads(FLAGS.threads)
    methods = FLAGS.methods or (LOOP_METHODS if FLAGS.loop or FLAGS.population else list(conv_bench.CONV_METHODS) if FLAGS.conv
                                else list(RULES))
    unknown = [m for m in methods if m not in RULES]
    if unknown:
        raise ConfigError("methods", f"unknown {', '.join(unknown)}; choose from {', '.join(RULES)}")
    methods = ["bp"] + [m for m in methods if m != "bp"]
    _check_settings(methods)
    if FLAGS.population:
        report = run_population(methods, _one_thread_setting(threads_list, 0, "population"))
    elif FLAGS.conv:
        report = run_conv(methods, _one_thread_setting(threads_list, CONV_THREADS, "conv"))
    elif FLAGS.feedback_rounds:
        report = run_feedback_rounds(_one_thread_setting(threads_list, 1, "feedback_rounds"))
    elif FLAGS.loop:
        report = run_loop(methods, _one_thread_setting(threads_list, 1, "loop"))
    elif len(threads_list) == 1:
        report = run_in_process(methods, threads_list[0])
    else:
        report = run_children(methods, threads_list)
    if FLAGS.json:
        atomic_write(FLAGS.json, json.dumps(report, indent=2), kind="--json")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags_one_line)
