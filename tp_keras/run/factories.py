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
from tp_keras.core.conv_networks import ConvChainNetwork
from tp_keras.core.keras_checks import is_multi_worker_strategy
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import TorchAdam, TorchSGD, feedback_optimizers, layerwise
from tp_keras.core.rules import get_rule
from tp_keras.core.step import Trainer
from tp_keras.run.config import Config
from tp_keras.run.data import Dataset


def build_model(config: Config, dataset: Dataset) -> TPModel:
    """The model `config` trains on `dataset`: the Table 3 `CNNModel` for architecture 'cnn', a `ConvChainNetwork`
    of config.conv_layer_specs on the dataset's images for 'conv', else the MLP."""
    if config.architecture == "cnn":  # the Table 3 CNN on the dataset's images (NHWC, or flattened NHWC)
        return CNNModel(config.method, image_shape=dataset.image_shape, output_size=dataset.num_outputs,
                        target_stepsize=config.target_stepsize, sigma=config.sigma, seed=config.seed,
                        dtype=config.precision)
    if config.architecture == "conv":
        network = ConvChainNetwork(get_rule(config.method), dataset.image_shape,
                                   config.conv_layer_specs(dataset.num_outputs), conv_loss=config.conv_loss,
                                   init=config.init, seed=config.seed, dtype=config.precision)
        return TPModel(config.rule, network=network, target_stepsize=config.target_stepsize, sigma=config.sigma,
                       feedback_iterations=config.feedback_iterations, task=dataset.task, seed=config.seed,
                       dtype=config.precision)
    rule = config.rule
    settings = dict(target_stepsize=config.target_stepsize, sigma=config.sigma, size_hidden_fb=config.size_hidden_fb,
                    recurrent_input=config.recurrent_input, gn_damping=config.gn_damping_training,
                    feedback_iterations=config.feedback_iterations)
    if rule is not get_rule(config.method):  # --output_batch_norm: TPModel accepts and drops a method's unused paper
        settings = rule.used(**settings)     # values for the registry's rule only, so pass just the used ones
    return TPModel(rule, input_size=int(np.prod(dataset.train.x.shape[1:])),
                   hidden_sizes=config.hidden_sizes, output_size=dataset.num_outputs,
                   last_hidden_bias=config.last_hidden_bias, task=dataset.task, seed=config.seed,
                   only_train_first_layer=config.only_train_first_layer, dtype=config.precision, **settings)


def build_trainer(config: Config, model: TPModel) -> Trainer:
    """`model`'s `step.Trainer`: the forward optimizer (`forward_optimizer`) and the feedback optimizer(s)
    (`feedback_optimizer`)."""
    feedback_opt = None
    if model.feedback_variables:
        feedback_opt = feedback_optimizer(config, model)
    return Trainer(model, forward_optimizer(config, model), feedback_opt,
                   jit_compile=loop.resolve_jit(config.jit_compile),
                   angle_damping=list(config.gn_damping) if config.log_angles else None)


def forward_optimizer(config: Config, model: TPModel):
    """The forward optimizer: `--optimizer` (PyTorch-semantics Adam or SGD) at `config.forward_learning_rate`
    (lr/η̂ where the reference normalises). One per layer (`optimizers.layerwise`) for the CNN and for per-layer
    learning rates, the conv chain's included (docs/semantics.md §4.5, §4.7); one over every forward weight
    otherwise."""
    name = f"forward_{config.optimizer}"
    if config.optimizer == "sgd":
        def make(**values):
            return TorchSGD(momentum=config.momentum, l2_decay=config.forward_wd, name=name,
                            precision=config.precision, **values)
        per_layer = {"learning_rate": config.forward_learning_rate}
    else:
        def make(**values):
            return TorchAdam(beta_1=config.beta1, beta_2=config.beta2, l2_decay=config.forward_wd, name=name,
                             precision=config.precision, **values)
        per_layer = {"learning_rate": config.forward_learning_rate, "epsilon": config.epsilon}
    if config.architecture == "cnn" or any(isinstance(v, tuple) for v in per_layer.values()):
        return layerwise(model, make(), **per_layer)
    return make(**per_layer)


def feedback_optimizer(config: Config, model: TPModel):
    """The feedback optimizer: `--optimizer_fb` (PyTorch-semantics Adam or SGD) at `--lr_fb`, or one per hidden
    layer (each with its own step counter, and its own learning rate when --lr_fb gives one per hidden layer) for
    a rule that asks for per-layer feedback optimizers (ldrl)."""
    def make(name, learning_rate):
        if config.optimizer_fb == "sgd":
            return TorchSGD(learning_rate, momentum=config.momentum_fb, l2_decay=config.feedback_wd, name=name,
                            precision=config.precision)
        return TorchAdam(learning_rate, config.beta1_fb, config.beta2_fb, config.epsilon_fb,
                         l2_decay=config.feedback_wd, name=name, precision=config.precision)
    # the factory TPModel.compile uses too
    return feedback_optimizers(model, make, name=f"feedback_{config.optimizer_fb}", learning_rates=config.lr_fb)


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
