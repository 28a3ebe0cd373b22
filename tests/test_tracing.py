"""The compiled steps are traced without autograph (tp_keras/core/step.py: Trainer), which cuts most of the first
trace's time: the graphs must be exactly the ones autograph builds, node for node, so every result stays
bit-identical."""
import pytest
import tensorflow as tf

from conftest import STEP_METHODS
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam
from tp_keras.core.rules import RULES
from tp_keras.core.step import Trainer

# Attributes that name per-process registrations (a custom gradient's counter, a nested function's or a while
# loop's body and condition's unique name), not computation.
_NAMING_ATTRS = ("_gradient_op_type", "f", "body", "cond")


def _nodes(concrete):
    return [(n.name, n.op, list(n.input), sorted((k, str(v)) for k, v in n.attr.items() if k not in _NAMING_ATTRS))
            for n in concrete.graph.as_graph_def().node]


def _steps(method, dtype):
    kwargs = dict(size_hidden_fb=9) if method == "ddtp_rhl" else {}
    model = TPModel(method, 7, [6, 5, 4], 3, seed=3, dtype=dtype, **kwargs,
                    **RULES[method].used(target_stepsize=0.2, sigma=0.05))
    trainer = Trainer(model, TorchAdam(1e-2, precision=dtype),
                      TorchAdam(1e-2, precision=dtype) if model.feedback_variables else None,
                      angle_damping=None if model.rule.batch_dependent else 0.1)  # fw_dtp_bn refuses angles
    steps = {"train": trainer.train_step, "eval": trainer.eval_step}
    if trainer.angle_step is not None:
        steps["angle"] = trainer.angle_step
    if trainer.trains_feedback:
        steps["feedback"] = trainer.feedback_step
    return steps


def _assert_same_graphs_as_autograph(method, dtype, batch_shapes=(8, None)):
    for name, step in _steps(method, dtype).items():
        with_autograph = tf.function(step.python_function, autograph=True, reduce_retracing=True)
        for rows in batch_shapes:  # a full batch and the relaxed shape of a pass's smaller last batch
            specs = (tf.TensorSpec([rows, 7], dtype), tf.TensorSpec([rows], tf.int32))
            assert _nodes(step.get_concrete_function(*specs)) == _nodes(
                with_autograph.get_concrete_function(*specs)), (method, dtype, name, rows)


@pytest.mark.parametrize("method", ["dtpdrl"])  # the fast tier's representative; every method is in the slow test below
def test_steps_traced_without_autograph_are_autographs_graphs(method):
    _assert_same_graphs_as_autograph(method, "float32", batch_shapes=(8,))


# Every method in float64 and at the relaxed batch shape only: autograph converts Python code, which is the same
# code in either precision and at any batch size (the dtype and the shape only reach the tensors), so float32 or the
# full batch for all of them would repeat the same conversion at twice the cost; float32 at the full batch is
# covered by dtpdrl above, and both shapes in float32 by ddtp_control here.
@pytest.mark.slow
@pytest.mark.parametrize("method, dtype, batch_shapes", [(m, "float64", (None,)) for m in STEP_METHODS]
                         + [("ddtp_control", "float32", (8, None)), ("ddtp_control", "float64", (8,))])
def test_steps_traced_without_autograph_are_autographs_graphs_for_every_method(method, dtype, batch_shapes):
    _assert_same_graphs_as_autograph(method, dtype, batch_shapes)
