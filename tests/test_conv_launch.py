"""The launcher's conv chain (--architecture=conv, a ConvChainNetwork), its training-set augmentation
(--augment=crop_flip) and the conv flagfiles (launch/cifar10_LDRL_vgg.flags, launch/fashion_mnist_conv_*.flags):
the flags build exactly the network they describe, the augmentation is torchvision's flip-then-edge-padded-crop
(checked against a NumPy transcription of the authors' transform) drawn from (seed, pass), a conv run resumes
bit-identically, the VGG flagfile runs end to end, and every misuse is refused in one line naming the flag."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from test_bad_inputs import _one_line, command  # noqa: F401  (command: the in-process absl fixture)
from tp_keras.run import config as config_module
from tp_keras.run.config import Config, ConfigError
from tp_keras.run.data import CROP_PADDING, Dataset, Split, crop_flip, crop_flip_draws

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
LAUNCH_DIR = os.path.join(ROOT, "launch")
VGG = "cifar10_LDRL_vgg"
FASHION = sorted(f[:-len(".flags")] for f in os.listdir(LAUNCH_DIR) if f.startswith("fashion_mnist_conv_"))
# The L-DRL authors' VGG and settings (ernoult/scalingDTP, target_prop/models/dtp.py and networks/simple_vgg.py),
# written out here rather than read back from the flagfile.
VGG_CHANNELS = (128, 128, 256, 256, 512)
VGG_SIGMA = (0.4, 0.4, 0.2, 0.2, 0.08)
VGG_ITERATIONS = (20, 30, 35, 55, 20)
VGG_LR_FB = (1e-4, 3.5e-4, 8e-3, 8e-3, 0.18)


def _parse(*argv, flagfile=None):
    from tp_keras.run import launch
    launch.FLAGS(["launch"] + ([f"--flagfile={os.path.join(LAUNCH_DIR, flagfile + '.flags')}"] if flagfile else [])
                 + list(argv))
    try:
        return launch.config_from_flags().validate()
    finally:
        launch.FLAGS.unparse_flags()


def _images(n, shape, classes=10, seed=0, dtype="float32"):
    """NHWC images with a learnable class signal, as a Dataset of `shape` images."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype(dtype)
    y = (np.arange(n) % classes).astype("int32")
    x[np.arange(n), 0, 0, 0] += 3.0 * y  # learnable
    split = Split(x, y)
    return Dataset("fashion_mnist" if shape[-1] == 1 else "cifar10", split, None, Split(x[:8], y[:8]), classes,
                   "classification", shape)


# --- the choices Config writes out agree with the core's --------------------------------------------------------

def test_config_choices_are_the_conv_chains():
    from tp_keras.core import conv_layers, conv_networks, layers
    assert set(config_module.CONV_POOLINGS) == set(conv_layers.POOLINGS) - {"max_3x3_s2"}  # the CNN's pooling
    assert config_module.CONV_KERNEL_SIZES == conv_layers.KERNEL_SIZES
    assert set(config_module.CONV_ACTIVATIONS) == set(layers.ACTIVATIONS) - {"linear"}
    assert config_module.INITS == conv_networks.INITS and config_module.CONV_LOSSES == conv_networks.CONV_LOSSES


@pytest.mark.parametrize("name", [VGG] + FASHION)
def test_conv_flagfile_headers(name):
    """Header first (what it reproduces, the paper's number or why none, the setting, the cost, the command), then
    one flag per line, naming its cell."""
    with open(os.path.join(LAUNCH_DIR, name + ".flags"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[:len(header)] == header and lines[0].startswith(f"# {name}: ")
    assert all(line.startswith("--") for line in lines[len(header):])
    comment = " ".join(line[2:].strip() for line in header)
    for part in ("Paper: ", "Setting: ", "Cost: ", "s/batch"):
        assert part in comment, (name, part)
    assert any(line.startswith(f"# Run: python -m tp_keras.launch --flagfile=launch/{name}.flags --data_dir=")
               for line in header)
    assert f"--cell={name}" in lines


# --- the flags build the network they describe ------------------------------------------------------------------

@pytest.mark.slow  # (two 4.7M-parameter VGGs: ~5 s)
def test_the_vgg_flagfile_builds_the_authors_network_rule_and_optimizers():
    """launch/cifar10_LDRL_vgg.flags → build_model equals, weight for weight, the ConvChainNetwork built here
    from the authors' description (5 blocks 3×3 ELU max-pool, linear output, torch init, summed losses) with the
    same seed; the rule carries their per-layer σ, feedback steps and β·B; the optimizers are their SGDs."""
    from tp_keras.core.conv_layers import TPConvBlock
    from tp_keras.core.conv_networks import ConvChainNetwork
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchSGD
    from tp_keras.core.rules import get_rule
    from tp_keras.run.factories import build_model, build_trainer
    config = _parse(flagfile=VGG)
    assert (config.method, config.dataset, config.architecture, config.augment) == ("ldrl", "cifar10", "conv",
                                                                                    "crop_flip")
    dataset = _images(2, (32, 32, 3))
    model = build_model(config, dataset)
    specs = [{"filters": c, "kernel_size": 3, "activation": "elu", "pooling": "max"} for c in VGG_CHANNELS]
    expected = TPModel("ldrl", network=ConvChainNetwork(get_rule("ldrl"), (32, 32, 3), specs + [{"units": 10}],
                                                        init="torch", conv_loss="sum", seed=config.seed))
    assert isinstance(model.network, ConvChainNetwork) and model.network.init == "torch"
    assert model.network.get_config() == expected.network.get_config()
    blocks = model.tp_layers[:-1]
    assert all(isinstance(b, TPConvBlock) for b in blocks) and not isinstance(model.tp_layers[-1], TPConvBlock)
    assert [b.filters for b in blocks] == list(VGG_CHANNELS)
    assert [b.output_image_shape for b in blocks] == [(16, 16, 128), (8, 8, 128), (4, 4, 256), (2, 2, 256),
                                                      (1, 1, 512)]
    assert [tuple(v.shape) for v in model.tp_layers[-1].forward_variables] == [(512, 10), (10,)]
    assert len(model.variables) == len(expected.variables)
    for a, b in zip(model.variables, expected.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # torch init: U(±1/√fan_in) kernels and biases (fan_in = 3·3·C_in), so the biases are not Xavier's zeros.
    first = blocks[0]
    bound = 1 / np.sqrt(9 * 3)
    assert np.abs(first.kernel.numpy()).max() <= bound and np.abs(first.bias.numpy()).max() > 0
    rule = model.rule
    assert tuple(rule.sigma) == VGG_SIGMA and tuple(rule.feedback_iterations) == VGG_ITERATIONS
    assert rule.target_stepsize == pytest.approx(0.7 * 128, rel=0, abs=1e-12)
    trainer = build_trainer(config, model)
    assert isinstance(trainer.forward_optimizer, TorchSGD)  # one SGD: one rate for every layer
    assert float(trainer.forward_optimizer.learning_rate) == pytest.approx(0.05)  # --nonormalize_lr
    fb = trainer.feedback_optimizer.optimizers
    assert len(fb) == len(VGG_LR_FB) and all(isinstance(o, TorchSGD) for o in fb)
    assert [float(o.learning_rate) for o in fb] == pytest.approx(list(VGG_LR_FB))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("LDRL") else n
                                  for n in FASHION])  # (ldrl's three feedback steps per batch: ~4 s)
def test_fashion_mnist_conv_flagfiles_build_their_net_and_take_a_training_step(name):
    """Each Fashion-MNIST conv flagfile: its method, the shared 32-32-64-64 net (pooling after blocks 2 and 4,
    28 → 14 → 7), and one eager training step on 4 images in which every forward layer moves and stays finite."""
    from tp_keras.core import step
    from tp_keras.run.factories import build_model, build_trainer
    config = _parse(flagfile=name)
    assert (config.dataset, config.epochs, config.seed, config.conv_channels) == ("fashion_mnist", 10, 42,
                                                                                   (32, 32, 64, 64))
    dataset = _images(4, (28, 28, 1))
    model = build_model(config, dataset)
    assert [b.output_image_shape for b in model.tp_layers[:-1]] == [(28, 28, 32), (14, 14, 32), (14, 14, 64),
                                                                    (7, 7, 64)]
    trainer = build_trainer(config, model)
    before = [v.numpy().copy() for v in model.forward_variables]
    out = step.train_step(model, trainer.forward_optimizer, trainer.feedback_optimizer, dataset.train.x,
                          dataset.train.y)
    assert np.isfinite(float(out["loss"]))
    kernels = [layer.forward_variables[0] for layer in model.tp_layers]
    moved = {v.path for v, b in zip(model.forward_variables, before) if not np.array_equal(v.numpy(), b)}
    assert all(k.path in moved for k in kernels), name
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)


def test_pooling_per_block_and_dense_layers_reach_the_network():
    from tp_keras.run.factories import build_model
    config = _parse("--method=bp", "--dataset=fashion_mnist", "--architecture=conv", "--conv_channels=3,4",
                    "--conv_pooling=average,none", "--conv_kernel_size=5", "--conv_activation=tanh",
                    "--conv_dense=7,5", "--conv_loss=mean")
    assert config.conv_layer_specs(10) == [
        {"filters": 3, "kernel_size": 5, "activation": "tanh", "pooling": "average"},
        {"filters": 4, "kernel_size": 5, "activation": "tanh", "pooling": "none"},
        {"units": 7, "activation": "tanh"}, {"units": 5, "activation": "tanh"}, {"units": 10, "activation": "linear"}]
    model = build_model(config, _images(2, (28, 28, 1)))
    assert model.network.layer_specs[:4] == [{**s, "use_bias": True} for s in config.conv_layer_specs(10)[:4]]
    assert model.hidden_sizes == [14 * 14 * 3, 14 * 14 * 4, 7, 5]
    assert model.network.local_loss_scales == [1 / (14 * 14 * 3), 1 / (14 * 14 * 4), 1.0, 1.0, 1.0]


# --- augmentation -----------------------------------------------------------------------------------------------

def _authors_transform(image, top, left, flip):
    """torchvision's RandomHorizontalFlip then RandomCrop(size, padding=4, padding_mode='edge') on one HWC image,
    with the crop's top-left corner (top, left) in the padded image and the flip decided."""
    if flip:
        image = image[:, ::-1]
    padded = np.pad(image, ((CROP_PADDING, CROP_PADDING), (CROP_PADDING, CROP_PADDING), (0, 0)), mode="edge")
    return padded[top:top + image.shape[0], left:left + image.shape[1]]


def test_crop_flip_is_the_authors_transform_drawn_from_the_seed_and_pass():
    images = np.random.default_rng(1).normal(size=(200, 9, 7, 2))
    rows, cols, flips = crop_flip_draws(seed=5, pass_index=3, n=len(images))
    out = crop_flip(images, rows, cols, flips)
    for i in range(len(images)):
        np.testing.assert_array_equal(out[i], _authors_transform(images[i], rows[i], cols[i], flips[i]))
    # Every offset of 0..8 and both flip outcomes occur; draws repeat for (seed, pass) and change with either.
    assert set(rows) == set(cols) == set(range(2 * CROP_PADDING + 1)) and 0 < flips.sum() < len(flips)
    again = crop_flip_draws(5, 3, len(images))
    assert all(np.array_equal(a, b) for a, b in zip(again, (rows, cols, flips)))
    for other in (crop_flip_draws(5, 4, len(images)), crop_flip_draws(6, 3, len(images))):
        assert not np.array_equal(other[0], rows)
    # The identity draw (centre crop, no flip) returns the images.
    centre = np.full(len(images), CROP_PADDING)
    np.testing.assert_array_equal(crop_flip(images, centre, centre, np.zeros(len(images), bool)), images)


def test_the_launchers_passes_augment_the_shuffled_copy_on_the_device():
    """passes.Batches with augment='crop_flip': pass p's data are the pass's permutation of the training set,
    transformed with pass p's draws (NumPy), exactly; without augmentation the same permutation, untouched."""
    from tp_keras.run.passes import Batches
    dataset = _images(20, (6, 5, 3))
    plain, augmented = Batches(dataset.train, 4, seed=9), Batches(dataset.train, 4, seed=9, augment="crop_flip")
    for p in range(2):
        (x_plain, y_plain), (x_aug, y_aug) = plain.permuted(), augmented.permuted()
        perm = np.random.default_rng([9, p]).permutation(20)
        np.testing.assert_array_equal(x_plain.numpy(), dataset.train.x[perm])
        np.testing.assert_array_equal(y_aug.numpy(), y_plain.numpy())
        expected = crop_flip(dataset.train.x[perm], *crop_flip_draws(9, p, 20))
        np.testing.assert_array_equal(x_aug.numpy(), expected)
        assert not np.array_equal(x_aug.numpy(), x_plain.numpy())


# --- refusals ---------------------------------------------------------------------------------------------------

CONV = ["--dataset=fashion_mnist", "--architecture=conv", "--conv_channels=4,4"]


@pytest.mark.parametrize("argv, starts", [
    (["--method=bp", "--conv_channels=8"], "--conv_channels: 8 sets the conv chain, which --architecture=mlp"),
    (["--method=bp", "--init=torch"], "--init: torch sets the conv chain, which --architecture=mlp"),
    (["--method=bp", "--architecture=cnn", "--dataset=cifar10", "--conv_loss=mean"],
     "--conv_loss: mean sets the conv chain, which --architecture=cnn"),
    (["--method=bp", "--dataset=fashion_mnist", "--architecture=conv"], "--conv_channels: the conv chain needs"),
    (["--method=gnt", *CONV], "--method: gnt has no conv chain"),
    (["--method=ddtp_rhl", *CONV], "--method: ddtp_rhl has no conv chain"),
    (["--method=bp", "--dataset=student_teacher", "--architecture=conv", "--conv_channels=4"],
     "--dataset: the conv chain needs images"),
    (["--method=bp", *CONV, "--num_hidden=3"], "--num_hidden: 3 sets the MLP"),
    (["--method=bp", *CONV, "--size_hidden=64"], "--size_hidden: 64 sets the MLP"),
    (["--method=bp", *CONV, "--log_angles"], "--log_angles: an MLP setting"),
    (["--method=bp", *CONV, "--conv_kernel_size=4"], "--conv_kernel_size: 4 is not supported"),
    (["--method=bp", *CONV, "--conv_pooling=max,max,max"], "--conv_pooling: 3 values given"),
    (["--method=bp", *CONV, "--conv_pooling=max_3x3_s2"], "--conv_pooling: 'max_3x3_s2' is not supported"),
    (["--method=bp", "--dataset=fashion_mnist", "--architecture=conv", "--conv_channels=2,2,2,2,2"],
     "--conv_pooling: block 5's 2×2 pooling leaves no pixel"),
    (["--method=bp", *CONV, "--conv_channels=4,0"], "--conv_channels: 0 must be between 1"),
    (["--method=bp", *CONV, "--conv_dense=x"], "--conv_dense: 'x' is not a comma-separated list"),
    (["--method=bp", *CONV, "--lr=1e-3,1e-3"], "--lr: 2 values given; this conv chain takes one value or one per "
                                              "layer (3: the 2 conv blocks, 0 dense hidden layers"),
    (["--method=ldrl", *CONV, "--lr_fb=1e-3,1e-3,1e-3"], "--lr_fb: 3 values given; give one value or one per hidden "
                                                        "layer (2)"),
    (["--method=bp", "--augment=crop_flip"], "--augment: crop_flip transforms images; --architecture=mlp"),
])
def test_misuse_is_refused_in_one_line_naming_the_flag(argv, starts):
    with pytest.raises(ConfigError) as err:
        _parse(*argv)
    assert str(err.value).startswith(starts), str(err.value)
    assert "\n" not in str(err.value)


def test_the_conv_chain_and_augmentation_refuse_a_strategy(command, tmp_path):
    from tp_keras.run import launch
    status, lines = command(launch.main, ["--method=bp", *CONV, "--strategy=one_device",
                                          f"--workdir={tmp_path / 'run'}"])
    _one_line(status, lines, starts="--strategy: the conv chain and augmentation run on one device")
    assert not (tmp_path / "run").exists()


def test_a_run_written_before_the_conv_settings_existed_resumes_as_before():
    """check_same_run: a config.json without the conv and augmentation keys is a run with their defaults."""
    from tp_keras.run.checkpoint import check_same_run
    config = Config.paper("dtpdrl").validate()
    saved = dataclasses.asdict(config)
    new_keys = config_module.CONV_FIELDS + ("augment",)
    check_same_run("old/checkpoint.npz", {k: v for k, v in saved.items() if k not in new_keys}, None, config, None)
    conv = _parse("--method=bp", *CONV, "--augment=crop_flip")
    with pytest.raises(ConfigError, match=r"^--resume: old/checkpoint.npz was written with architecture='mlp'"):
        check_same_run("old/checkpoint.npz", {**dataclasses.asdict(conv), "architecture": "mlp"}, None, conv, None)
    with pytest.raises(ConfigError, match=r"^--resume: old/checkpoint.npz was written with augment='none'"):
        check_same_run("old/checkpoint.npz", {**dataclasses.asdict(conv), "augment": "none"}, None, conv, None)


# --- whole runs (slow) ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_of_an_augmented_conv_run_is_bit_identical(tmp_path):
    """train_and_evaluate on an ldrl conv chain with crop_flip: 3 epochs at once, and 2 epochs then resume to 3,
    give the same checkpoint (every weight and optimizer state) and metrics; the augmentation changed the run."""
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.run.rundir import read_checkpoint
    dataset = _images(32, (8, 8, 1), classes=3)
    config = _parse("--method=ldrl", "--dataset=fashion_mnist", "--architecture=conv", "--conv_channels=3,4",
                    "--conv_pooling=max,none", "--init=torch", "--augment=crop_flip", "--sigma=0.2,0.1",
                    "--feedback_iterations=1,2", "--lr_fb=1e-3,2e-3", "--epochs=3", "--epochs_fb=1",
                    "--batch_size=8", "--noprogress")

    def run(workdir, epochs, resume=False, **changes):
        train_and_evaluate(dataclasses.replace(config, epochs=epochs, **changes), str(workdir), dataset,
                           resume=resume)
        return read_checkpoint(str(workdir / "checkpoint.npz"))

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "parts", 2)
    parts = run(tmp_path / "parts", 3, resume=True)
    assert whole[0]["epoch"] == parts[0]["epoch"] == 3 and whole[0]["passes"] == parts[0]["passes"]
    for key in whole[1]:
        np.testing.assert_array_equal(whole[1][key], parts[1][key], err_msg=key)
    strip = [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in whole[0]["history"]]
    assert strip == [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in parts[0]["history"]]
    plain = run(tmp_path / "plain", 3, augment="none")
    assert any(not np.array_equal(whole[1][k], plain[1][k]) for k in whole[1])


@pytest.mark.slow
def test_the_vgg_flagfile_runs_end_to_end_on_cifar_shaped_data(tmp_path):
    """python -m tp_keras.launch --flagfile=launch/cifar10_LDRL_vgg.flags on 32 training images of 32×32×3 (CIFAR-10
    files written here), with one feedback step per block and one epoch: the authors' network, rule, optimizers,
    schedule and augmentation train to a finished run with finite losses."""
    import json
    from fixture_data import write_cifar_batches
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (8, 3072)), rng.integers(0, 10, 8)) for _ in range(5)]
    write_cifar_batches(tmp_path / "data", batches, (rng.integers(0, 256, (8, 3072)), rng.integers(0, 10, 8)))
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "tp_keras.launch", f"--flagfile={os.path.join(LAUNCH_DIR, VGG + '.flags')}",
         f"--data_dir={tmp_path / 'data'}", f"--workdir={workdir}", "--validation_size=8", "--epochs=1",
         "--feedback_iterations=1", "--noprogress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    saved = json.loads((workdir / "config.json").read_text())
    assert summary["status"] == "finished"
    assert np.isfinite(summary["loss_train_last"])
    config = saved.get("config", saved)
    assert (config["architecture"], config["conv_channels"], config["init"], config["augment"]) == (
        "conv", list(VGG_CHANNELS), "torch", "crop_flip")
