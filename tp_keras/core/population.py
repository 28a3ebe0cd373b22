"""A population: K models of one rule trained side by side in one compiled program.

Each member is an ordinary `step.Trainer` (its `TPModel`, its own forward and feedback optimizers, its own noise
generator), so a member's state is a single model's state: its checkpoint is an ordinary checkpoint, and members
may differ by seed (initialisation, noise, shuffling order) and by any hyper-parameter the model or its optimizers
take (learning rates, η̂, σ, ...). `Population.train_step(x, y)` steps every member on its own batch (x: [K, B, ...],
y: [K, B, ...]) in one `tf.function`; `Population.loop(x, y, order, start, count)` runs `count` batches of every
member in one compiled `tf.while_loop`, member k reading rows `order[k, start + i·B : start + (i+1)·B]` of the
shared training set (its own shuffling order, no K copies of the data).

Design: the members' step bodies stand side by side in one graph (TensorFlow's executor runs independent ops
concurrently); each member's ops are those of its single run (`step.compute_updates`, `step.apply_updates`, the
feedback rounds of `step.feedback_first_updates`), so a member's numbers equal its single run's bit for bit
without XLA, and to rounding under XLA, which compiles the K members as one cluster (tests/test_population.py).

Divergence stays per member: a member's batch applies its updates only where its finiteness flags
(`step.health`: loss, targets, feedback losses) and its gradients are all finite (a `tf.cond` inside the
program, no host round-trip). Else the member stops: its weights and optimizer state keep their values from
before that batch, its later batches compute nothing (metrics NaN, flags 1, `alive` False), and the other members
go on unchanged. Where a rule applies updates before its targets (the feedback rounds of a feedback-first rule,
'ldrl'), the member's feedback weights and feedback optimizer state are read at the start of every batch and
written back when the batch goes bad (one copy of the feedback state per batch, for those rules only). The
member's noise generator keeps its advance (it drew the bad batch's noise). Each member's record of its first bad
batch is a `health.FirstNonFinite` (its step health flags, then the gradients' flag); `diverged()` says where,
in the words of a single run's `Diverged`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
import tensorflow as tf

from tp_keras.core import step as S
from tp_keras.core.health import FirstNonFinite, first_problem


def _finite(tensors) -> tf.Tensor:
    """Whether every value of every tensor is finite (a scalar bool; True for none)."""
    flags = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def _flag_vector(flags: dict) -> tf.Tensor:
    """`step.health`'s flags in FirstNonFinite's order: loss, then per layer, then per feedback loss."""
    parts = [tf.reshape(flags["finite_loss"], [1])] + [flags[k] for k in ("finite_layers", "finite_feedback")
                                                        if k in flags]
    return tf.cast(tf.concat(parts, axis=0), tf.float32)


def _health_width(model) -> int:
    """How many flags `step.health` gives for `model`: the loss, one per layer (targets or activations), one per
    hidden layer's feedback loss where the model trains feedback weights."""
    layers = len(model.tp_layers)
    trains_feedback = bool(model.feedback_variables) and not model.rule.targets.backprop
    return 1 + layers + (layers - 1 if trains_feedback else 0)


def _feedback_state(trainer) -> list:
    """What a feedback-first batch changes before it can tell whether it went bad: the feedback weights and the
    feedback optimizer's state."""
    return list(trainer.model.feedback_variables) + list(trainer.feedback_optimizer.variables)


def member_variables(trainer) -> list:
    """A member's state, in the order of a single run's checkpoint (run/checkpoint.py): the model's variables
    (weights, noise generator), the forward optimizer's, the feedback optimizer's where it trains feedback."""
    variables = list(trainer.model.variables) + list(trainer.forward_optimizer.variables)
    if trainer.feedback_optimizer is not None and trainer.trains_feedback:
        variables += list(trainer.feedback_optimizer.variables)
    return variables


@dataclasses.dataclass
class _Member:
    trainer: S.Trainer
    record: FirstNonFinite  # the first bad batch: its step.health flags, then the gradients' flag

    @property
    def model(self):
        return self.trainer.model


def _member_batch(member: _Member, x, y, forward: bool, logits: bool = False) -> dict:
    """One batch of one member, its updates applied only where everything came out finite (`Population`).
    Returns the single run's `step.train_step` outputs (metrics and health flags), and with `logits` the batch's
    output h_L (for Keras' compiled metrics, `population_model`)."""
    trainer, model = member.trainer, member.model
    fwd_opt, fb_opt = trainer.forward_optimizer, trainer.feedback_optimizer
    if S.trains_feedback_first(model):
        saved_state = [tf.identity(v.value if hasattr(v, "value") else v) for v in _feedback_state(trainer)]
        clean = S.clean_forward(model, x, forward_tape=forward)
        trained = S.feedback_first_updates(model, fb_opt, x, y, clean=clean)
        if forward:
            updates = S.compute_updates(model, x, y, forward=True, feedback=False, clean=clean)
            updates = dataclasses.replace(updates, feedback_losses=trained.feedback_losses)
        else:
            updates = trained
        grads = list(updates.forward_grads or []) + list(updates.feedback_grads or [])
        # the rounds wrote the feedback state: it must be finite too
        grads_ok = tf.logical_and(_finite(grads), _finite([v.value for v in model.feedback_variables]))
        flags = S.health(updates)
        ok = tf.logical_and(tf.reduce_all(_flag_vector(flags) > 0), grads_ok)

        def good():
            if forward:
                S.apply_updates(model, dataclasses.replace(updates, feedback_grads=None), fwd_opt, None)
            return tf.constant(True)

        def bad():  # the rounds' writes undone
            for v, value in zip(_feedback_state(trainer), saved_state):
                v.assign(value)
            return tf.constant(False)
    else:
        updates = S.compute_updates(model, x, y, forward=forward, feedback=True)
        flags = S.health(updates)
        grads_ok = _finite(list(updates.forward_grads or []) + list(updates.feedback_grads or []))
        ok = tf.logical_and(tf.reduce_all(_flag_vector(flags) > 0), grads_ok)

        def good():
            S.apply_updates(model, updates, fwd_opt, fb_opt)
            return tf.constant(True)

        def bad():
            return tf.constant(False)
    applied = tf.cond(ok, good, bad)
    with tf.control_dependencies([applied]):
        member.record.update(tf.concat([_flag_vector(flags), tf.cast(grads_ok, tf.float32)[None]], axis=0))
    outputs = {**S.step_metrics(updates), **flags}
    if logits:
        outputs["logits"] = updates.activations[-1]
    return outputs


def _stopped_outputs(structure: dict) -> dict:
    """A stopped member's outputs: its metrics NaN, its flags 1 (it computed nothing)."""
    def fill(key, t):
        value = 1 if key.startswith("finite_") else float("nan")
        return tf.fill(tf.shape(t), tf.constant(value, t.dtype))
    return {key: fill(key, t) for key, t in structure.items()}


class Population:
    """K `step.Trainer`s of one rule, stepped together in one compiled program.

    Args:
      trainers: the members (each an ordinary Trainer: model, forward and feedback optimizers). All must train
        the same rule (by name) in the same dtype; they may differ by seed and hyper-parameter values.
      jit_compile: compile the population's step and loop with XLA (the members' own `jit_compile` is unused
        here: the population compiles their bodies itself).

    `train_step(x, y)` / `feedback_step(x, y)`: one batch per member (x: [K, B, ...], y: [K, B, ...]); returns the
    single run's metrics and health flags stacked over the members ([K, ...]) and 'alive' ([K] bool: the member
    still trains after this batch; False from the batch where it stopped on).
    `loop(x, y, order, start, count, forward=True)`: `count` batches of `batch_size` rows per member, member k's
    batch i being rows order[k, start + i·B : start + (i + 1)·B] of the shared (x, y); outputs stacked
    [count, K, ...].
    """

    def __init__(self, trainers: Sequence[S.Trainer], *, jit_compile: bool = False):
        trainers = list(trainers)
        if not trainers:
            raise ValueError("Population: give at least one trainer")
        names = {t.model.rule.name for t in trainers}
        dtypes = {t.model.compute_dtype for t in trainers}
        if len(names) > 1 or len(dtypes) > 1:
            raise ValueError(f"Population: members train one rule in one dtype; got rules {sorted(names)}, dtypes "
                             f"{sorted(dtypes)}: make one population per rule and dtype")
        if len({id(t.model) for t in trainers}) < len(trainers):
            raise ValueError("Population: a model appears twice; give each member its own model and optimizers")
        self.members = [_Member(t, FirstNonFinite(_health_width(t.model) + 1)) for t in trainers]
        self.jit_compile = bool(jit_compile)
        compile_ = functools.partial(tf.function, jit_compile=self.jit_compile, reduce_retracing=True,
                                     autograph=False)
        self.train_step = compile_(functools.partial(self._step, forward=True))
        self.feedback_step = compile_(functools.partial(self._step, forward=False))
        self._loop = compile_(self._run)
        self._batch_step = tf.function(self._gathered_step, reduce_retracing=True, autograph=False)

    @property
    def trainers(self) -> list:
        return [m.trainer for m in self.members]

    @property
    def models(self) -> list:
        return [m.model for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    # --- the compiled program -------------------------------------------------------------------------------
    def _member_step(self, member: _Member, x, y, forward: bool, logits: bool = False) -> dict:
        structure = {}

        def run():
            outputs = _member_batch(member, x, y, forward, logits)
            structure.update(outputs)
            return outputs

        def stopped():  # cond_v2 traces the true branch first: the stopped branch copies its structure
            if not structure:
                raise RuntimeError("Population: tf.cond traced its false branch first")
            outputs = _stopped_outputs({key: t for key, t in structure.items() if key != "logits"})
            if "logits" in structure:  # rows from the batch: the true branch's tensors are not readable here
                t = structure["logits"]
                shape = tf.concat([tf.shape(x)[:1], tf.constant(t.shape[1:].as_list(), tf.int32)], axis=0)
                outputs["logits"] = tf.fill(shape, tf.constant(float("nan"), t.dtype))
            return outputs

        outputs = tf.cond(member.record.first < 0, run, stopped)
        return {**outputs, "alive": member.record.first < 0}

    def _step(self, x, y, *, forward: bool) -> dict:
        outputs = [self._member_step(m, x[k], y[k], forward) for k, m in enumerate(self.members)]
        return {key: tf.stack([o[key] for o in outputs]) for key in outputs[0]}

    def member_steps(self, x, y, *, logits: bool = False) -> list[dict]:
        """Every member trained on the same batch (x: [B, ...], y: [B, ...]), uncompiled: the body of a caller's
        compiled step (Keras' train function, `population_model.PopulationModel`). Returns each member's outputs
        as `train_step`'s (metrics, health flags, 'alive'), with `logits` also the batch's output h_L (NaN where
        the member has stopped)."""
        return [self._member_step(m, x, y, True, logits) for m in self.members]

    def _gathered_step(self, x, y, order, first, batch_size, forward):
        """Every member's batch at row `first` of its order (rows of the shared x, y), stepped."""
        def batch(data, k):
            return tf.gather(data, tf.slice(order, [k, first], [1, batch_size])[0])
        outputs = [self._member_step(m, batch(x, k), batch(y, k), forward) for k, m in enumerate(self.members)]
        return {key: tf.stack([o[key] for o in outputs]) for key in outputs[0]}

    def _run(self, x, y, order, start, count, batch_size, forward):
        # The batch step is traced once (its outputs' structure read from that trace) and called in the loop.
        spec = [tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(y.shape, y.dtype),
                tf.TensorSpec(order.shape, order.dtype), tf.TensorSpec([], tf.int32)]
        outputs = self._batch_step.get_concrete_function(*spec, batch_size, forward).structured_outputs
        arrays = tf.nest.map_structure(
            lambda t: tf.TensorArray(t.dtype, size=count, element_shape=t.shape), outputs)

        def body(i, arrays):
            out = self._batch_step(x, y, order, start + i * batch_size, batch_size, forward)
            return i + 1, tf.nest.map_structure(lambda array, value: array.write(i, value), arrays, out)

        # one batch at a time: each reads the variables the previous one wrote
        _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays), parallel_iterations=1)
        return tf.nest.map_structure(lambda array: array.stack(), arrays)

    def loop(self, x, y, order, start: int, count: int, batch_size: int, *, forward: bool = True) -> dict:
        """`count` batches of every member in one compiled call (see the class); outputs [count, K, ...]."""
        return self._loop(x, y, tf.convert_to_tensor(order, tf.int32), tf.constant(start, tf.int32),
                          tf.constant(count, tf.int32), int(batch_size), bool(forward))

    # --- divergence -----------------------------------------------------------------------------------------
    def alive(self) -> list[bool]:
        return [int(m.record.first.numpy()) < 0 for m in self.members]

    def diverged(self, where: str = "population") -> list[str | None]:
        """Per member, None while it trains, else where it stopped: the message of a single run's `Diverged`
        (`health.first_problem`) with batch counted from the population's first step, or its gradients."""
        messages = []
        for m in self.members:
            batch = int(m.record.first.numpy())
            if batch < 0:
                messages.append(None)
                continue
            flags = np.asarray(m.record.flags.numpy())
            health_flags, grads_finite = flags[:-1], flags[-1]
            layers = len(m.model.tp_layers)
            row = {"finite_loss": health_flags[0], "finite_layers": health_flags[1:1 + layers]}
            if len(health_flags) > 1 + layers:
                row["finite_feedback"] = health_flags[1 + layers:]
            ones = {k: np.ones_like(v) for k, v in row.items()}
            problem = first_problem(where, [ones] * batch + [row])
            messages.append(problem or f"non-finite gradient in {where}, batch {batch}")
        return messages

    # --- state ----------------------------------------------------------------------------------------------
    def member_state(self, k: int) -> list[np.ndarray]:
        """Member k's state as arrays: its checkpoint's variables (`member_variables`), then its divergence
        record (batch counter, first bad batch, flags)."""
        m = self.members[k]
        return [np.asarray(v.numpy()) for v in member_variables(m.trainer) + self._record_variables(m)]

    def restore_member(self, k: int, arrays: Sequence[np.ndarray]) -> None:
        m = self.members[k]
        variables = member_variables(m.trainer) + self._record_variables(m)
        if len(arrays) != len(variables):
            raise ValueError(f"Population.restore_member: {len(arrays)} arrays for {len(variables)} variables")
        for v, value in zip(variables, arrays):
            if tuple(np.shape(value)) != tuple(v.shape):
                raise ValueError(f"Population.restore_member: {getattr(v, 'path', v.name)} has shape "
                                 f"{tuple(v.shape)}, the array {np.shape(value)}")
        for v, value in zip(variables, arrays):
            v.assign(value)

    def state(self) -> list[list[np.ndarray]]:
        return [self.member_state(k) for k in range(len(self))]

    def restore(self, state: Sequence[Sequence[np.ndarray]]) -> None:
        if len(state) != len(self):
            raise ValueError(f"Population.restore: state of {len(state)} members for {len(self)}")
        for k, arrays in enumerate(state):
            self.restore_member(k, arrays)

    @staticmethod
    def _record_variables(member: _Member) -> list:
        return [member.record.batch, member.record.first, member.record.flags]
