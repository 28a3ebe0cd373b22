"""Command line: `python -m tp_keras.launch --method=dtpdrl [--flagfile=launch/<cell>.flags] [--flag=value ...]`.

With only --method, the run uses that method's paper MNIST configuration (tp_keras/reference/configs.py); every
other flag overrides one value. Bad settings, unusable files and folders, and a run that would not fit in memory
stop it with one line naming what was wrong and the fix (exit status 2), and so does a workdir that holds a run
(unless --resume continues it or --overwrite replaces it); SIGINT or SIGTERM stop it after the
current batch with status "interrupted" in summary.json and one line (exit status 130 or 143).

`--seeds=N` trains --seed, --seed+1, ... as one population (tp_keras/run/population_run.py), one ordinary workdir
per seed, each with its single run's numbers.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from tp_keras.core.rules import RULES
from tp_keras.run import cli, memory
from tp_keras.run.config import (ARCHITECTURES, AUGMENTATIONS, CONV_ACTIVATIONS, CONV_KERNEL_SIZES, CONV_LOSSES,
                                  CONV_POOLINGS, INITS, Config, ConfigError)
from tp_keras.run.data import DATASETS, check_data_dir, dataset_options, load_dataset, load_dataset_in_background
from tp_keras.run.rundir import check_no_run

FLAGS = flags.FLAGS


class _NumberOrListParser(flags.ArgumentParser):
    """A number, or a comma-separated list of numbers (one per layer). One value parses to a float (as DEFINE_float
    does), several to a tuple of floats."""
    syntactic_help = "a number, or a comma-separated list of numbers (one per layer)"

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            values = [float(v) for v in argument]
        elif isinstance(argument, str):
            values = [float(v) for v in argument.split(",")]  # a ValueError names the flag (absl)
        else:
            values = [float(argument)]
        return values[0] if len(values) == 1 else tuple(values)

    def flag_type(self):
        return "float or list of floats"


class _NumberOrListSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        if isinstance(value, (list, tuple)):
            return ",".join(repr(float(v)) for v in value)
        return repr(float(value))


def _define_number_or_list(name: str, help_text: str) -> None:
    flags.DEFINE(_NumberOrListParser(), name, None, help_text, serializer=_NumberOrListSerializer())


flags.DEFINE_enum("method", "dtpdrl", list(RULES), "Training method.")
flags.DEFINE_enum("dataset", "mnist", list(DATASETS), "Dataset.")
flags.DEFINE_string("data_dir", None, "Folder with the raw dataset files (e.g. the four MNIST IDX .gz files) or a "
                    "tensorflow-datasets data dir.")
flags.DEFINE_string("workdir", None, "Output folder (default runs/<dataset>_<method>_seed<seed>, or "
                    "runs/<cell>_seed<seed> with --cell).")
flags.DEFINE_string("cell", None, "Name of the paper config this run reproduces (set by launch/<cell>.flags); a "
                    "label only: it names the default workdir, the other flags hold the settings.")
flags.DEFINE_integer("seed", 42, "Seed of the data split, initialisation, noise and shuffling.")
flags.DEFINE_integer("seeds", 1, "How many seeds to train: --seed, --seed+1, ..., as one population in one compiled "
                     "program (core.population; every other setting shared), each member writing the ordinary "
                     "workdir of its single run, with its numbers: runs/<name>_seed<S>, or with --workdir=W, "
                     "W/seed_<S> (a folder of seed folders, as the tables and figures read a sweep). 1: one run.")
flags.DEFINE_enum("precision", "float32", ["float32", "float64"], "Floating-point precision (the paper's configs "
                  "mostly ran float64).")
flags.DEFINE_enum("architecture", "mlp", list(ARCHITECTURES), "mlp: --num_hidden tanh layers of --size_hidden "
                  "units; cnn: the Table 3 CNN (conv5x5 32, pool, conv5x5 64, pool, dense 512, output) on the "
                  "dataset's images, for bp, ddtp_linear, ddtp_control and dfa, with one forward Adam per layer; "
                  "conv: a chain of conv blocks (--conv_channels, ...), then --conv_dense layers and the linear "
                  "output layer (ConvChainNetwork), for every method but gnt and ddtp_rhl.")
flags.DEFINE_list("conv_channels", None, "--architecture=conv: the filters of each conv block, first block first "
                  "(e.g. 128,128,256,256,512).")
flags.DEFINE_integer("conv_kernel_size", None, "--architecture=conv: the blocks' k×k kernel size, 'same' padding "
                     f"(one of {', '.join(map(str, CONV_KERNEL_SIZES))}; default 3).")
flags.DEFINE_enum("conv_activation", None, list(CONV_ACTIVATIONS), "--architecture=conv: the activation of the conv "
                  "blocks and of the dense hidden layers (default elu).")
flags.DEFINE_list("conv_pooling", None, "--architecture=conv: each block's 2×2 pooling after its activation, one value "
                  f"for every block or one per block ({', '.join(CONV_POOLINGS)}; default max).")
flags.DEFINE_list("conv_dense", None, "--architecture=conv: the units of each dense hidden layer after the conv "
                  "blocks (default none: the blocks feed the linear output layer).")
flags.DEFINE_enum("init", None, list(INITS), "--architecture=conv: xavier (Xavier-normal kernels, zero biases) or "
                  "torch (PyTorch's default Conv2d/Linear init, U(±1/√fan_in) kernels and biases, as the L-DRL "
                  "authors'); default xavier.")
flags.DEFINE_enum("conv_loss", None, list(CONV_LOSSES), "--architecture=conv: the conv layers' local loss, sum (the "
                  "per-sample sum of squares, the L-DRL authors') or mean (over the map's elements, the 2020 "
                  "reference's CNN); default sum.")
flags.DEFINE_enum("augment", None, list(AUGMENTATIONS), "Training-set augmentation, drawn anew every pass from "
                  "(--seed, pass index): none, or crop_flip (random horizontal flip, then a random crop of the image "
                  "padded by 4 edge pixels, as the L-DRL authors'); --architecture=conv or cnn. Default none.")
flags.DEFINE_bool("output_batch_norm", None, "fw_dtp_bn: batch-normalise the logits too (FW-DTP's authors' "
                  "--forward_last_activation=linear-BN; default off: linear logits, their default).")
# Hyper-parameters: None means "the method's paper MNIST value".
flags.DEFINE_integer("num_hidden", None, "Number of hidden layers.")
flags.DEFINE_integer("size_hidden", None, "Units per hidden layer.")
flags.DEFINE_enum("optimizer", None, ["adam", "sgd"], "Forward optimizer, PyTorch semantics: adam (TorchAdam: "
                  "--beta1, --beta2, --epsilon) or sgd (TorchSGD: --momentum); both take --forward_wd as coupled L2.")
flags.DEFINE_float("momentum", None, "Forward SGD momentum μ (buf ← μ·buf + g, w ← w − lr·buf); --optimizer=sgd.")
_define_number_or_list("lr", "Forward learning rate (the optimizer's lr is lr/target_stepsize, see --normalize_lr): "
                       "one value, or one per layer (one optimizer per layer: the CNN's conv1,conv2,dense,output; an "
                       "MLP's hidden layers then output).")
flags.DEFINE_enum("lr_schedule", None, ["none", "cosine"], "Forward learning rate by epoch: none, or cosine "
                  "(PyTorch's CosineAnnealingLR stepped after every epoch, to --lr_min over --lr_schedule_epochs).")
flags.DEFINE_integer("lr_schedule_epochs", None, "Cosine schedule: its period T_max in epochs (default: --epochs).")
flags.DEFINE_float("lr_min", None, "Cosine schedule: the learning rate it reaches at epoch T_max (eta_min; default 0).")
flags.DEFINE_float("target_stepsize", None, "Output target step size η̂.")
flags.DEFINE_float("beta1", None, "Forward Adam β1.")
flags.DEFINE_float("beta2", None, "Forward Adam β2.")
_define_number_or_list("epsilon", "Forward Adam ε (added after bias correction, PyTorch semantics). With "
                       "--architecture=cnn, one value per layer or one for all.")
flags.DEFINE_float("forward_wd", None, "Forward coupled L2 weight decay.")
flags.DEFINE_bool("normalize_lr", True, "Divide the forward learning rate by target_stepsize (reference default).")
flags.DEFINE_enum("optimizer_fb", None, ["adam", "sgd"], "Feedback optimizer: adam (--beta1_fb, --beta2_fb, "
                  "--epsilon_fb) or sgd (--momentum_fb); both take --feedback_wd as coupled L2.")
flags.DEFINE_float("momentum_fb", None, "Feedback SGD momentum; --optimizer_fb=sgd.")
_define_number_or_list("lr_fb", "Feedback learning rate: one value, or one per hidden layer (first layer first) for "
                       "ldrl, which trains each layer's feedback with its own optimizer.")
flags.DEFINE_float("beta1_fb", None, "Feedback Adam β1.")
flags.DEFINE_float("beta2_fb", None, "Feedback Adam β2.")
flags.DEFINE_float("epsilon_fb", None, "Feedback Adam ε.")
flags.DEFINE_float("feedback_wd", None, "Feedback coupled L2 weight decay (replaces the DRL λ-term).")
_define_number_or_list("sigma", "Std of the noise of the feedback losses (ldrl: one value, or one per hidden layer).")
flags.DEFINE_list("feedback_iterations", None, "ldrl: feedback steps per batch before the targets, one value or "
                  "one per hidden layer (default: the rule's, 3).")
flags.DEFINE_integer("size_hidden_fb", None, "DDTP-RHL: size of the fixed random feedback layer.")
flags.DEFINE_bool("recurrent_input", None, "DDTP-RHL: feed each layer's own activation into its feedback map.")
flags.DEFINE_float("gn_damping_training", None, "GNT: Tikhonov damping λ of the Gauss-Newton targets.")
flags.DEFINE_integer("batch_size", None, "Minibatch size.")
flags.DEFINE_integer("epochs", None, "Training epochs.")
flags.DEFINE_integer("epochs_fb", None, "Feedback-only pre-training epochs.")
flags.DEFINE_integer("extra_fb_epochs", None, "Feedback-only epochs after every training epoch.")
flags.DEFINE_bool("no_val_set", False, "Train on the whole training set, without a validation split.")
flags.DEFINE_integer("validation_size", 5000, "Size of the random validation split.")
flags.DEFINE_bool("last_hidden_bias", None, "Force the last hidden layer's bias on/off (default: the method's "
                  "reference behaviour; DDTP-linear and DFA have none).")
flags.DEFINE_bool("log_angles", False, "Log the angles of every layer's weight update against the BP gradient and "
                  "the GNT update every --log_interval batches (workdir/angles.jsonl and TensorBoard).")
flags.DEFINE_integer("log_interval", 80, "Batches between angle logs (batch index within the epoch % interval == 0).")
flags.DEFINE_list("gn_damping", ["0.0"], "Tikhonov damping λ of the GNT update the angles compare against: one "
                  "value, or one per hidden layer (e.g. 1,1,1,1,0.0001). Find good values with "
                  "python -m tp_keras.damping_search.")
flags.DEFINE_bool("only_train_first_layer", False, "Frozen-MNIST (docs/semantics.md §11): train only the first hidden "
                  "layer's forward weights; every feedback weight trains as usual.")
flags.DEFINE_bool("jit_compile", None, "Compile the steps with XLA (default: on with a GPU or TPU, off on a CPU, "
                  "where it was measured slower; the choice is printed at start).")
flags.DEFINE_bool("tf32", False, "On NVIDIA GPUs from Ampere on, run float32 matmuls and convolutions in "
                  "TensorFloat-32 (TensorFlow's default there; about 1e-3 relative error). Off: full float32, as the "
                  "reference. No effect on a CPU or in float64.")
flags.DEFINE_string("steps_per_call", "auto", "Batches per compiled call of the training loop: a number, 'epoch' (a "
                    "whole pass per call: the host never waits between batches) or 'auto' (on a CPU one call per "
                    "progress update, a twentieth of the pass; 'epoch' on a GPU or TPU). Results are bit-identical "
                    "whatever the value; the host checks for Ctrl-C and updates the progress bar between calls.")
flags.DEFINE_bool("prune_early", False, "Stop a run whose train accuracy is still below 40% (25% on CIFAR-10) "
                  "after epoch 6, as the reference's seed sweeps did.")
flags.DEFINE_bool("progress", True, "Print progress bars and per-epoch lines.")
flags.DEFINE_enum("strategy", "none", ["none", "auto", "one_device", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy: none (the plain compiled loop on the default device), auto (TPU if "
                  "one answers, else all GPUs mirrored, else one device), one_device, mirrored (all GPUs, or all "
                  "logical CPUs), multi_worker (TF_CONFIG), tpu.")
flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu (default 'local': a TPU VM, e.g. Colab).")
flags.DEFINE_bool("resume", False, "Continue from <workdir>/checkpoint.npz (written after feedback pre-training and "
                  "every epoch) when there is one; the finished run equals an uninterrupted one. Refused if the "
                  "run had other settings or other data (fingerprint), or more epochs than --epochs.")
flags.DEFINE_bool("overwrite", False, "Replace the run <workdir> holds (its config, summary, metrics, checkpoint and "
                  "tb/ are removed once the new run is ready to write). Without it (or --resume) a workdir holding "
                  "a run is refused.")

_OVERRIDABLE = ("num_hidden", "size_hidden", "lr", "target_stepsize", "beta1", "beta2", "epsilon", "forward_wd",
                "momentum", "lr_fb", "beta1_fb", "beta2_fb", "epsilon_fb", "feedback_wd", "momentum_fb", "sigma",
                "size_hidden_fb", "recurrent_input", "gn_damping_training", "batch_size", "epochs", "epochs_fb",
                "extra_fb_epochs", "lr_min")
# Choices and counts, given as they are (None: the Config's default).
_CHOICES = ("optimizer", "optimizer_fb", "lr_schedule", "lr_schedule_epochs", "conv_kernel_size", "conv_activation",
            "conv_pooling", "init", "conv_loss", "augment", "output_batch_norm")


def config_from_flags():
    overrides = {name: getattr(FLAGS, name) for name in _OVERRIDABLE + _CHOICES}
    return Config.paper(
        FLAGS.method, architecture=FLAGS.architecture, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        seed=FLAGS.seed, precision=FLAGS.precision,
        normalize_lr=FLAGS.normalize_lr, no_val_set=FLAGS.no_val_set, validation_size=FLAGS.validation_size,
        last_hidden_bias=FLAGS.last_hidden_bias, jit_compile=FLAGS.jit_compile, tf32=FLAGS.tf32,
        steps_per_call=FLAGS.steps_per_call, prune_early=FLAGS.prune_early,
        progress=FLAGS.progress, only_train_first_layer=FLAGS.only_train_first_layer,
        log_angles=FLAGS.log_angles, log_interval=FLAGS.log_interval,
        gn_damping=_floats("gn_damping", FLAGS.gn_damping),
        feedback_iterations=_whole_numbers("feedback_iterations", FLAGS.feedback_iterations),
        conv_channels=_whole_number_list("conv_channels", FLAGS.conv_channels),
        conv_dense=_whole_number_list("conv_dense", FLAGS.conv_dense), **overrides)


def _whole_number_list(flag: str, values):
    """None, or a tuple of ints, one per layer (an empty flag: none), from a comma-separated flag."""
    numbers = _whole_numbers(flag, values)
    return numbers if numbers is None or isinstance(numbers, tuple) else (numbers,)


def _whole_numbers(flag: str, values):
    """None, one int, or a tuple of ints from a comma-separated flag."""
    if values is None:
        return None
    try:
        numbers = tuple(int(v) for v in values)
    except ValueError:
        raise ConfigError(flag, f"{','.join(values)!r} is not a comma-separated list of whole numbers") from None
    return numbers[0] if len(numbers) == 1 else numbers


def _floats(flag: str, values) -> tuple:
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ConfigError(flag, f"{','.join(values)!r} is not a comma-separated list of numbers") from None


def check_workdir(workdir: str, *, resume: bool, overwrite: bool, holds_run: bool = True) -> None:
    """Before any work: --resume and --overwrite together, or (`holds_run`) a workdir that holds a run without
    either, are refused in one line (train_and_evaluate checks again holding the workdir's lock)."""
    if resume and overwrite:
        raise ConfigError("overwrite", "--resume continues the run in the workdir, --overwrite replaces it; give "
                                       "one of the two")
    if holds_run and not (resume or overwrite):
        check_no_run(workdir)


@cli.guarded(interrupted_hint="nothing was trained yet")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    config = config_from_flags().validate()
    run_name = FLAGS.cell or f"{config.dataset}_{config.method}"
    if FLAGS.seeds < 1:
        raise ConfigError("seeds", f"{FLAGS.seeds} is not a number of seeds; give 1 or more")
    if FLAGS.seeds > 1:
        return _population(config, run_name)
    workdir = FLAGS.workdir or os.path.join("runs", f"{run_name}_seed{config.seed}")
    # A multi-worker run's other workers write a folder of their own; its chief checks `workdir` under the lock.
    check_workdir(workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite,
                  holds_run=FLAGS.strategy != "multi_worker")
    check_data_dir(config.data_dir, config.dataset)
    # The data files are read on a thread while TensorFlow is imported (not tensorflow-datasets' copy, which needs
    # TensorFlow itself); train_and_evaluate gets the same Dataset it would load.
    loading = load_dataset_in_background(**dataset_options(config)) \
        if FLAGS.strategy == "none" and (config.data_dir is not None or config.dataset == "student_teacher") else None
    # Imported here so that --help and flag errors answer without loading TensorFlow.
    cli.quiet_tensorflow_without_gpu(probe=FLAGS.strategy != "multi_worker")
    from tp_keras.run.experiment import train_and_evaluate
    dataset = trainer = None
    if FLAGS.strategy != "none" and config.architecture == "cnn":
        raise ConfigError("strategy", "the CNN runs on one device (per-layer optimizers are not wired into "
                                      "DistributedTrainer); drop --strategy")
    if FLAGS.strategy != "none" and (config.architecture == "conv" or config.augment != "none"):
        raise ConfigError("strategy", "the conv chain and augmentation run on one device (DistributedTrainer "
                                      "feeds flattened, unaugmented data); drop --strategy")
    if FLAGS.strategy != "none" and any(isinstance(v, tuple) for v in (config.lr, config.epsilon)):
        raise ConfigError("strategy", "one forward optimizer per layer (--lr or --epsilon given per layer) runs on "
                                      "one device (per-layer optimizers are not wired into DistributedTrainer); "
                                      "drop --strategy or give one value")
    if FLAGS.strategy != "none":
        # The strategy first: multi-worker collectives must be configured before TensorFlow runs anything.
        from tp_keras.run import distribute
        strategy = distribute.make_strategy(FLAGS.strategy, tpu=FLAGS.tpu)
        distribute.check_precision(strategy, config.precision)
        dataset = load_dataset(**dataset_options(config))  # flattened: the strategy refused images above
        memory.check_dataset_fits(config, dataset)
        trainer = distribute.DistributedTrainer.from_config(config, dataset, strategy)
        print(f"[tp_keras] strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    elif FLAGS.tpu:
        raise ConfigError("tpu", "a TPU address needs --strategy=tpu (or auto)")
    if loading is not None:
        dataset = loading()
    summary = train_and_evaluate(config, workdir, dataset, trainer, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
    shown = {k: summary[k] for k in ("status", "error_test_val_best", "acc_test_last", "loss_test_val_best",
                                     "loss_train_last", "total_seconds") if k in summary}
    print(f"[tp_keras] done: {shown}; summary in {os.path.join(workdir, 'summary.json')}")
    if summary.get("status", "").startswith("diverged"):
        kept = (f"the last good checkpoint (epoch {summary.checkpoint_epoch}) is kept in {workdir}"
                if summary.checkpoint_epoch is not None else "it diverged before its first checkpoint")
        cli.fail(f"{summary['status']} ({kept}; lower the learning rates or target_stepsize and rerun "
                 "with --overwrite or another --workdir)")


def _population(config, run_name: str) -> None:
    """--seeds > 1: the seeds as one population (run/population_run.py), one ordinary workdir per member."""
    for flag, given in (("strategy", FLAGS.strategy != "none"), ("tpu", FLAGS.tpu is not None)):
        if given:
            raise ConfigError(flag, f"a population of --seeds={FLAGS.seeds} trains on one device; drop --{flag} "
                                    "or train one seed at a time (--seeds=1)")
    cli.quiet_tensorflow_without_gpu()
    from tp_keras.run import population_run  # loads TensorFlow
    population_run.check_supported(config)
    seeds = [config.seed + i for i in range(FLAGS.seeds)]
    configs = population_run.member_configs(config, seeds)
    workdirs = population_run.member_workdirs(seeds, run_name=run_name, workdir=FLAGS.workdir)
    for workdir in workdirs:
        check_workdir(workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
    check_data_dir(config.data_dir, config.dataset)
    summaries = population_run.train_and_evaluate_population(configs, workdirs, resume=FLAGS.resume,
                                                             overwrite=FLAGS.overwrite)
    for seed, workdir, summary in zip(seeds, workdirs, summaries):
        shown = {k: summary[k] for k in ("status", "error_test_val_best", "acc_test_last", "loss_test_val_best",
                                         "loss_train_last", "total_seconds") if k in summary}
        print(f"[tp_keras] done: seed {seed}: {shown}; summary in {os.path.join(workdir, 'summary.json')}")
    diverged = [(seed, summary) for seed, summary in zip(seeds, summaries)
                if summary.get("status", "").startswith("diverged")]
    if diverged:
        cli.fail(f"{len(diverged)} of {len(seeds)} seeds diverged: " + "; ".join(
            f"seed {seed} {summary['status']} (" + (f"its checkpoint of epoch {summary.checkpoint_epoch} is kept"
                                                     if summary.checkpoint_epoch is not None
                                                     else "before its first checkpoint") + ")"
            for seed, summary in diverged) + "; the other seeds' runs are complete in their workdirs")


def run():
    try:
        app.run(main, flags_parser=cli.parse_flags_one_line)
    except SystemExit as done:  # the run's files are written and closed: skip the interpreter's teardown
        cli.exit_without_teardown(done.code)


if __name__ == "__main__":
    run()
