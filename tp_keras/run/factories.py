"""What both drivers build from a `Config`: the model (`build_model`), its trainer and optimizers
(`build_trainer`, `feedback_optimizer`), and the folder a process of a multi-worker run writes to
(`worker_workdir`). The single-device driver (`experiment.train_and_evaluate`) and the distributed one
(`distribute.DistributedTrainer.from_config`, which calls the same factories inside its strategy's scope) both
import this module; it imports neither."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from tp_keras.core import loop
from tp_keras.core.cnn import CNNModel
from tp_keras.core.keras_checks import is_multi_worker_strategy
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam, feedback_optimizers, layerwise_adam
from tp_keras.core.step import Trainer
from tp_keras.run.config import Config
from tp_keras.run.data import Dataset


def build_model(config: Config, dataset: Dataset) -> TPModel:
    """The model `config` trains on `dataset`: the Table 3 `CNNModel` for architecture 'cnn', else the MLP."""
    if config.architecture == "cnn":  # the Table 3 CNN on the dataset's images (NHWC, or flattened NHWC)
        return CNNModel(config.method, image_shape=dataset.image_shape, output_size=dataset.num_outputs,
                        target_stepsize=config.target_stepsize, sigma=config.sigma, seed=config.seed,
                        dtype=config.precision)
    return TPModel(config.method, input_size=int(np.prod(dataset.train.x.shape[1:])),
                   hidden_sizes=config.hidden_sizes, output_size=dataset.num_outputs,
                   target_stepsize=config.target_stepsize, sigma=config.sigma,
                   last_hidden_bias=config.last_hidden_bias, task=dataset.task, seed=config.seed,
                   size_hidden_fb=config.size_hidden_fb, recurrent_input=config.recurrent_input,
                   only_train_first_layer=config.only_train_first_layer, gn_damping=config.gn_damping_training,
                   feedback_iterations=config.feedback_iterations, dtype=config.precision)


def build_trainer(config: Config, model: TPModel) -> Trainer:
    """`model`'s `step.Trainer`: the forward TorchAdam (lr/η̂; one per layer for the CNN) and the feedback
    optimizer(s)."""
    if config.architecture == "cnn":  # one Adam per layer, lr[i]/η̂ and ε[i] (docs/semantics.md §4.5, §8)
        forward_opt = layerwise_adam(model, config.forward_learning_rate, config.beta1, config.beta2, config.epsilon,
                                     l2_decay=config.forward_wd, name="forward_adam", precision=config.precision)
    else:
        forward_opt = TorchAdam(config.forward_learning_rate, config.beta1, config.beta2, config.epsilon,
                                l2_decay=config.forward_wd, name="forward_adam", precision=config.precision)
    feedback_opt = None
    if model.feedback_variables:
        feedback_opt = feedback_optimizer(config, model)
    return Trainer(model, forward_opt, feedback_opt, jit_compile=loop.resolve_jit(config.jit_compile),
                   angle_damping=list(config.gn_damping) if config.log_angles else None)


def feedback_optimizer(config: Config, model: TPModel):
    """The feedback Adam, or one per hidden layer (each with its own step counter) for a rule that asks for
    per-layer feedback optimizers (ldrl)."""
    def adam(name):
        return TorchAdam(config.lr_fb, config.beta1_fb, config.beta2_fb, config.epsilon_fb,
                         l2_decay=config.feedback_wd, name=name, precision=config.precision)
    return feedback_optimizers(model, adam)  # the factory TPModel.compile uses too


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: TensorFlow's convention for multi-worker training (the
    'chief' task, or worker 0 when the cluster has no chief); every single-process strategy is its own chief."""
    extended = getattr(strategy, "extended", None)
    return bool(getattr(extended, "should_checkpoint", True)) if is_multi_worker_strategy(strategy) else True


def worker_workdir(trainer, workdir: str, resume: bool) -> str:
    """The folder a run writes to: `workdir` on the chief; on another worker of a multi-worker run, a temporary
    folder removed when the trainer is (TensorFlow's convention: only the chief writes summaries, metrics and
    checkpoints). With `resume`, that folder starts with a copy of the chief's checkpoint in `workdir`, which
    must then be a folder every worker sees."""
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or is_chief(strategy):
        return workdir
    scratch = tempfile.TemporaryDirectory(prefix="tp_keras_worker_")
    trainer._scratch_workdir = scratch  # removed with the trainer (or at exit)
    checkpoint = os.path.join(workdir, "checkpoint.npz")
    if resume and os.path.exists(checkpoint):
        shutil.copy(checkpoint, scratch.name)
    return scratch.name
