"""Many batches per compiled call: the custom loop's answer to Keras' `steps_per_execution`.

A pass over the training set normally costs one Python call into a compiled step per batch; on a GPU or TPU the
device then waits for the host between batches. `StepLoop` compiles a `tf.while_loop` that runs the SAME
compiled per-batch step (`step.Trainer.train_step` / `feedback_step`, reused, not re-traced) on `count`
consecutive full batches of the pass's device-resident, already-shuffled data, and returns each batch's metrics
and finiteness flags stacked on the device (shape (count, ...)). Noise, both optimizers, metrics and flags never
leave the device inside a call.

`plan_pass` cuts one pass into calls: angle-logging batches (batch index % log_interval == 0) run alone with the
angle step, the last, smaller batch runs alone with the per-batch step (its own shape), every other run of
consecutive full batches goes through the loop in pieces of at most `steps_per_call` batches. Every batch
therefore sees exactly the computation of the one-batch-per-call loop, in the same order: results are
bit-identical to steps_per_call=1 (tests/test_loop.py), and the host still checks stop requests, the progress
bar and kill points between calls.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

AUTO = "auto"
EPOCH = "epoch"
PROGRESS = "progress"  # one compiled call per progress-bar update: the CPU's default
PROGRESS_UPDATES = 20  # progress-bar updates per pass (run.passes.run_pass)


def progress_interval(steps_in_pass: int) -> int:
    """Batches between two progress-bar updates of a pass of `steps_in_pass` batches."""
    return max(1, steps_in_pass // PROGRESS_UPDATES)


@dataclasses.dataclass(frozen=True)
class DeviceDefaults:
    """What a run uses when the user left the choice open, and why (printed at start)."""
    device: str                 # "CPU", "GPU" or "TPU"
    jit_compile: bool
    steps_per_call: int | str


def device_defaults(device: str | None = None) -> DeviceDefaults:
    """The defaults of `device` (default: the first accelerator TensorFlow sees, else the CPU).

    CPU: XLA off (its fusions lost on the math-bound 5×256 network) and one call per progress update (a
    twentieth of the pass): measured within 2–7 % of the whole pass per call and 20–25 % faster than one batch per
    call, while Ctrl-C, kill points and the progress bar still act about 20 times a pass
    (docs/performance.md, "Many batches per compiled call on a CPU").
    GPU/TPU: XLA on and the whole pass per call, where the host would otherwise starve the device between batches:
    measured on one H200, DDTP-linear on the paper network runs 365 steps/s with XLA and one batch per call, 5615
    with XLA and the whole pass, 180 with neither (docs/performance.md, "One H200")."""
    if device is None:
        device = "GPU" if tf.config.list_physical_devices("GPU") else (
            "TPU" if tf.config.list_logical_devices("TPU") else "CPU")
    if device == "CPU":
        return DeviceDefaults("CPU", jit_compile=False, steps_per_call=PROGRESS)
    return DeviceDefaults(device, jit_compile=True, steps_per_call=EPOCH)


def resolve_jit(jit_compile: bool | None) -> bool:
    """config.jit_compile, None meaning the device's default."""
    return device_defaults().jit_compile if jit_compile is None else bool(jit_compile)


def resolve_steps(steps_per_call, steps_in_pass: int) -> int:
    """The batches per call for a pass of `steps_in_pass` batches ('auto': the device's default, 'epoch': the
    whole pass, 'progress': the batches between two progress updates)."""
    value = device_defaults().steps_per_call if steps_per_call == AUTO else steps_per_call
    if value == EPOCH:
        return max(1, steps_in_pass)
    if value == PROGRESS:
        return progress_interval(steps_in_pass)
    return max(1, int(value))


def plan_pass(steps: int, full_steps: int, steps_per_call: int, log_interval: int = 0):
    """The calls of one pass of `steps` batches of which the first `full_steps` have the full batch size.

    Yields (kind, first batch, count): kind "angle" (one batch with the angle step, when log_interval > 0 and
    the batch index is a multiple of it), "loop" (count ≥ 2 full batches in one compiled loop) or "step" (one
    batch with the ordinary per-batch step)."""
    i = 0
    while i < steps:
        if log_interval and i % log_interval == 0:
            yield "angle", i, 1
            i += 1
            continue
        end = min(i + steps_per_call, full_steps)
        if log_interval:
            end = min(end, (i // log_interval + 1) * log_interval)
        if end - i >= 2:
            yield "loop", i, end - i
            i = end
        else:
            yield "step", i, 1
            i += 1


class StepLoop:
    """`count` consecutive batches of `batch_size` rows, starting at row `start` of (x, y), through the compiled
    per-batch `step` (a tf.function taking (x, y) and returning a dict of tensors) in one compiled call.

    `StepLoop(step, batch_size)(x, y, start, count)` returns the step's outputs stacked over the batches. The
    loop is traced once per data shape; the step inside it keeps its own trace for a full batch."""

    def __init__(self, step, batch_size: int, *, jit_compile: bool = False):
        self.step = step
        self.batch_size = int(batch_size)
        self._loop = tf.function(self._run, jit_compile=jit_compile, reduce_retracing=True, autograph=False)

    def __call__(self, x, y, start: int, count: int) -> dict:
        return self._loop(x, y, tf.constant(start, tf.int32), tf.constant(count, tf.int32))

    def trace(self, x_spec: tf.TensorSpec, y_spec: tf.TensorSpec):
        """Traces the loop for a pass of this shape without running it (run.trace_ahead)."""
        scalar = tf.TensorSpec([], tf.int32)
        return self._loop.get_concrete_function(x_spec, y_spec, scalar, scalar)

    def _batch(self, data, first):
        # A slice of static size (XLA needs one; the step keeps its full-batch trace).
        rest = data.shape[1:].as_list()
        return tf.slice(data, [first] + [0] * len(rest), [self.batch_size] + rest)

    def _outputs(self, x, y):
        """The step's output structure (tensors with dtype and shape), from its full-batch trace."""
        spec = (tf.TensorSpec([self.batch_size] + x.shape[1:].as_list(), x.dtype),
                tf.TensorSpec([self.batch_size] + y.shape[1:].as_list(), y.dtype))
        return self.step.get_concrete_function(*spec).structured_outputs

    def _one(self, x, y, first):
        return self.step(self._batch(x, first), self._batch(y, first))

    def _run(self, x, y, start, count):
        outputs = self._outputs(x, y)
        arrays = tf.nest.map_structure(
            lambda t: tf.TensorArray(t.dtype, size=count, element_shape=t.shape), outputs)

        def body(i, arrays, _):
            out = self._one(x, y, start + i * self.batch_size)
            return i + 1, tf.nest.map_structure(lambda array, value: array.write(i, value), arrays, out), out

        last = tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype), outputs)
        # One iteration at a time: each batch reads the variables the previous one wrote.
        _, arrays, _ = tf.while_loop(lambda i, *_: i < count, body, (tf.constant(0), arrays, last),
                                     parallel_iterations=1)
        return tf.nest.map_structure(lambda array: array.stack(), arrays)


class Pass:
    """The batches of one pass over device-resident (x, y), in order (the last one may be smaller)."""

    def __init__(self, x, y, batch_size: int):
        self.x, self.y, self.batch_size = tf.convert_to_tensor(x), tf.convert_to_tensor(y), int(batch_size)
        rows = int(self.x.shape[0])
        self.steps, self.full_steps = -(-rows // self.batch_size), rows // self.batch_size

    def __iter__(self):
        for start in range(0, int(self.x.shape[0]), self.batch_size):
            yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]

    def calls(self, step, multi_step: "StepLoop | None", steps_per_call: int):
        """(outputs, many) of each call of the pass: many=True for a `multi_step` call (outputs stacked over its
        batches), False for one batch through `step`."""
        size = self.batch_size
        for kind, first, count in plan_pass(self.steps, self.full_steps, steps_per_call if multi_step else 1):
            if kind == "loop":
                yield multi_step(self.x, self.y, first * size, count), True
            else:
                yield step(self.x[first * size:(first + 1) * size], self.y[first * size:(first + 1) * size]), False


class DistributedStepLoop(StepLoop):
    """`StepLoop` for a `distribute.DistributedTrainer`: inside the compiled loop, every batch is one
    `strategy.run` in which each replica slices its shard of the global batch from the device-resident pass
    (`DistributedTrainer.replica_batch_step`), TPU style; `forward=False` runs the feedback-only step."""

    def __init__(self, trainer, forward: bool, batch_size: int):
        self.trainer, self.forward = trainer, forward
        # XLA, when asked for, compiles each replica's gradient computation (DistributedTrainer), not the loop.
        super().__init__(None, batch_size)

    def _outputs(self, x, y):
        # The output structure, from a trace of one batch that is never run.
        trace = tf.function(self._one, autograph=False).get_concrete_function(
            tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(y.shape, y.dtype), tf.TensorSpec([], tf.int32))
        return trace.structured_outputs

    def _one(self, x, y, first):
        return self.trainer.replica_batch_step(self.forward, x, y, first, self.batch_size)
