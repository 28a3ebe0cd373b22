"""tf.distribute for TP training: strategy selection and a trainer whose replicas sum to the one-device step.

Strategy selection (`make_strategy`)
    `--strategy` = auto | one_device | mirrored | multi_worker | tpu. `plan_strategy` is the pure decision (device
    lists and "is there a TPU" in, a `StrategyPlan` out), so it is unit-tested with fake device lists;
    `make_strategy` gathers the facts (or takes injected ones) and builds the strategy. `auto` picks a TPU when
    one answers, else `MirroredStrategy` over every GPU when there are several, else `OneDeviceStrategy` on the
    GPU or the CPU. The TPU probe of `auto` is attempted only when the machine shows a sign of a TPU (TPU
    environment variables, /dev/accel*, /dev/vfio/N), and any failure falls back to GPU/CPU, so it never waits on
    a network or a missing driver. `mirrored` without GPUs mirrors over every logical CPU device: this is how the
    tests split one CPU into two replicas.

`DistributedTrainer`: the same interface as `step.Trainer` (`train_step`, `feedback_step`, `eval_step`,
`model`, `trains_feedback`), so `experiment.train_and_evaluate(config, workdir, trainer=...)` runs it.

* Global batch in, shards out. Each step takes the GLOBAL batch and hands replica r the rows
  [⌊rB/R⌋, ⌊(r+1)B/R⌋) through `strategy.experimental_distribute_values_from_function`: a fixed order, so the
  concatenation of the shards in replica order is the global batch, and a batch that does not divide evenly
  (the last batch of a pass) is still split exactly. (`experimental_distribute_dataset` would re-batch a
  tf.data pipeline; the launcher's loop already holds each shuffled global batch as a tensor, and the explicit
  slicing also gives each replica its row offset, which the noise needs.)
* Loss scaling. Every replica calls `step.compute_updates(model, shard, batch_size=B)` with the GLOBAL B: the
  local losses (1/B)Σ‖h − ĥ‖², the output error e_L = (softmax − onehot)/B and the element-mean feedback losses
  all divide by the global count, so a replica's gradients are its shard's share of the one-device gradient
  and their SUM over replicas is the one-device gradient.
* Summing and applying. Keras 3's TensorFlow optimizer, called in a replica context, itself all-reduces the
  gradients with SUM (`TFOptimizer._all_reduce_sum_gradients`) and applies them once per variable in a
  merge call (`strategy.extended.update`); Keras 3 has no `experimental_aggregate_gradients` switch. So the
  replica function calls `step.apply_updates` (feedback step, then forward step, both from gradients computed
  before either write) and must not all-reduce by itself, which would scale the update by R.
* Optimizers are created and built inside `strategy.scope()` by the factories given here (a Keras optimizer
  records the strategy current at its construction and its slots must be mirrored like the variables they
  follow), each explicitly on its own variable list (`model.forward_variables`, `model.feedback_variables`).
* Metrics. Each replica returns sums: loss·n_r and accuracy·n_r (n_r its shard's rows) and its share of the
  feedback losses (already divided by the global count); they are SUM-reduced and the first two divided by B,
  so `loss`, `accuracy` and `rec_loss` equal the one-device values. `eval_step` SUM-reduces
  `step.eval_sums`.
* Noise. The DRL/reconstruction noise must be the noise of the GLOBAL batch, else replicas drawing from the
  same seed generator would all draw the rows of shard 0. Every replica advances its copy of the model's seed
  generator once per step (so all replicas use the one-device seed), and with `step.compute_updates(...,
  noise_rows=(offset, B))` draws the B-row noise of the global batch and keeps its own rows: exactly the noise
  a single device draws.
* XLA. `jit_compile=True` compiles each replica's gradient computation (`compute_updates` + metric sums, the
  whole cost of a TP step) as its own XLA function per replica; the all-reduce and the optimizer update stay in
  the graph around it. Measured on this CPU (TF 2.21): compiling the function that contains `strategy.run`, or
  the whole replica function with the optimizer's merge call, fails under `MirroredStrategy` ("Trying to access
  resource .../replica_1 located in device CPU:1 from device CPU:0"); one XLA function shared by the replicas
  runs but its trace is reused across replicas (their noise came out different from per-replica functions).
  `MultiWorkerMirroredStrategy` with 2 CPU workers runs with and without XLA. XLA's Philox stream differs from
  TensorFlow's kernels, so an XLA run draws other noise than a non-XLA run (as on one device). Under a TPU
  strategy everything is compiled by XLA anyway and the flag changes nothing.
* `MultiWorkerMirroredStrategy` must be created before TensorFlow runs any op (else TensorFlow raises
  "Collective ops must be configured at program startup", turned into a DistributeError here); `make_strategy`
  therefore lists no devices for multi_worker.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import warnings
from typing import Callable, Sequence

import tensorflow as tf

from tp_keras.core import loop, step
from tp_keras.run import factories
from tp_keras.run.config import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


class DistributeError(ConfigError):
    """An impossible strategy setting. `str(err)` is one line naming the flag and the fix."""


# --------------------------------------------------------------------------------------------------------------
# Strategy selection
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StrategyPlan:
    """What `make_strategy` builds: kind in one_device | mirrored | multi_worker | tpu, and the devices."""
    kind: str
    devices: tuple[str, ...] = ()


def plan_strategy(name: str, *, gpus: Sequence[str] | Callable[[], Sequence[str]],
                  cpus: Sequence[str] | Callable[[], Sequence[str]], tpu_found: bool | Callable[[], bool] = False,
                  tpu: str | None = None) -> StrategyPlan:
    """The selection logic, free of TensorFlow: device names in, a plan out.

    Args:
      name: the `--strategy` value.
      gpus, cpus: logical device names ('/device:GPU:0', ...), or callables that list them, asked only when the
        plan needs them (listing devices initialises TensorFlow's runtime, which must not happen before a
        multi-worker strategy is created).
      tpu_found: whether a TPU answered, or a callable asked only when `auto` needs to know.
      tpu: the `--tpu` address; only meaningful for tpu and auto.
    """
    if name not in STRATEGIES:
        raise DistributeError("strategy", f"{name!r} is not a strategy; choose one of {', '.join(STRATEGIES)}")
    if tpu is not None and name not in ("tpu", "auto"):
        raise DistributeError("tpu", f"a TPU address is only used with --strategy=tpu (or auto), not "
                                     f"--strategy={name}; drop --tpu or use --strategy=tpu")
    if name == "tpu":
        return StrategyPlan("tpu")
    if name == "multi_worker":
        return StrategyPlan("multi_worker")
    if name == "auto" and (tpu_found() if callable(tpu_found) else tpu_found):
        return StrategyPlan("tpu")
    gpus, cpus = (tuple(d() if callable(d) else d) for d in (gpus, cpus))
    if not cpus and not gpus:
        raise DistributeError("strategy", "TensorFlow lists no CPU or GPU device; check the TensorFlow install")
    if name == "auto":
        if len(gpus) > 1:
            return StrategyPlan("mirrored", gpus)
        return StrategyPlan("one_device", (gpus or cpus)[:1])
    if name == "one_device":
        return StrategyPlan("one_device", (gpus or cpus)[:1])
    # mirrored: every GPU, or without GPUs every logical CPU device (one CPU split for tests is two replicas).
    return StrategyPlan("mirrored", gpus or cpus)


def tpu_hint(environ=None, exists=None) -> bool:
    """Whether this machine shows a sign of a TPU (so that `auto` may probe one without waiting on nothing)."""
    environ = os.environ if environ is None else environ
    if any(environ.get(k) for k in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")):
        return True
    pattern_match = exists if exists is not None else (lambda pattern: bool(glob.glob(pattern)))
    return pattern_match("/dev/accel[0-9]*") or pattern_match("/dev/vfio/[0-9]*")


def connect_tpu(tpu: str | None = None, *, resolver_factory=None, connect=None, initialize=None, strategy_cls=None):
    """TPUClusterResolver(tpu=tpu or "local") → connect to the cluster → initialise the TPU system →
    TPUStrategy: the TPU VM / Colab recipe. Every piece can be replaced (tests drive it with fakes)."""
    resolver = (resolver_factory or tf.distribute.cluster_resolver.TPUClusterResolver)(tpu=tpu or "local")
    (connect or tf.config.experimental_connect_to_cluster)(resolver)
    (initialize or tf.tpu.experimental.initialize_tpu_system)(resolver)
    return (strategy_cls or tf.distribute.TPUStrategy)(resolver)


_TPU_ERRORS = (ValueError, RuntimeError, tf.errors.OpError)


def make_strategy(name: str, *, tpu: str | None = None, gpus: Sequence[str] | None = None,
                  cpus: Sequence[str] | None = None, tpu_connect: Callable | None = None,
                  tpu_probe: Callable[[], bool] | None = None) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` for `--strategy=name`.

    Args:
      name: auto | one_device | mirrored | multi_worker | tpu.
      tpu: TPU address for TPUClusterResolver (default "local": a TPU VM, as on Colab).
      gpus, cpus: logical device names (default: what TensorFlow lists). Injected by tests.
      tpu_connect: callable(tpu) → TPU strategy (default: `connect_tpu`). Injected by tests to stand in for a
        TPU.
      tpu_probe: callable() → whether `auto` should try the TPU first (default: `tpu_hint()`).

    Raises DistributeError (a ValueError) with one line naming the flag and the fix.
    """
    if gpus is None:
        gpus = lambda: [d.name for d in tf.config.list_logical_devices("GPU")]  # noqa: E731
    if cpus is None:
        cpus = lambda: [d.name for d in tf.config.list_logical_devices("CPU")]  # noqa: E731
    connect = tpu_connect or connect_tpu
    probe = tpu_probe or tpu_hint
    tpu_strategy = []

    def auto_tpu() -> bool:
        if not probe():
            return False
        try:
            tpu_strategy.append(connect(tpu))
        except _TPU_ERRORS as err:
            warnings.warn(f"--strategy=auto: no usable TPU ({type(err).__name__}: {str(err).splitlines()[0]}); "
                          f"using GPU/CPU")
            return False
        return True

    plan = plan_strategy(name, gpus=gpus, cpus=cpus, tpu_found=auto_tpu, tpu=tpu)
    if plan.kind == "tpu":
        if tpu_strategy:
            return tpu_strategy[0]
        try:
            return connect(tpu)
        except _TPU_ERRORS as err:
            raise DistributeError("strategy", f"tpu: no TPU at {tpu or 'local'!r} ({type(err).__name__}: "
                                              f"{str(err).splitlines()[0][:200]}); run on a TPU runtime, pass its "
                                              f"address with --tpu, or use --strategy=auto") from None
    if plan.kind == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as err:  # "Collective ops must be configured at program startup"
            raise DistributeError("strategy", f"multi_worker: {err}; create the strategy before TensorFlow runs "
                                              f"anything (before loading data or building a model)") from None
    if plan.kind == "mirrored":
        return tf.distribute.MirroredStrategy(list(plan.devices))
    return tf.distribute.OneDeviceStrategy(plan.devices[0])


def is_tpu_strategy(strategy) -> bool:
    """Whether `strategy` is a TPU strategy (TPUStrategy, TPUStrategyV2, ...; by class name, so fakes count)."""
    return any(cls.__name__.startswith("TPUStrategy") for cls in type(strategy).__mro__)


def check_precision(strategy, precision: str) -> None:
    """Refuses float64 on a TPU (TPUs have no float64 arithmetic)."""
    if precision == "float64" and is_tpu_strategy(strategy):
        raise DistributeError("precision", "float64 is not supported on TPU; use float32")


# --------------------------------------------------------------------------------------------------------------
# The distributed trainer
# --------------------------------------------------------------------------------------------------------------

def shard_bounds(batch_size: int, replicas: int) -> list[tuple[int, int]]:
    """Rows [start, end) of each replica's shard: contiguous, in replica order, sizes differing by at most 1."""
    return [(r * batch_size // replicas, (r + 1) * batch_size // replicas) for r in range(replicas)]


class DistributedTrainer:
    """`step.Trainer` under a `tf.distribute.Strategy`: global batches in, one-device updates out.

    Args:
      model_fn: () → TPModel, called inside `strategy.scope()`.
      forward_optimizer_fn: () → Keras optimizer for the forward weights, called inside the scope.
      feedback_optimizer_fn: () → optimizer for the feedback weights (None when the method trains none).
      strategy: a `tf.distribute.Strategy` (default: the current one).
      jit_compile: compile each replica's gradient computation with XLA (see the module docstring).

    `train_step(x, y)`, `feedback_step(x, y)` and `eval_step(x, y)` take a global batch (NumPy or tensors) and
    return the same dicts as `step.Trainer`'s (metrics of the whole global batch; evaluation sums).
    """

    angle_step = None  # angle logging needs every sample's Jacobians on one device

    def __init__(self, model_fn: Callable, forward_optimizer_fn: Callable,
                 feedback_optimizer_fn: Callable | None = None, strategy: tf.distribute.Strategy | None = None, *,
                 jit_compile: bool = False):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.jit_compile = bool(jit_compile)
        self.replicas = self.strategy.num_replicas_in_sync
        self.tpu = is_tpu_strategy(self.strategy)
        with self.strategy.scope():
            self.model = model_fn()
            check_precision(self.strategy, self.model.compute_dtype)
            if self.model.rule.batch_dependent and self.replicas > 1:
                raise DistributeError("strategy", f"method {self.model.rule.name!r} normalises each layer by the "
                                                  "batch's statistics, and each of the "
                                                  f"{self.replicas} replicas would see only its shard; train it on "
                                                  "one device (no --strategy, or --strategy=one_device)")
            if step.trains_feedback_first(self.model):  # the rule's in-batch schedule
                raise ValueError(f"method {self.model.rule.name!r} trains its feedback before the targets, which "
                                 "the distributed trainer does not schedule; train it on one device")
            self.forward_optimizer = self._new_optimizer(forward_optimizer_fn)
            self.forward_optimizer.build(self.model.forward_variables)
            self.feedback_optimizer = None
            if self.model.feedback_variables:
                if feedback_optimizer_fn is None:
                    raise ValueError(f"method {self.model.method.name!r} trains feedback weights: pass a "
                                     f"feedback_optimizer_fn")
                self.feedback_optimizer = self._new_optimizer(feedback_optimizer_fn)
                self.feedback_optimizer.build(self.model.feedback_variables)
        self.angle_step = None  # angle logging needs the whole batch on one device (see from_config)
        self._replica_fns: dict = {}
        compile_ = functools.partial(tf.function, reduce_retracing=True, autograph=False)
        self._train = compile_(functools.partial(self._distributed_step, True))
        self._feedback = compile_(functools.partial(self._distributed_step, False))
        self._eval = compile_(self._distributed_eval)

    def _new_optimizer(self, factory):
        optimizer = factory()
        # A Keras optimizer all-reduces and updates through the strategy current when it was constructed.
        if getattr(optimizer, "_distribution_strategy", self.strategy) is not self.strategy:
            raise DistributeError("strategy", f"optimizer {optimizer.name!r} was created outside the strategy's "
                                              f"scope; let the factory create a new one")
        return optimizer

    @classmethod
    def from_config(cls, config, dataset, strategy) -> "DistributedTrainer":
        """The launcher's model and optimizers (`factories.build_model` / `build_trainer`) under `strategy`."""
        if config.log_angles:
            raise DistributeError("log_angles", "angle logging runs on one device only; drop --log_angles or use "
                                                "the single-device trainer (no --strategy)")
        check_precision(strategy, config.precision)
        built = {}

        def model_fn():  # inside the scope: the model and both optimizers, built on their own variable lists
            built["trainer"] = factories.build_trainer(config, factories.build_model(config, dataset))
            return built["trainer"].model

        return cls(model_fn, lambda: built["trainer"].forward_optimizer,
                   lambda: built["trainer"].feedback_optimizer, strategy, jit_compile=_jit(config))

    @property
    def trains_feedback(self) -> bool:
        return bool(self.model.feedback_variables)

    # --- public steps ------------------------------------------------------------------------------------------
    def train_step(self, x, y):
        """targets → feedback step → forward step on a global batch; metrics of the global batch."""
        return self._train(*self._distribute(x, y))

    def feedback_step(self, x, y):
        return self._feedback(*self._distribute(x, y))

    def eval_step(self, x, y):
        """`step.eval_sums` of the global batch (loss_sum, count, correct)."""
        xs, ys, _, _ = self._distribute(x, y)
        return self._eval(xs, ys)

    # --- internals ---------------------------------------------------------------------------------------------
    def _distribute(self, x, y):
        x = tf.convert_to_tensor(x)
        y = tf.convert_to_tensor(y)
        batch = int(x.shape[0])
        if self.tpu and batch % self.replicas:
            raise DistributeError("batch_size", f"a global batch of {batch} samples does not split evenly over "
                                                f"{self.replicas} TPU cores; use a batch size divisible by "
                                                f"{self.replicas} (TPU shards must have equal shapes)")
        bounds = shard_bounds(batch, self.replicas)

        def value_fn(ctx):  # called once per local replica, under that replica's device
            start, end = bounds[ctx.replica_id_in_sync_group]
            return x[start:end], y[start:end], tf.constant(start, tf.int32)

        xs, ys, offsets = self.strategy.experimental_distribute_values_from_function(value_fn)
        return xs, ys, offsets, tf.constant(batch, tf.int32)

    def _replica_fn(self, kind: str, fn):
        """`fn` compiled with XLA, one function per replica and kind (see the module docstring), or `fn` itself."""
        if not self.jit_compile or self.tpu:
            return fn
        replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        key = (kind, None if replica is None else int(replica))  # static for Mirrored and MultiWorkerMirrored
        if key not in self._replica_fns:
            self._replica_fns[key] = tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)
        return self._replica_fns[key]

    def _gradients_and_sums(self, forward: bool, x, y, offset, batch):
        """One replica's gradients (its share of the global batch's) and metric sums, as a dict of tensors."""
        updates = step.compute_updates(self.model, x, y, forward=forward, feedback=True, batch_size=batch,
                                       noise_rows=(offset, batch))
        out = {}
        if updates.forward_grads is not None:
            out["forward_grads"] = list(updates.forward_grads)
        if updates.feedback_grads is not None:
            out["feedback_grads"] = list(updates.feedback_grads)
        rows = tf.cast(tf.shape(x)[0], updates.loss.dtype)
        shard_sum = lambda mean: tf.where(rows > 0, mean * rows, tf.zeros_like(mean))  # noqa: E731 (empty shard)
        sums = {"loss": shard_sum(updates.loss)}
        if updates.accuracy is not None:
            sums["accuracy"] = shard_sum(updates.accuracy)
        metrics = step.step_metrics(updates)
        if "rec_loss" in metrics:
            sums["rec_loss"] = metrics["rec_loss"]  # already this shard's share (losses divide by the global B)
        out["sums"] = sums
        health = getattr(step, "health", None)
        if health is not None:  # finiteness flags: counted as non-finite replicas (an empty shard is finite)
            out["nonfinite"] = {k: tf.where(rows > 0, 1.0 - v, tf.zeros_like(v)) for k, v in health(updates).items()}
        return out

    def _replica_step(self, forward: bool, x, y, offset, batch):
        compute = self._replica_fn(f"train_{forward}", functools.partial(self._gradients_and_sums, forward))
        out = compute(x, y, offset, batch)
        updates = step.Updates(out.get("forward_grads"), out.get("feedback_grads"), [], None,
                               out["sums"]["loss"], None, [])
        # Keras' optimizer all-reduces (SUM) the gradients of every replica and applies them once.
        step.apply_updates(self.model, updates, self.forward_optimizer, self.feedback_optimizer)
        return out["sums"], out.get("nonfinite", {})

    def _distributed_step(self, forward: bool, xs, ys, offsets, batch):
        sums, nonfinite = self.strategy.run(functools.partial(self._replica_step, forward),
                                            args=(xs, ys, offsets, batch))
        return self._global_metrics(sums, nonfinite, batch)

    def replica_batch_step(self, forward: bool, x, y, first, batch_size: int):
        """One global batch, rows [first, first + batch_size) of the device-resident (x, y), each replica slicing
        its own shard (loop.DistributedStepLoop calls this inside its compiled loop: strategy.run per batch, TPU
        style). Returns the metrics of `train_step`."""
        bounds = shard_bounds(batch_size, self.replicas)
        sizes = {end - start for start, end in bounds}

        def replica(x, y, first):
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            static_id = tf.get_static_value(replica_id)
            if static_id is not None:
                start, end = bounds[int(static_id)]
                offset, size = tf.constant(start, tf.int32), end - start
            elif len(sizes) == 1:  # a TPU: equal shards, the replica known at run time only
                size = next(iter(sizes))
                offset = tf.cast(replica_id, tf.int32) * size
            else:
                raise DistributeError("batch_size", f"a global batch of {batch_size} samples does not split evenly "
                                                    f"over {self.replicas} replicas; use a divisible batch size")
            rest = x.shape[1:].as_list()
            xb = tf.slice(x, [first + offset] + [0] * len(rest), [size] + rest)
            yb = tf.slice(y, [first + offset] + [0] * (y.shape.rank - 1), [size] + y.shape[1:].as_list())
            return self._replica_step(forward, xb, yb, offset, tf.constant(batch_size, tf.int32))

        sums, nonfinite = self.strategy.run(replica, args=(x, y, first))
        return self._global_metrics(sums, nonfinite, tf.constant(batch_size, tf.int32))

    def _global_metrics(self, sums, nonfinite, batch):
        reduce = functools.partial(self.strategy.reduce, tf.distribute.ReduceOp.SUM, axis=None)
        total = {k: reduce(v) for k, v in sums.items()}
        metrics = {"loss": total["loss"] / tf.cast(batch, total["loss"].dtype)}
        if "accuracy" in total:
            metrics["accuracy"] = total["accuracy"] / tf.cast(batch, total["accuracy"].dtype)
        if "rec_loss" in total:
            metrics["rec_loss"] = total["rec_loss"]
        # step.health's flags of the global batch: finite (1.0) where no replica saw a non-finite value.
        metrics.update({k: tf.cast(tf.equal(reduce(v), 0.0), tf.float32) for k, v in nonfinite.items()})
        return metrics

    def _replica_eval(self, x, y):
        return self._replica_fn("eval", functools.partial(step.eval_sums, self.model))(x, y)

    def _distributed_eval(self, xs, ys):
        sums = self.strategy.run(self._replica_eval, args=(xs, ys))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in sums.items()}


def _jit(config) -> bool:
    return loop.resolve_jit(config.jit_compile)  # the device's default when config.jit_compile is None
