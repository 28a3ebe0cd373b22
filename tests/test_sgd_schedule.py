"""The L-DRL authors' optimizer side (docs/semantics.md §4.7, §4.8): PyTorch's SGD with momentum, one optimizer
per layer with its own learning rate (forward and feedback), and CosineAnnealingLR stepped after every epoch; through
the launcher's flags, its loop, its resume, and `compile`/`fit`.

The authors (ernoult/scalingDTP, target_prop/models/dtp.py and main_legacy.py): forward SGD lr 0.05, momentum 0.9,
coupled weight decay 1e-4, CosineAnnealingLR(T_max=85, eta_min=1e-5) stepped at the end of every epoch of 90;
feedback SGD momentum 0.9, no weight decay, no schedule, one optimizer per layer with lrs
(1e-4, 3.5e-4, 8e-3, 8e-3, 0.18); noise (0.4, 0.4, 0.2, 0.2, 0.08) and (20, 30, 35, 55, 20) feedback iterations."""
import dataclasses
import math

import keras
import numpy as np
import pytest

from test_bad_inputs import _one_line, command  # noqa: F401  (command: the in-process absl fixture)
from tp_keras.core.model import TPModel
from tp_keras.core.optimizers import (CosineAnnealing, LayerwiseOptimizer, TorchSGD, clones, cosine_annealing,
                                      layerwise_sgd, set_learning_rates)
from tp_keras.core.step import Trainer
from tp_keras.run import factories, schedule
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import Dataset, Split

LR, MOMENTUM, WD, T_MAX, ETA_MIN, EPOCHS = 0.05, 0.9, 1e-4, 85, 1e-5, 90
LR_FB, SIGMA, ITERATIONS = (1e-4, 3.5e-4, 8e-3, 8e-3, 0.18), (0.4, 0.4, 0.2, 0.2, 0.08), (20, 30, 35, 55, 20)
AUTHORS_FLAGS = ["--method=ldrl", "--optimizer=sgd", f"--momentum={MOMENTUM}", f"--forward_wd={WD}", f"--lr={LR}",
                 "--target_stepsize=89.6", "--nonormalize_lr", "--optimizer_fb=sgd", f"--momentum_fb={MOMENTUM}",
                 "--feedback_wd=0",
                 "--lr_fb=" + ",".join(map(str, LR_FB)), "--sigma=" + ",".join(map(str, SIGMA)),
                 "--feedback_iterations=" + ",".join(map(str, ITERATIONS)), "--lr_schedule=cosine",
                 f"--lr_schedule_epochs={T_MAX}", f"--lr_min={ETA_MIN}", f"--epochs={EPOCHS}", "--epochs_fb=0",
                 "--extra_fb_epochs=0", "--num_hidden=5", "--size_hidden=8"]


def torch_cosine_annealing_lrs(base, t_max, eta_min, epochs):
    """The rates of torch.optim.lr_scheduler.CosineAnnealingLR over `epochs` epochs, one scheduler.step() after each
    (PyTorch's get_lr, chainable form, transcribed from its source: the first epoch keeps the base rate)."""
    rates = [base]
    for last_epoch in range(1, epochs):
        lr = rates[-1]
        if (last_epoch - 1 - t_max) % (2 * t_max) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            lr = ((1 + math.cos(math.pi * last_epoch / t_max)) / (1 + math.cos(math.pi * (last_epoch - 1) / t_max))
                  * (lr - eta_min) + eta_min)
        rates.append(lr)
    return rates


def test_cosine_annealing_is_pytorchs_schedule_stepped_after_every_epoch():
    """Every epoch of the authors' 90: PyTorch's value exactly, the closed form ηmin + (η − ηmin)(1 + cos(πe/T))/2
    to rounding, the base rate first, the floor at T = 85, back up the cosine after it."""
    ours = [cosine_annealing(LR, e, T_MAX, ETA_MIN) for e in range(EPOCHS)]
    assert ours == torch_cosine_annealing_lrs(LR, T_MAX, ETA_MIN, EPOCHS)
    closed = [ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * e / T_MAX)) / 2 for e in range(EPOCHS)]
    np.testing.assert_allclose(ours, closed, rtol=1e-12, atol=0)
    assert ours[0] == LR and int(np.argmin(ours)) == T_MAX and ours[T_MAX] == pytest.approx(ETA_MIN, rel=1e-9)
    assert all(a > b for a, b in zip(ours[:T_MAX], ours[1:T_MAX + 1]))
    assert all(a < b for a, b in zip(ours[T_MAX:], ours[T_MAX + 1:]))
    schedule_fn = CosineAnnealing(LR, T_MAX, ETA_MIN)
    assert [schedule_fn(e, 123.0) for e in range(EPOCHS)] == ours  # the current rate does not matter
    with pytest.raises(ValueError, match="^CosineAnnealing: t_max=0 must be a whole number of epochs >= 1"):
        CosineAnnealing(LR, 0)


def test_per_layer_learning_rates_reach_their_layer():
    """layerwise_sgd: each layer's step is −lr_i·buf_i, buf_i = g + wd·w at the first step and μ·buf + g + wd·w
    after (PyTorch's SGD, one parameter group per layer), with lr_i the layer's own rate; a learning rate set per
    optimizer (the launcher's schedule) reaches its layer only."""
    model = TPModel("bp", 5, [4, 3], 2, seed=1, dtype="float64")
    rates, wd = [0.1, 0.2, 0.4], 1e-2
    opt = layerwise_sgd(model, rates, MOMENTUM, l2_decay=wd, precision="float64")
    assert isinstance(opt, LayerwiseOptimizer) and [o.name for o in opt.optimizers] == [
        "forward_sgd_1", "forward_sgd_2", "forward_sgd_3"]
    opt.build(model.forward_variables)
    groups = [layer.forward_variables for layer in model.tp_layers]
    rng = np.random.default_rng(0)
    buffers = [[None] * len(g) for g in groups]
    for step in range(2):
        if step == 1:
            rates = [0.05, 0.2, 0.3]
            set_learning_rates(opt, rates)
        before = [[v.numpy().copy() for v in g] for g in groups]
        grads = [[rng.normal(size=v.shape) for v in g] for g in groups]
        opt.apply_gradients([(keras.ops.convert_to_tensor(gr), v) for g, gs in zip(groups, grads)
                             for gr, v in zip(gs, g)])
        for i, (g, gs) in enumerate(zip(groups, grads)):
            for j, (v, gr) in enumerate(zip(g, gs)):
                decayed = gr + wd * before[i][j]
                buffers[i][j] = decayed if buffers[i][j] is None else buffers[i][j] * MOMENTUM + decayed
                np.testing.assert_array_equal(v.numpy(), before[i][j] - rates[i] * buffers[i][j])


def _parse(flags):
    from tp_keras.run import launch
    launch.FLAGS(["launch", *flags])
    try:
        return launch.config_from_flags().validate()
    finally:
        launch.FLAGS.unparse_flags()


def _dataset(n=48, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (np.arange(n) % classes).astype("int32")
    x[np.arange(n), y] += 2.0  # learnable
    split = Split(x, y)
    return Dataset("mnist", split, None, Split(x[:16], y[:16]), classes, "classification", (d,))


def test_the_authors_flags_build_their_optimizers_noise_and_iterations():
    """The launcher's flags → the trainer: forward TorchSGD (lr 0.05 unnormalised, μ 0.9, coupled wd 1e-4), one
    feedback TorchSGD per hidden layer with its own lr (μ 0.9, no decay), the per-layer σ and K on the rule, and
    the cosine rate of every epoch (1-based in the launcher) from the schedule."""
    config = _parse(AUTHORS_FLAGS)
    model = factories.build_model(config, _dataset())
    trainer = factories.build_trainer(config, model)
    forward, feedback = trainer.forward_optimizer, trainer.feedback_optimizer
    assert isinstance(forward, TorchSGD) and (forward.momentum, forward.l2_decay) == (MOMENTUM, WD)
    assert float(forward.learning_rate.numpy()) == np.float32(LR)
    assert isinstance(feedback, LayerwiseOptimizer) and len(feedback.optimizers) == 5
    assert all(isinstance(o, TorchSGD) and (o.momentum, o.l2_decay) == (MOMENTUM, 0.0) for o in feedback.optimizers)
    assert [float(o.learning_rate.numpy()) for o in feedback.optimizers] == [float(np.float32(v)) for v in LR_FB]
    assert [[id(v) for v in g] for g in feedback.variable_groups] == [
        [id(v) for v in g] for g in model.feedback_variable_groups]
    assert model.rule.sigma == SIGMA and model.rule.feedback_iterations == ITERATIONS
    assert [schedule.forward_learning_rates(config, e + 1) for e in range(EPOCHS)] == \
        torch_cosine_annealing_lrs(LR, T_MAX, ETA_MIN, EPOCHS)
    # Per-layer forward rates on an MLP (one per layer, hidden layers then output), scheduled layer by layer.
    per_layer = _parse(AUTHORS_FLAGS + ["--lr=0.1,0.1,0.1,0.1,0.1,0.2"])
    forward = factories.build_trainer(per_layer, factories.build_model(per_layer, _dataset())).forward_optimizer
    assert [float(o.learning_rate.numpy()) for o in forward.optimizers] == [float(np.float32(v)) for v in
                                                                          per_layer.lr]
    assert schedule.forward_learning_rates(per_layer, 2) == tuple(cosine_annealing(v, 1, T_MAX, ETA_MIN)
                                                                  for v in per_layer.lr)


@pytest.mark.parametrize("flags,starts", [
    (["--method=ldrl", "--momentum=0.9"], "--momentum: 0.9 is SGD's momentum, unused by --optimizer=adam; add "
                                          "--optimizer=sgd"),
    (["--method=ldrl", "--optimizer_fb=sgd", "--momentum_fb=1"], "--momentum_fb: 1.0 is outside [0, 1)"),
    (["--method=ldrl", "--optimizer=sgd", "--beta1=0.8"], "--beta1: 0.8 is Adam's setting, unused by "
                                                          "--optimizer=sgd; drop the flag"),
    (["--method=ldrl", "--optimizer_fb=sgd", "--epsilon_fb=1e-6"], "--epsilon_fb: 1e-06 is Adam's setting"),
    (["--method=dtpdrl", "--lr_fb=1e-4,2e-4"], "--lr_fb: 2 values given; dtpdrl trains its feedback with one "
                                               "optimizer"),
    (["--method=ldrl", "--lr_fb=1e-4,2e-4"], "--lr_fb: 2 values given; give one value or one per hidden layer (5)"),
    (["--method=bp", "--optimizer_fb=sgd"], "--optimizer_fb: sgd is not used by bp"),
    (["--method=ldrl", "--lr_min=1e-5"], "--lr_min: 1e-05 sets the cosine schedule, which is off; add "
                                         "--lr_schedule=cosine"),
    (["--method=ldrl", "--lr_schedule=cosine", "--lr_schedule_epochs=0"], "--lr_schedule_epochs: 0 must be between"),
    (["--method=ldrl", "--lr=1e-4,1e-4"], "--lr: 2 values given; this MLP takes one value or one per layer (6"),
])
def test_bad_optimizer_and_schedule_flags_are_refused_in_one_line(flags, starts):
    with pytest.raises(ConfigError) as err:
        _parse(flags)
    assert str(err.value).startswith(starts) and "\n" not in str(err.value)


def test_cosine_period_defaults_to_the_epochs_and_is_recorded():
    """Without --lr_schedule_epochs the period is --epochs, written into the config (config.json, the checkpoint),
    so that resuming with more epochs cannot silently stretch the schedule."""
    config = _parse(["--method=ldrl", "--lr_schedule=cosine", "--epochs=7"])
    assert config.lr_schedule_epochs == 7
    assert Config.paper("ldrl", epochs=7).validate().lr_schedule_epochs is None


def _ldrl_model():
    return TPModel("ldrl", 6, [5, 4], 3, seed=5, dtype="float64", sigma=(0.4, 0.2), feedback_iterations=(1, 2))


@pytest.mark.slow
def test_compile_with_per_layer_sgd_and_the_cosine_callback_trains_as_the_launcher():
    """fit (compile's TorchSGD, feedback `clones` with per-layer rates, keras' LearningRateScheduler with
    CosineAnnealing) and step.Trainer with the launcher's optimizers (factories.build_trainer from the same
    settings, rates set by schedule.forward_learning_rates before every epoch) give the same weights, bit for bit,
    after 3 epochs of 3 batches, and fit logs the cosine rate of every epoch."""
    dataset = _dataset()
    x, y = dataset.train.x, dataset.train.y
    settings = dict(lr=LR, t_max=2, eta_min=1e-3, lr_fb=(1e-3, 2e-3))
    by_fit = _ldrl_model()
    by_fit.compile(optimizer=TorchSGD(LR, momentum=MOMENTUM, l2_decay=WD, precision="float64"),
                   feedback_optimizer=clones(TorchSGD(momentum=MOMENTUM, precision="float64"), 2,
                                             learning_rate=settings["lr_fb"]))
    scheduler = keras.callbacks.LearningRateScheduler(CosineAnnealing(LR, settings["t_max"], settings["eta_min"]))
    before = [v.numpy().copy() for v in by_fit.weights]
    history = by_fit.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[scheduler])

    config = Config(method="ldrl", num_hidden=2, optimizer="sgd", momentum=MOMENTUM, forward_wd=WD, lr=LR,
                    normalize_lr=False, optimizer_fb="sgd", momentum_fb=MOMENTUM, lr_fb=settings["lr_fb"],
                    feedback_wd=0.0, lr_schedule="cosine", lr_schedule_epochs=settings["t_max"],
                    lr_min=settings["eta_min"], epochs=3, precision="float64").validate()
    by_loop = _ldrl_model()
    trainer = factories.build_trainer(config, by_loop)
    for epoch in range(1, 4):
        set_learning_rates(trainer.forward_optimizer, schedule.forward_learning_rates(config, epoch))
        for i in range(0, len(x), 16):
            trainer.train_step(x[i:i + 16], y[i:i + 16])
    expected_rates = [cosine_annealing(LR, e, settings["t_max"], settings["eta_min"]) for e in range(3)]
    assert history.history["learning_rate"] == expected_rates
    for a, b in zip(by_fit.weights, by_loop.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not all(np.array_equal(a.numpy(), s) for a, s in zip(by_fit.weights, before))


@pytest.mark.slow
def test_resume_mid_run_with_sgd_momentum_and_cosine_is_bit_identical(tmp_path):
    """train_and_evaluate: 3 epochs at once, and 2 epochs then --resume to 3, give the same checkpoint (weights,
    momentum buffers, step counters, learning rates) and the same metrics; the rates of the 3 epochs differ."""
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.run.rundir import read_checkpoint
    dataset = _dataset()
    config = _parse(AUTHORS_FLAGS[:-2] + ["--num_hidden=2", "--size_hidden=6", "--lr_fb=1e-3,2e-3",
                                          "--sigma=0.4,0.2", "--feedback_iterations=1,2", "--epochs=3",
                                          "--lr_schedule_epochs=3", "--batch_size=16", "--noprogress"])

    def run(workdir, epochs, resume=False):
        train_and_evaluate(dataclasses.replace(config, epochs=epochs), str(workdir), dataset, resume=resume)
        return read_checkpoint(str(workdir / "checkpoint.npz"))

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "parts", 2)
    parts = run(tmp_path / "parts", 3, resume=True)
    assert whole[0]["epoch"] == parts[0]["epoch"] == 3
    assert len(whole[0]["names"]) == len(parts[0]["names"])  # (the names hold each model's instance number)
    assert any("momentum_buffer" in name for name in whole[0]["names"])
    for key in whole[1]:
        np.testing.assert_array_equal(whole[1][key], parts[1][key], err_msg=key)
    strip = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in whole[0]["history"]]
    assert strip == [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in parts[0]["history"]]
    rates = [schedule.forward_learning_rates(config, e) for e in (1, 2, 3)]
    assert [row["learning_rate"] for row in whole[0]["history"]] == rates and len(set(rates)) == 3


def test_a_run_written_before_the_optimizer_settings_existed_resumes_as_adam_without_schedule():
    """check_same_run: a config.json without the optimizer and schedule keys is a run with their defaults (Adam, no
    momentum, no schedule), so it resumes unchanged, and one with other values is refused by name."""
    from tp_keras.run.checkpoint import check_same_run
    config = Config.paper("dtpdrl").validate()
    saved = dataclasses.asdict(config)
    new_keys = ("optimizer", "momentum", "optimizer_fb", "momentum_fb", "lr_schedule", "lr_schedule_epochs", "lr_min")
    check_same_run("old/checkpoint.npz", {k: v for k, v in saved.items() if k not in new_keys}, None, config, None)
    with pytest.raises(ConfigError, match=r"^--resume: old/checkpoint.npz was written with optimizer='sgd', this "
                                          r"run has 'adam'"):
        check_same_run("old/checkpoint.npz", {**saved, "optimizer": "sgd"}, None, config, None)


def test_per_layer_forward_optimizers_under_a_strategy_are_refused_in_one_line(command, mnist_dir, tmp_path):
    from tp_keras.run import launch
    status, lines = command(launch.main, ["--method=dtpdrl", "--num_hidden=2", "--lr=1e-4,2e-4,3e-4",
                                          "--strategy=one_device", f"--data_dir={mnist_dir}",
                                          f"--workdir={tmp_path / 'run'}"])
    _one_line(status, lines, starts="--strategy: one forward optimizer per layer (--lr or --epsilon given per layer) "
                                    "runs on one device")
    assert not (tmp_path / "run").exists()


def test_feedback_scheduler_refuses_per_layer_feedback_rates_it_would_flatten():
    """FeedbackLearningRateScheduler sets one rate; on per-layer feedback rates it would set them all alike, so fit
    refuses it in one line before the first epoch (with equal rates it schedules them all)."""
    from tp_keras.core.callbacks import FeedbackLearningRateScheduler
    x, y = _dataset(n=16).train.x, _dataset(n=16).train.y
    model = _ldrl_model()
    model.compile(optimizer=TorchSGD(LR, precision="float64"),
                  feedback_optimizer=clones(TorchSGD(precision="float64"), 2, learning_rate=[1e-3, 2e-3]))
    with pytest.raises(ValueError, match="^FeedbackLearningRateScheduler: the feedback optimizers have one learning "
                                         "rate per hidden layer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[FeedbackLearningRateScheduler(lambda epoch, lr: lr / 2)])
    assert [int(o.iterations.numpy()) for o in model.feedback_optimizer.optimizers] == [0, 0]
