"""The one train step, shared by every method and every driver.

`compute_updates` computes, for one batch and without changing any variable:
  1. the clean forward pass, taped with every layer's input detached;
  2. the output error e_L in closed form and the output target ĥ_L = h_L − η̂·e_L;
  3. the hidden targets with the CURRENT feedback weights, and the feedback losses with the CURRENT forward
     weights and fresh noise, under a tape that watches the feedback parameters only;
  4. the local losses c·(1/B)Σ‖h_ℓ − ĥ_ℓ‖² (c: the rule's `forward_loss_scale`, 1 but for L-DRL's ½; times
     `model.local_loss_scales`: the CNN's conv layers take the element mean) and their gradients (each layer's
     own, nothing crosses layers).
For BP it is the ordinary gradient of the batch-mean loss; for GNT, step 3 is replaced by the Gauss-Newton
targets of every layer (targets.gnt_targets), with no feedback weights.

`apply_updates` then takes one feedback optimizer step and one forward optimizer step. Both gradients were
computed before either update, which is exactly the reference's per-batch order (targets with old feedback
weights → feedback step with old forward weights → forward step).

`Trainer` compiles these into `tf.function`s (optionally XLA) for the custom loop; `TPModel.train_step` (Keras
`fit`) calls the same `train_step`, so the two drivers cannot diverge.
"""
from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from tp_keras.core import diagnostics as D
from tp_keras.core import losses as L
from tp_keras.core import targets as T
from tp_keras.core.rules.components import NoiseDraw, bind_clean_pass


def _tf_variables(variables):
    """The tf.Variables behind Keras variables (what GradientTape watches and differentiates against)."""
    return [getattr(v, "value", v) for v in variables]


@dataclasses.dataclass
class Updates:
    """Everything one batch produced. Gradient lists align with `model.forward_variables` and
    `model.feedback_variables`; None where that half was not requested."""
    forward_grads: list | None
    feedback_grads: list | None
    activations: list          # h_0..h_L (clean)
    targets: list | None       # ĥ_1..ĥ_L (None for BP)
    loss: tf.Tensor            # batch-mean output loss
    accuracy: tf.Tensor | None  # batch accuracy (classification); None for regression
    feedback_losses: list      # one per hidden layer (empty when feedback is not trained)
    feedback_variables: list | None = None  # what feedback_grads train, when not all of model.feedback_variables


def _targets_and_feedback_losses(model, hs, top_target, with_targets: bool, with_losses: bool, batch_size,
                                 noise_rows=None, clean_layers=None):
    """Hidden targets ĥ_1..ĥ_{L−1} and feedback losses, through the rule's components: the feedback path of the
    network's maps, the target rule, the feedback loss (which may compute the targets on its way).
    clean_layers: the layers bound to this clean pass (`CleanForward.bound_layers`), or None."""
    rule = model.rule
    path, loss = rule.path, rule.loss
    difference = rule.targets.difference
    needs_clean = difference or loss.needs_clean
    clean = path.clean(model, hs, clean_layers=clean_layers) if needs_clean else None
    targets, fb_losses = None, []
    if with_losses:
        noise = NoiseDraw(rule.noise_fn, model.noise_seed, tf.shape(hs[0])[0], hs[0].dtype, noise_rows)
        fb_losses, targets = loss.losses(model, rule, hs, noise, clean, batch_size,
                                         top_target if with_targets else None, clean_layers=clean_layers)
    if with_targets:
        if targets is None:
            targets = path.targets(model, hs, top_target, clean if difference else None, clean_layers=clean_layers)
        targets = [tf.stop_gradient(t) for t in targets]
    return targets, fb_losses


@dataclasses.dataclass
class CleanForward:
    """The clean forward pass h_0..h_L of one batch, each layer's input detached, and the tape that recorded it
    (watching the forward variables when `forward_tape` was asked): what every feedback round of a feedback-first
    batch reads, and what its forward step differentiates, computed once since the forward weights do not change
    before the forward step."""
    activations: list
    tape: tf.GradientTape
    _bound_layers: list | None = None

    def bound_layers(self, model):
        """`model.tp_layers` bound to this pass for the layer-wise feedback (`components.bind_clean_pass`: each
        max-pooling block's argmax computed once, where this is first asked, for every reader of the batch);
        None for the other feedback paths."""
        if self._bound_layers is None and model.rule.path is not None and model.rule.path.layerwise:
            self._bound_layers = bind_clean_pass(model.tp_layers, [tf.stop_gradient(h) for h in self.activations])
        return self._bound_layers


def clean_forward(model, x, *, forward_tape: bool) -> CleanForward:
    tape = tf.GradientTape(watch_accessed_variables=False)
    with tape:
        if forward_tape:
            tape.watch(_tf_variables(model.forward_variables))
        hs = model.activations(tf.cast(x, model.compute_dtype), detach_inputs=True)
    return CleanForward(hs, tape)


def compute_updates(model, x, y, *, forward: bool = True, feedback: bool = True, batch_size=None,
                    noise_rows=None, sample_weight=None, feedback_layers=None,
                    clean: CleanForward | None = None) -> Updates:
    """Gradients of one batch for the forward and/or feedback parameters (nothing is updated).

    Args:
      forward: compute targets and forward gradients.
      feedback: compute the feedback losses and their gradients (if the method trains feedback).
      batch_size: the B the losses are averaged over; defaults to this batch's size (under a distribution
        strategy, pass the global batch size so that replicas sum to the single-device update).
      noise_rows: (offset, global batch size) of this batch within the global batch (a replica's shard): the
        feedback-loss noise is then the global batch's noise at these rows, as on one device.
      sample_weight: optional (B,) weights w_b of the samples' output losses, L = (1/B)·Σ_b w_b·ℓ_b (Keras'
        weighting). They scale each sample's output error, e_L,b = w_b·∂ℓ_b/∂h_L/B, hence its output target;
        the hidden targets follow from it as usual, and a zero-weight sample's targets are its activations
        (so it adds nothing to any local loss). The feedback losses, which use no labels, are not weighted.
        `Updates.loss` is then the weighted loss.
      feedback_layers: 0-based hidden layers whose feedback losses train (None: all); the feedback gradients
        are then those of `model.feedback_variable_groups` of these layers only.
      clean: this batch's clean forward pass (`clean_forward`, with forward_tape=forward) instead of computing
        it here (target methods; the same tensors, hence the same numbers, while the forward weights are those
        it read).
    """
    rule = model.rule
    x = tf.cast(x, model.compute_dtype)
    batch_size = tf.shape(x)[0] if batch_size is None else batch_size
    b = tf.cast(batch_size, model.compute_dtype)
    weights = None if sample_weight is None else tf.reshape(tf.cast(sample_weight, model.compute_dtype), [-1])

    if rule.targets.backprop:
        fwd_vars = _tf_variables(model.forward_variables)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(fwd_vars)
            hs = model.activations(x)
            per_sample = _weighted(T.output_loss_per_sample(hs[-1], y, model.task), weights)
            loss = tf.reduce_sum(per_sample) / b
        grads = tape.gradient(loss, fwd_vars) if forward else None
        return Updates(grads, None, hs, None, tf.reduce_mean(per_sample), _accuracy(model, hs[-1], y), [])

    fwd_vars = _tf_variables(model.forward_variables)
    fb_keras_vars = None
    if feedback_layers is not None:
        groups = model.feedback_variable_groups
        fb_keras_vars = [v for i in feedback_layers for v in groups[i]]
    fb_vars = _tf_variables(model.feedback_variables if fb_keras_vars is None else fb_keras_vars)
    train_fb = feedback and bool(fb_vars)
    if clean is None:
        clean = clean_forward(model, x, forward_tape=forward)
    fwd_tape, hs = clean.tape, clean.activations
    outputs = hs[-1]
    per_sample = _weighted(T.output_loss_per_sample(outputs, y, model.task), weights)
    top_target = None
    if forward:
        error = T.output_error(outputs, y, model.task, batch_size)
        if weights is not None:
            error = error * weights[:, None]
        top_target = tf.stop_gradient(T.output_target(outputs, error, rule.target_stepsize))

    fb_grads, fb_losses, all_targets = None, [], None
    if forward and not rule.targets.uses_feedback:  # GNT: every target from the output Jacobians
        all_targets = [tf.stop_gradient(t) for t in rule.targets.all_targets(model, hs, error, rule)]
    elif forward or train_fb:
        with tf.GradientTape(watch_accessed_variables=False) as fb_tape:
            if train_fb:
                fb_tape.watch(fb_vars)
            hidden_targets, fb_losses = _targets_and_feedback_losses(
                model, [tf.stop_gradient(h) for h in hs], top_target, with_targets=forward, with_losses=train_fb,
                batch_size=batch_size, noise_rows=noise_rows, clean_layers=clean.bound_layers(model))
            trained = fb_losses if feedback_layers is None else [fb_losses[i] for i in feedback_layers]
            fb_total = tf.add_n(trained) if trained else None
        if train_fb:
            fb_grads = fb_tape.gradient(fb_total, fb_vars)
        if forward:
            all_targets = hidden_targets + [top_target]
    if forward and weights is not None:
        all_targets = _unmoved_where_unweighted(all_targets, hs, weights)

    fwd_grads = None
    if forward:
        # 1 for dense layers, the CNN's conv layers take the element mean; times the rule's c (1, L-DRL's ½)
        scales = [scale * rule.forward_loss_scale for scale in model.local_loss_scales]
        with fwd_tape:  # only the layers that train (Frozen-MNIST: the first): no work for frozen ones
            local = tf.add_n([_scaled(L.local_loss(hs[i + 1], all_targets[i], batch_size), scales[i])
                              for i in model.trained_layers])
        fwd_grads = fwd_tape.gradient(local, fwd_vars)
    return Updates(fwd_grads, fb_grads, hs, all_targets, tf.reduce_mean(per_sample),
                   _accuracy(model, outputs, y), fb_losses, fb_keras_vars)


def _weighted(per_sample, weights):
    return per_sample if weights is None else per_sample * weights


def _unmoved_where_unweighted(targets, hs, weights):
    """ĥ_ℓ = h_ℓ exactly for the samples of weight 0. Their output target is their output (no error), so every
    target rule gives back their activations in exact arithmetic; in floating point the difference correction
    g(ĥ) + h − g(h) only does so up to rounding (which Adam would amplify into a step), and vanilla TP's
    reconstruction error would move them."""
    keep = tf.not_equal(weights, 0)[:, None]
    return [tf.where(keep, t, h) for t, h in zip(targets, hs[1:])]


def _scaled(loss, scale: float):
    """loss·scale; the MLP's scale 1 adds no operation (its graphs stay as they were)."""
    return loss if scale == 1.0 else loss * tf.constant(scale, loss.dtype)


def _accuracy(model, outputs, y):
    if model.task != "classification":
        return None
    return tf.reduce_mean(T.accuracy_per_sample(outputs, y))


def apply_updates(model, updates: Updates, forward_optimizer, feedback_optimizer):
    fb_grads = updates.feedback_grads or []
    fwd_grads = updates.forward_grads or []
    # Every gradient is complete before any variable changes: TensorFlow's automatic control dependencies
    # alone left a read racing with an optimizer write (run-to-run differences in DTPDRL).
    with tf.control_dependencies(fb_grads + fwd_grads):
        if updates.feedback_grads is not None:
            variables = updates.feedback_variables
            feedback_optimizer.apply_gradients(zip(updates.feedback_grads,
                                                   model.feedback_variables if variables is None else variables))
        if updates.forward_grads is not None:
            forward_optimizer.apply_gradients(zip(updates.forward_grads, model.forward_variables))


def step_metrics(updates: Updates) -> dict:
    metrics = {"loss": updates.loss}
    if updates.accuracy is not None:
        metrics["accuracy"] = updates.accuracy
    if updates.feedback_losses:
        # Mean over hidden layers (the reference logs only one layer for DRL/DDTP, docs/semantics.md §15.17).
        metrics["rec_loss"] = tf.add_n(updates.feedback_losses) / len(updates.feedback_losses)
    return metrics


def _all_finite(tensor):
    return tf.cast(tf.reduce_all(tf.math.is_finite(tensor)), tf.float32)


def health(updates: Updates) -> dict:
    """Finiteness flags (1.0 finite, 0.0 not) of one batch, kept on the device so that a run can say where it
    diverged without a host sync per batch: 'finite_loss'; 'finite_layers', per layer ℓ = 1..L, of the target
    ĥ_ℓ (target methods) or of the activation h_ℓ (BP); 'finite_feedback', per feedback loss."""
    flags = {"finite_loss": _all_finite(updates.loss)}
    per_layer = updates.targets if updates.targets is not None else updates.activations[1:]
    if per_layer:
        flags["finite_layers"] = tf.stack([_all_finite(t) for t in per_layer])
    if updates.feedback_losses:
        flags["finite_feedback"] = tf.stack([_all_finite(l) for l in updates.feedback_losses])
    return flags


def trains_feedback_first(model) -> bool:
    """Whether this batch's feedback steps come before its targets (the rule's in-batch schedule, where the
    model has feedback weights to train)."""
    return model.rule.schedule.feedback_first and bool(model.feedback_variables)


def _feedback_round(model, feedback_optimizer, clean, active, batch_size, noise_rows):
    """One feedback step of the hidden layers `active` (None: all) on the clean pass `clean` (a `CleanForward`),
    fresh noise: what a round inside a compiled loop runs (the feedback half of `compute_updates(forward=False)`,
    without the output loss, the accuracy and the path's unread clean terms: Grappler prunes unused ops from the
    main graph but not from a while-loop body, where they cost as much again). Its layers are bound to the clean
    pass once per batch (`CleanForward.bound_layers`: the argmaxes come into the loop computed). The loss still
    computes every hidden layer's value, the inactive layers' too (`FeedbackLoss.losses` has no per-layer form):
    work a loop body keeps and the written-out rounds drop (XLA drops it in both)."""
    hs = clean.activations
    clean_layers = clean.bound_layers(model)
    groups = model.feedback_variable_groups
    keras_vars = model.feedback_variables if active is None else [v for i in active for v in groups[i]]
    fb_vars = _tf_variables(keras_vars)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(fb_vars)
        hs = [tf.stop_gradient(h) for h in hs]
        rule = model.rule  # no targets: the path's clean terms only where the loss reads them
        clean_terms = rule.path.clean(model, hs, clean_layers=clean_layers) if rule.loss.needs_clean else None
        noise = NoiseDraw(rule.noise_fn, model.noise_seed, tf.shape(hs[0])[0], hs[0].dtype, noise_rows)
        losses, _ = rule.loss.losses(model, rule, hs, noise, clean_terms, batch_size, clean_layers=clean_layers)
        total = tf.add_n(losses if active is None else [losses[i] for i in active])
    grads = tape.gradient(total, fb_vars)
    apply_updates(model, Updates(None, grads, hs, None, None, None, losses, keras_vars), None, feedback_optimizer)


def _looped_rounds(model, feedback_optimizer, clean, active, count, batch_size, noise_rows):
    """`count` rounds of the same active set as one tf.while_loop: the graph holds the round once. Iterations
    run one after another (each reads the feedback weights, optimizer state and noise seed the previous one
    wrote: parallel_iterations=1, and the counter comes out of the body after its updates)."""
    def body(i):
        _feedback_round(model, feedback_optimizer, clean, active, batch_size, noise_rows)
        return (i + 1,)
    tf.while_loop(lambda i: i < count, body, (tf.constant(0),), parallel_iterations=1, maximum_iterations=count)


def feedback_first_updates(model, feedback_optimizer, x, y, *, batch_size=None, noise_rows=None,
                           clean: CleanForward | None = None, unroll: bool = False):
    """The feedback steps of one batch when the rule trains the feedback first: the rounds of its in-batch
    schedule (`InBatchSchedule.rounds`: K_ℓ steps for hidden layer ℓ, all layers stepping together while they
    have steps left), each with fresh noise, all on the one clean forward pass `clean` (computed here if not
    given: the forward weights do not change during the rounds). Returns the first step's updates (the feedback
    losses before this batch trained them).

    The first round is traced on its own (it reports the batch); each following run of rounds with the same
    active set (`InBatchSchedule.groups`) is one tf.while_loop, so the graph holds a round once per group rather
    than max(K) times (the authors' CIFAR-10 K = (20, 30, 35, 55, 20): 5 rounds in the graph instead of 55). The
    numbers are those of the rounds written out one after another: bit for bit eagerly and in graphs without
    Grappler's arithmetic rewrites; to rounding with them (they rewrite a loop body apart from the main graph)
    and under XLA (tests/test_feedback_rounds.py). `unroll=True` writes the rounds out (the benchmark's
    baseline). A group of one round runs unlooped: a loop of one iteration would only add its overhead."""
    if clean is None:
        clean = clean_forward(model, x, forward_tape=False)
    hs = clean.activations
    clean.bound_layers(model)  # the argmaxes before the loops, which read them
    batch_size = tf.shape(hs[0])[0] if batch_size is None else batch_size
    groups = model.rule.schedule.groups(len(model.tp_layers) - 1)
    first_active, first_count = groups[0]
    first = compute_updates(model, x, y, forward=False, feedback=True, batch_size=batch_size,
                            noise_rows=noise_rows, feedback_layers=first_active, clean=clean)
    apply_updates(model, first, None, feedback_optimizer)
    for index, (active, count) in enumerate(groups):
        count -= 1 if index == 0 else 0
        if unroll or count == 1:  # one round: no loop to pay for
            for _ in range(count):
                _feedback_round(model, feedback_optimizer, clean, active, batch_size, noise_rows)
        elif count > 1:
            _looped_rounds(model, feedback_optimizer, clean, active, count, batch_size, noise_rows)
    return first


def batch_updates(model, forward_optimizer, feedback_optimizer, x, y, *, forward: bool = True, batch_size=None,
                  noise_rows=None, sample_weight=None, unroll_feedback_rounds: bool = False) -> Updates:
    """One batch's updates, applied in the rule's order: by default targets → feedback step → forward step, all
    gradients from the same weights; where the rule's schedule trains the feedback first, the feedback steps, then
    the targets (with the new feedback weights) and the forward step, all on one clean forward pass. Returns the
    updates that report the batch."""
    if trains_feedback_first(model):
        clean = clean_forward(model, x, forward_tape=forward)
        trained = feedback_first_updates(model, feedback_optimizer, x, y, batch_size=batch_size,
                                         noise_rows=noise_rows, clean=clean, unroll=unroll_feedback_rounds)
        if not forward:
            return trained
        updates = compute_updates(model, x, y, forward=True, feedback=False, batch_size=batch_size,
                                  noise_rows=noise_rows, sample_weight=sample_weight, clean=clean)
        apply_updates(model, updates, forward_optimizer, None)
        return dataclasses.replace(updates, feedback_losses=trained.feedback_losses)
    updates = compute_updates(model, x, y, forward=forward, feedback=True, batch_size=batch_size,
                              noise_rows=noise_rows, sample_weight=sample_weight)
    apply_updates(model, updates, forward_optimizer, feedback_optimizer)
    return updates


def train_step(model, forward_optimizer, feedback_optimizer, x, y, *, forward: bool = True, batch_size=None,
               noise_rows=None, sample_weight=None, unroll_feedback_rounds: bool = False):
    """One batch (`batch_updates`; forward=False: the feedback-only step).

    Returns the batch's metrics and its finiteness flags (`health`)."""
    updates = batch_updates(model, forward_optimizer, feedback_optimizer, x, y, forward=forward,
                            batch_size=batch_size, noise_rows=noise_rows, sample_weight=sample_weight,
                            unroll_feedback_rounds=unroll_feedback_rounds)
    return {**step_metrics(updates), **health(updates)}


def train_step_with_angles(model, forward_optimizer, feedback_optimizer, x, y, *, gn_damping=0.0,
                           batch_size=None):
    """`train_step` that also returns the angles of this batch's weight updates against BP and GNT
    (docs/semantics.md §13.2, §13.3), computed from the same updates before any variable changes: 'bp_angle' (L,),
    'gnt_angle' (L−1,)."""
    if trains_feedback_first(model):  # the feedback steps come first
        clean = clean_forward(model, x, forward_tape=True)
        trained = feedback_first_updates(model, feedback_optimizer, x, y, batch_size=batch_size, clean=clean)
        updates = compute_updates(model, x, y, forward=True, feedback=False, batch_size=batch_size, clean=clean)
        updates = dataclasses.replace(updates, feedback_losses=trained.feedback_losses)
    else:
        updates = compute_updates(model, x, y, forward=True, feedback=True, batch_size=batch_size)
    angles = D.angles(model, updates, y, gn_damping)
    # The angles read the forward weights: they must be computed before the updates write them.
    with tf.control_dependencies(list(angles.values())):
        apply_updates(model, updates, forward_optimizer, feedback_optimizer)
    return {**step_metrics(updates), **health(updates), **angles}


def eval_sums(model, x, y):
    """Sums of per-sample loss (and correct predictions, for classification), and the sample count."""
    outputs = model(x)
    per_sample = T.output_loss_per_sample(outputs, y, model.task)
    sums = {"loss_sum": tf.reduce_sum(per_sample), "count": tf.cast(tf.shape(per_sample)[0], per_sample.dtype)}
    if model.task == "classification":
        sums["correct"] = tf.reduce_sum(T.accuracy_per_sample(outputs, y))
    return sums


class Trainer:
    """The compiled steps of one model with its forward and feedback optimizers.

    Args:
      model: a `TPModel`.
      forward_optimizer, feedback_optimizer: built here on `model.forward_variables` and
        `model.feedback_variables` (pass feedback_optimizer=None when the method trains no feedback).
      jit_compile: compile the steps with XLA.
      angle_damping: if not None, also compile `angle_step` (a train step that returns the BP and GNT angles),
        with this GNT damping (a scalar, or one value per hidden layer).
      unroll_feedback_rounds: a feedback-first rule's rounds written out one by one in the graph instead of one
        compiled loop per group of rounds (`feedback_first_updates`): the same numbers, a graph max(K) rounds
        long, traced and compiled several times slower; a few per cent faster per batch without XLA where groups
        train a subset of the layers (docs/performance.md, "L-DRL's feedback rounds"). The benchmark's baseline.
    """

    def __init__(self, model, forward_optimizer, feedback_optimizer=None, *, jit_compile: bool = False,
                 angle_damping=None, unroll_feedback_rounds: bool = False):
        self.model = model
        self.forward_optimizer = forward_optimizer
        self.feedback_optimizer = feedback_optimizer
        forward_optimizer.build(model.forward_variables)
        if model.feedback_variables:
            if feedback_optimizer is None:
                raise ValueError(f"method {model.method.name!r} trains feedback weights: pass a feedback_optimizer")
            feedback_optimizer.build(model.feedback_variables)
        # autograph=False: the steps have no Python control flow on tensors, so autograph's conversion of the whole
        # call tree (most of the first trace's time) yields the very same graph (tests/test_tracing.py).
        compile_ = functools.partial(tf.function, jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        self.train_step = compile_(functools.partial(train_step, model, forward_optimizer, feedback_optimizer,
                                                     forward=True, unroll_feedback_rounds=unroll_feedback_rounds))
        self.feedback_step = compile_(functools.partial(train_step, model, forward_optimizer, feedback_optimizer,
                                                        forward=False, unroll_feedback_rounds=unroll_feedback_rounds))
        self.eval_step = compile_(functools.partial(eval_sums, model))
        self.angle_step = None
        if angle_damping is not None:
            self.angle_step = compile_(functools.partial(
                train_step_with_angles, model, forward_optimizer, feedback_optimizer,
                gn_damping=D.per_layer_damping(angle_damping, len(model.tp_layers) - 1)))

    @property
    def trains_feedback(self) -> bool:
        return bool(self.model.feedback_variables)
