"""Where a compiled step's time goes: milliseconds per step by op type, from TensorFlow's profiler.

    python -m tp_keras.op_profile [--method=dtpdrl] [--step=feedback] [--precision=float32] [--threads=1]
                                  [--batch_size=128] [--calls=50] [--top=25] [--json=ops.json]

Builds the method's paper MNIST configuration (5×256 tanh, tp_keras.tools.loop_bench.paper_trainer), warms its
step up on random MNIST-shaped batches, times `--calls` calls without the profiler (the step's own ms per call),
then runs `--calls` more under `tf.profiler` and sums each op's executed time from the trace (the XSpace the
profiler writes): per op type (`_MklNativeFusedMatMul`, `Mul`, `StatelessRandomUniformV2`, ...) and per named op.
The op times leave out the executor's own scheduling between ops and include the profiler's overhead, so their
sum can fall either side of the unprofiled time.

`--step`: train (targets, feedback and forward updates of one batch), feedback (the feedback-only step of
pre-training and the extra feedback passes) or eval. Read the op types as shares of the step.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import tempfile
import time

from absl import app, flags

from tp_keras.core.rules import RULES
from tp_keras.run import cli
from tp_keras.run.config import ConfigError
from tp_keras.run.rundir import atomic_write
from tp_keras.tools import loop_bench
from tp_keras.tools.loop_bench import start_tensorflow

FLAGS = flags.FLAGS

STEPS = {"train": "train_step", "feedback": "feedback_step", "eval": "eval_step"}


def op_times(logdir: str, calls: int) -> tuple[dict, dict]:
    """(ms per call by op type, ms per call by "name:type") summed over every event of the profiler's trace in
    `logdir` whose name is an op's ("name:type"); the executor's wrapper events carry no type and are left out."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    by_type, by_name = collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as handle:
            space.ParseFromString(handle.read())
        for plane in space.planes:
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    op_name, _, op_type = name.rpartition(":")
                    if not op_name or not op_type or "::" in name or op_type.startswith(("__inference", " ")):
                        continue
                    ms = event.duration_ps / 1e9 / calls
                    by_type[op_type] += ms
                    by_name[name] += ms
    return dict(by_type), dict(by_name)


def profile(method: str, which: str, *, precision: str = "float32", batch_size: int = 128, calls: int = 50) -> dict:
    """The figures of one step: {"ms_per_call", "op_ms" (sum of the op times), "by_type", "by_name", "counts"}."""
    import tensorflow as tf
    trainer = loop_bench.paper_trainer(method, precision=precision)
    if which == "feedback" and not trainer.trains_feedback:
        raise ConfigError("step", f"{method} trains no feedback weights; choose --step=train or eval")
    step = getattr(trainer, STEPS[which])
    x, y = loop_bench.mnist_shaped_batches(batch_size, batch_size)[0]
    for _ in range(5):  # trace, first call, warm caches
        out = step(x, y)
    start = time.perf_counter()
    for _ in range(calls):
        out = step(x, y)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    ms_per_call = (time.perf_counter() - start) * 1e3 / calls
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(calls):
                out = step(x, y)
            tf.nest.map_structure(lambda t: t.numpy(), out)
        finally:
            tf.profiler.experimental.stop()
        by_type, by_name = op_times(logdir, calls)
    return {"method": method, "step": which, "precision": precision, "batch_size": batch_size, "calls": calls,
            "ms_per_call": ms_per_call, "op_ms": sum(by_type.values()), "by_type": by_type, "by_name": by_name}


def report(result: dict, top: int) -> str:
    lines = [f"{result['method']} {result['step']} step, {result['precision']}, batch {result['batch_size']}: "
             f"{result['ms_per_call']:.2f} ms per call unprofiled; the profiled ops add up to "
             f"{result['op_ms']:.2f} ms per call", "  ms/call  share  op type"]
    total = result["op_ms"] or 1.0
    for name, ms in sorted(result["by_type"].items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {ms:7.3f}  {100 * ms / total:4.1f}%  {name}")
    lines.append("  ms/call  op")
    for name, ms in sorted(result["by_name"].items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {ms:7.3f}  {name}")
    return "\n".join(lines)


def _define_flags():
    """This command's flags, defined only when it runs as the program (as tp_keras.tools.loop_bench's)."""
    flags.DEFINE_string("method", "dtpdrl", "The method whose step is profiled (its paper MNIST configuration).")
    flags.DEFINE_enum("step", "train", ["train", "feedback", "eval"], "Which compiled step.")
    flags.DEFINE_enum("precision", "float32", ["float32", "float64"], "The dtype of weights and activations.")
    flags.DEFINE_integer("threads", 1, "TensorFlow's intra- and inter-op threads (0: its default, all cores).",
                         lower_bound=0)
    flags.DEFINE_integer("batch_size", 128, "Rows per batch.", lower_bound=1)
    flags.DEFINE_integer("calls", 50, "Calls timed, then calls profiled.", lower_bound=1)
    flags.DEFINE_integer("top", 25, "How many op types and named ops to print.", lower_bound=1)
    flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")


@cli.guarded(interrupted_hint="nothing was written")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    if FLAGS.method not in RULES:
        raise ConfigError("method", f"unknown {FLAGS.method!r}; choose from {', '.join(RULES)}")
    start_tensorflow(FLAGS.threads)
    result = profile(FLAGS.method, FLAGS.step, precision=FLAGS.precision, batch_size=FLAGS.batch_size,
                     calls=FLAGS.calls)
    print(report(result, FLAGS.top), flush=True)
    if FLAGS.json:
        atomic_write(FLAGS.json, json.dumps(result, indent=1), kind="--json")
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags_one_line)
