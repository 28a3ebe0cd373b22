"""`TPModel.compile`'s arguments: the forward and feedback optimizers (the feedback ones through the factory the
launcher uses, `optimizers.feedback_optimizers`) and the loss, whose closed-form output error builds the output
target; what has no meaning under target propagation is refused in one line."""
from __future__ import annotations

import warnings

import keras

from tp_keras.core.optimizers import LayerwiseOptimizer, default_feedback_optimizer, feedback_optimizers

# compile(loss=...): what each accepted name means, by task.
_CLASSIFICATION_LOSSES = {"sparse_categorical_crossentropy": "sparse", "categorical_crossentropy": "categorical"}
_REGRESSION_LOSSES = {"mean_squared_error": "mse", "mse": "mse"}


def feedback_optimizer_for(model, forward, feedback):
    """The feedback optimizer(s) of `model.compile`, through the factory the launcher uses too
    (`optimizers.feedback_optimizers`): for a rule with per-layer feedback optimizers (ldrl), one per hidden
    layer, cloned from the one given (or a list of them, one per hidden layer, or a LayerwiseOptimizer)."""
    if not model.feedback_variables:
        if feedback is not None and not isinstance(feedback, (list, tuple, LayerwiseOptimizer)):
            # kept (and saved with the model), but it has nothing to train
            warnings.warn(f"compile: method {model.method.name!r} trains no feedback weights here; "
                          "feedback_optimizer is not used", UserWarning, stacklevel=3)
            return keras_optimizer(feedback, "feedback_optimizer")
        return None
    if feedback is None:
        return default_feedback_optimizer(model)
    per_layer = model.rule.schedule.per_layer_optimizers
    groups = len(model.tp_layers) - 1
    if isinstance(feedback, LayerwiseOptimizer) or isinstance(feedback, (list, tuple)):
        given = feedback.optimizers if isinstance(feedback, LayerwiseOptimizer) else list(feedback)
        if not per_layer:
            raise ValueError(f"compile: rule {model.rule.name!r} trains its feedback with one optimizer; pass "
                             "feedback_optimizer=<one optimizer>, not one per layer")
        if len(given) != groups:
            raise ValueError(f"compile: {len(given)} feedback optimizers for {groups} hidden layers; give one "
                             "per hidden layer, or one to be cloned for each")
        given = [keras_optimizer(o, "feedback_optimizer") for o in given]
        if isinstance(feedback, LayerwiseOptimizer) and [[id(v) for v in g] for g in feedback.variable_groups] \
                != [[id(v) for v in g] for g in model.feedback_variable_groups]:
            raise ValueError("compile: this LayerwiseOptimizer was made for other variables; pass a list of "
                             "optimizers, one per hidden layer")
        if any(o is forward for o in given):
            raise ValueError("compile: the forward optimizer is among the feedback optimizers; pass new ones")
        made = iter(given)
        return feedback_optimizers(model, lambda name: next(made))
    feedback = keras_optimizer(feedback, "feedback_optimizer")
    if per_layer:
        if feedback.built:
            raise ValueError(f"compile: rule {model.rule.name!r} trains its feedback with one optimizer per "
                             f"hidden layer, cloned from feedback_optimizer={feedback.name!r}, which already "
                             "holds state; pass a new optimizer, or a list of optimizers, one per hidden layer")
        config = feedback.get_config()
        return feedback_optimizers(model, lambda name: type(feedback).from_config({**config, "name": name}),
                                   name=config["name"])
    if feedback is forward:
        if forward.built:
            raise ValueError("compile: the same optimizer object for the forward and the feedback weights, and "
                             "it already holds state; pass feedback_optimizer=<a new optimizer>")
        feedback = type(forward).from_config(forward.get_config())  # each optimizer needs its own state
    return feedback


def loss_kind(task: str, loss) -> str:
    """'auto' (the task's loss), 'sparse', 'categorical' or 'mse'; a one-line ValueError otherwise."""
    if loss is None:
        return "auto"
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        name = getattr(getattr(loss, "fn", None), "__name__", type(loss).__name__)
        if config.get("from_logits") is False:
            raise ValueError(f"loss={type(loss).__name__}(from_logits=False) reads the outputs as probabilities, "
                             "but a TP model outputs logits (the targets live on them): pass from_logits=True "
                             f"or the name {name!r}")
        extras = {k: v for k, v in config.items() if k in ("label_smoothing", "ignore_class", "axis")
                  and v not in (0, 0.0, None, -1)}
        if extras or config.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
            raise ValueError(f"loss={type(loss).__name__}({extras or config.get('reduction')}): only the plain "
                             "loss (batch mean, no label smoothing or ignored class) has the closed-form output "
                             "error the targets are built from; drop these settings")
    elif isinstance(loss, str) or callable(loss):
        name = loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))
    else:
        name = repr(loss)
    by_task = {"classification": _CLASSIFICATION_LOSSES, "regression": _REGRESSION_LOSSES}
    if name in by_task[task]:
        return by_task[task][name]
    other = next(kind for kind in by_task if kind != task)
    if name in by_task[other]:
        raise ValueError(f"loss={name!r} is a {other} loss, but this TPModel was built with task={task!r}; "
                         f"build it with task={other!r}")
    raise ValueError(f"loss={name!r} is not supported: the output target is built from the closed-form gradient "
                     "of softmax cross-entropy on the logits ('sparse_categorical_crossentropy', "
                     "'categorical_crossentropy') or of mean squared error ('mse', task='regression')")


def keras_optimizer(optimizer, argument: str):
    if optimizer is None:
        raise ValueError(f"compile: pass {argument}= (the forward optimizer), e.g. optimizer='adam' or "
                         "optimizer=TorchAdam(3e-4)")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    try:
        return keras.optimizers.get(optimizer)
    except (ValueError, TypeError):
        raise ValueError(f"compile: {argument}={optimizer!r} is not a Keras optimizer or optimizer name (per-layer "
                         "optimizers are for step.Trainer and the launcher)") from None


def check_owns(optimizer, variables):
    """A built optimizer must hold state for these variables (else it was built for another model)."""
    if hasattr(optimizer, "variable_groups"):  # a LayerwiseOptimizer: each of its optimizers, its own group
        for part, group in zip(optimizer.optimizers, optimizer.variable_groups):
            check_owns(part, group)
        return
    if optimizer.built and any(optimizer._var_key(v) not in optimizer._trainable_variables_indices
                               for v in variables):
        raise ValueError(f"compile: optimizer {optimizer.name!r} was already built for other variables (another "
                         "model, or other trainable layers); pass a new optimizer")
