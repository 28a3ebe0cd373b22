"""`train_and_evaluate(config, workdir)`: one full run with the reference's schedule, metrics and summary.

Schedule (spec §1.5): `epochs_fb` feedback-only passes, then per epoch one training pass (targets → feedback
step → forward step on every batch), `extra_fb_epochs` feedback-only passes, and evaluation on the validation
and test sets. Every pass reshuffles the training set with a permutation drawn from (seed, pass index).

Written to `workdir`:
  config.json     the full configuration of the run
  metrics.jsonl   one JSON object per epoch (epoch 0 = after feedback pre-training, when there is any)
  tb/             TensorBoard scalars of the same
  angles.jsonl    with config.log_angles: one JSON object per logged batch {epoch, batch, iteration, bp_angle
                  [per layer, degrees], gnt_angle [per hidden layer]} (spec §5.4; also in TensorBoard under angles/)
  summary.json    the spec §4.2 quantities (test error at the best-validation epoch, last/best training loss, ...)
JSON files are written atomically (temporary file + rename) and summary.json after every epoch (status
"running", then "finished", "interrupted", "diverged: ..." or "pruned: ..."), so an interrupted run leaves
complete files behind.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tp_keras.config import Config
from tp_keras.data import Dataset, load_dataset
from tp_keras.model import TPModel
from tp_keras.optimizers import TorchAdam
from tp_keras.step import Trainer

# Spec §1.5: from the 6th epoch on, a run whose running train accuracy is below this is pruned (if enabled).
PRUNE_ACCURACY = {"mnist": 0.40, "fashion_mnist": 0.40, "cifar10": 0.25}


def build_model(config: Config, dataset: Dataset) -> TPModel:
    if config.architecture == "cnn":  # the Table 3 CNN on the dataset's images (NHWC, or flattened NHWC)
        from tp_keras.cnn import CNNModel
        return CNNModel(config.method, image_shape=dataset.image_shape, output_size=dataset.num_outputs,
                        target_stepsize=config.target_stepsize, sigma=config.sigma, seed=config.seed,
                        dtype=config.precision)
    return TPModel(config.method, input_size=int(np.prod(dataset.train.x.shape[1:])),
                   hidden_sizes=config.hidden_sizes, output_size=dataset.num_outputs,
                   target_stepsize=config.target_stepsize, sigma=config.sigma,
                   last_hidden_bias=config.last_hidden_bias, task=dataset.task, seed=config.seed,
                   size_hidden_fb=config.size_hidden_fb, recurrent_input=config.recurrent_input,
                   only_train_first_layer=config.only_train_first_layer,
                   gn_damping=config.gn_damping_training, dtype=config.precision)


def build_trainer(config: Config, model: TPModel) -> Trainer:
    if config.architecture == "cnn":  # one Adam per layer, lr[i]/η̂ and ε[i] (spec §1.4, §2.11)
        from tp_keras.cnn import layerwise_adam
        forward_opt = layerwise_adam(model, config.forward_learning_rate, config.beta1, config.beta2, config.epsilon,
                                     l2_decay=config.forward_wd, name="forward_adam", precision=config.precision)
    else:
        forward_opt = TorchAdam(config.forward_learning_rate, config.beta1, config.beta2, config.epsilon,
                                l2_decay=config.forward_wd, name="forward_adam", precision=config.precision)
    feedback_opt = None
    if model.feedback_variables:
        feedback_opt = TorchAdam(config.lr_fb, config.beta1_fb, config.beta2_fb, config.epsilon_fb,
                                 l2_decay=config.feedback_wd, name="feedback_adam", precision=config.precision)
    return Trainer(model, forward_opt, feedback_opt, jit_compile=config.jit_compile,
                   angle_damping=list(config.gn_damping) if config.log_angles else None)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically: never a half-written file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


class _Batches:
    """The training set, reshuffled for every pass by a permutation drawn from (seed, pass index).

    The data are placed on the device once; each pass gathers its permuted copy there and slices it, so no
    per-batch host work is left but the slice (a tf.data pipeline cost ~2 s more per MNIST pass on 2 cores;
    permuting on the host and uploading every pass cost 0.2–0.4 s, the device gather 0.11 s)."""

    def __init__(self, split, batch_size: int, seed: int):
        self.x, self.y = tf.constant(split.x), tf.constant(split.y)
        self.batch_size = batch_size
        self.seed = seed
        self.passes = 0
        self.steps = math.ceil(int(self.x.shape[0]) / batch_size)

    def shuffled(self):
        perm = np.random.default_rng([self.seed, self.passes]).permutation(int(self.x.shape[0]))
        self.passes += 1
        return _in_order(tf.gather(self.x, perm), tf.gather(self.y, perm), self.batch_size)


def _in_order(x, y, batch_size):
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    for start in range(0, int(x.shape[0]), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


class Diverged(RuntimeError):
    """A non-finite loss, target or feedback loss; `str(err)` says where (pass, batch, layer)."""


_HEALTH_KEYS = ("finite_loss", "finite_layers", "finite_feedback")


def _first_problem(label: str, flags: list[dict]) -> str | None:
    """Where the first non-finite value of a pass appeared, from the per-batch flags of step.health."""
    if not flags:
        return None
    # One device-side stack and one host read per flag kind (not one read per batch).
    stacked = {k: np.asarray(tf.stack([f[k] for f in flags]).numpy()).reshape(len(flags), -1) for k in flags[0]}
    bad = [i for i in range(len(flags)) if any(np.any(v[i] == 0) for v in stacked.values())]
    if not bad:
        return None
    i = bad[0]
    if stacked["finite_loss"][i, 0] == 0:
        where = "the loss"
    elif "finite_layers" in stacked and np.any(stacked["finite_layers"][i] == 0):
        where = f"layer {int(np.argmin(stacked['finite_layers'][i])) + 1}'s target (or activation)"
    else:
        where = f"the feedback loss of hidden layer {int(np.argmin(stacked['finite_feedback'][i])) + 1}"
    return f"non-finite {where} in {label}, batch {i}"


def _run_pass(step_fn, batches: _Batches, label: str, show_progress: bool, *, angle_step=None,
              log_interval: int = 0, angles_out: list | None = None, where: str = "") -> dict:
    """Runs `step_fn` over one shuffled pass; returns the unweighted means over batches of its metrics.

    With `angle_step`, batches whose index is a multiple of `log_interval` run it instead, and
    (batch index, bp_angle, gnt_angle) is appended to `angles_out`. Metrics, angles and the finiteness flags
    stay on the device; the host reads them every `sync_every` steps for the progress bar and once at the end of
    the pass, when a non-finite value raises `Diverged` naming the first bad batch and layer (`where`
    describes the pass, e.g. "epoch 3")."""
    bar = keras.utils.Progbar(batches.steps, verbose=1 if sys.stdout.isatty() else 2, unit_name="batch") \
        if show_progress else None
    collected: dict[str, list] = {}
    flags = []
    sync_every = max(1, batches.steps // 20)
    logged = []
    for i, (x, y) in enumerate(batches.shuffled()):
        if angle_step is not None and i % log_interval == 0:
            metrics = dict(angle_step(x, y))
            logged.append((i, metrics.pop("bp_angle"), metrics.pop("gnt_angle")))
        else:
            metrics = dict(step_fn(x, y))
        flags.append({k: metrics.pop(k) for k in _HEALTH_KEYS if k in metrics})
        for key, value in metrics.items():
            collected.setdefault(key, []).append(value)
        if bar is not None and ((i + 1) % sync_every == 0 or i + 1 == batches.steps):
            bar.update(i + 1, [(f"{label}_{k}", float(v)) for k, v in metrics.items()])
    problem = _first_problem(where or label, flags)
    if problem:
        raise Diverged(problem)
    if angles_out is not None:
        angles_out.extend((i, bp.numpy().tolist(), gnt.numpy().tolist()) for i, bp, gnt in logged)
    return {k: float(tf.reduce_mean(tf.cast(tf.stack(v), tf.float64))) for k, v in collected.items()}


def evaluate(trainer: Trainer, split, batch_size: int) -> dict:
    """Loss (and accuracy, for classification) on a split: sample-weighted means, and the reference's unweighted
    means over batches (`*_batchmean`, where the small last batch is over-weighted; spec §7 item 12).

    The per-batch sums stay on the device; the host reads them once, after the last batch."""
    sums = [trainer.eval_step(x, y) for x, y in _in_order(split.x, split.y, batch_size)]
    table = {k: np.array([float(v) for v in tf.stack([s[k] for s in sums]).numpy()]) for k in sums[0]}
    result = {"loss": float(table["loss_sum"].sum() / table["count"].sum()),
              "loss_batchmean": float(np.mean(table["loss_sum"] / table["count"]))}
    if "correct" in table:
        result.update(acc=float(table["correct"].sum() / table["count"].sum()),
                      acc_batchmean=float(np.mean(table["correct"] / table["count"])))
    return result


def summarize(history: list[dict], has_val: bool) -> dict:
    """The spec §4.2 quantities from the per-epoch history (training epochs only). Accuracy-based entries exist
    for classification only; a regression run's best-validation epoch is the one of lowest validation loss."""
    epochs = [h for h in history if h["epoch"] >= 1]
    if not epochs:
        return {}
    summary = {"epochs_run": len(epochs)}
    classification = "train_acc" in epochs[-1]
    metrics = (("acc", max), ("loss", min)) if classification else (("loss", min),)
    for name, best in metrics:
        summary.update({
            f"{name}_train_last": epochs[-1][f"train_{name}"], f"{name}_test_last": epochs[-1][f"test_{name}"],
            f"{name}_train_best": best(h[f"train_{name}"] for h in epochs),
            f"{name}_test_best": best(h[f"test_{name}"] for h in epochs),
        })
    if has_val:
        best_loss = min(range(len(epochs)), key=lambda i: (epochs[i]["val_loss"], i))  # first argmin
        summary.update({
            "epoch_best_loss": epochs[best_loss]["epoch"], "loss_val_best": epochs[best_loss]["val_loss"],
            "loss_test_val_best": epochs[best_loss]["test_loss"],
            "loss_train_val_best": epochs[best_loss]["train_loss"],
        })
        if classification:
            best_acc = max(range(len(epochs)), key=lambda i: (epochs[i]["val_acc"], -i))  # first argmax
            summary.update({
                "epoch_best_acc": epochs[best_acc]["epoch"], "acc_val_best": epochs[best_acc]["val_acc"],
                "acc_val_last": epochs[-1]["val_acc"], "acc_test_val_best": epochs[best_acc]["test_acc"],
                "acc_train_val_best": epochs[best_acc]["train_acc"],
            })
            summary["error_test_val_best"] = 1.0 - summary["acc_test_val_best"]
    return summary


def _angle_rows(epoch: int, steps: int, logged) -> list[dict]:
    return [{"epoch": epoch, "batch": i, "iteration": (epoch - 1) * steps + i, "bp_angle": bp, "gnt_angle": gnt}
            for i, bp, gnt in logged]


def _mean_angles(rows: list[dict]) -> dict:
    """Per-epoch means of the logged angles, one key per layer (bp_angle_1.., gnt_angle_1..)."""
    means = {}
    for key in ("bp_angle", "gnt_angle"):
        for layer, values in enumerate(zip(*(r[key] for r in rows)), start=1):
            means[f"{key}_{layer}"] = float(np.mean(values))
    return means


def _train_epochs(config, trainer, batches, dataset, record, feedback_passes, log, record_angles,
                  first_epoch: int, on_epoch_end=None) -> str:
    """Feedback pre-training (unless resuming past it), then epochs first_epoch..config.epochs; returns the
    run's final status. `record` also checkpoints. `on_epoch_end(row)` may return a final status (e.g.
    "pruned: ...") that stops the run after that epoch."""
    has_val = dataset.val is not None
    status = "finished"
    if first_epoch == 1 and trainer.trains_feedback and config.epochs_fb > 0:
        t0 = time.perf_counter()
        pre = feedback_passes(config.epochs_fb, "fb_pretrain", "feedback pre-training pass")
        row = {"epoch": 0, "rec_loss_first": pre[0], "rec_loss_init": pre[-1],
               "fb_seconds": time.perf_counter() - t0}
        record(row)
        log(f"[tp_keras] feedback pre-training: {config.epochs_fb} passes, rec_loss {pre[0]:.4g} -> {pre[-1]:.4g}")

    for epoch in range(first_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        logged = []
        train = _run_pass(trainer.train_step, batches, "train", config.progress, angle_step=trainer.angle_step,
                          log_interval=config.log_interval, angles_out=logged, where=f"epoch {epoch}")
        t1 = time.perf_counter()
        angle_rows = _angle_rows(epoch, batches.steps, logged)
        extra = feedback_passes(config.extra_fb_epochs, "fb_extra", f"extra feedback pass after epoch {epoch}:"
                                ) if trainer.trains_feedback else []
        t2 = time.perf_counter()
        row = {"epoch": epoch, "train_loss": train["loss"]}
        if "accuracy" in train:
            row["train_acc"] = train["accuracy"]
        if "rec_loss" in train:
            row["rec_loss"] = train["rec_loss"]
        if extra:
            row["rec_loss_extra"] = float(np.mean(extra))
        if angle_rows:
            record_angles(angle_rows)
            row.update(_mean_angles(angle_rows))
        for name, split in (("val", dataset.val), ("test", dataset.test)):
            if split is not None:
                for key, value in evaluate(trainer, split, config.batch_size).items():
                    row[f"{name}_{key}"] = value
        t3 = time.perf_counter()
        row.update(train_seconds=t1 - t0, fb_seconds=t2 - t1, eval_seconds=t3 - t2, epoch_seconds=t3 - t0)
        record(row)
        shown = "acc" if "train_acc" in row else "loss"
        log(f"[tp_keras] epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}"
            + (f" acc {row['train_acc']:.4f}" if "train_acc" in row else "")
            + (f" | val {shown} {row[f'val_{shown}']:.4f}" if has_val else "")
            + f" | test {shown} {row[f'test_{shown}']:.4f} | {row['epoch_seconds']:.1f}s")
        if (config.prune_early and epoch >= 6 and "train_acc" in row
                and row["train_acc"] < PRUNE_ACCURACY.get(config.dataset, -1.0)):
            status = f"pruned: train accuracy {row['train_acc']:.3f} after epoch {epoch}"
            log(f"[tp_keras] stopping: {status}")
            return status
        if on_epoch_end is not None:
            stop = on_epoch_end(row)
            if stop:
                log(f"[tp_keras] stopping: {stop}")
                return stop
        _fault_injection(epoch)

    return status


def _fault_injection(epoch: int) -> None:
    """Test hook: TP_KERAS_KILL_AFTER_EPOCH=N kills this process (SIGKILL, no clean-up) right after epoch N's
    checkpoint, to test --resume against a real crash."""
    target = os.environ.get("TP_KERAS_KILL_AFTER_EPOCH")
    if target is not None and int(target) == epoch:
        os.kill(os.getpid(), signal.SIGKILL)


# --- Checkpoints ----------------------------------------------------------------------------------------------
# One file, checkpoint.npz: every model variable (forward and feedback weights, DDTP-RHL's fixed layer, the noise
# generator's state), both optimizers' variables (step counters, moments, learning rates), and a JSON header with
# the epoch, the shuffling pass counter and the metrics history. Written to a temporary file and renamed, so the
# workdir always holds a complete checkpoint (the last good one).

CHECKPOINT = "checkpoint.npz"
_RESUME_MAY_DIFFER = ("epochs", "progress", "data_dir", "jit_compile")


def _checkpoint_variables(trainer: Trainer) -> list:
    variables = list(trainer.model.variables) + list(trainer.forward_optimizer.variables)
    if trainer.feedback_optimizer is not None and trainer.trains_feedback:
        variables += list(trainer.feedback_optimizer.variables)
    return variables


def save_checkpoint(path: str, trainer: Trainer, *, epoch: int, passes: int, history: list, config: Config):
    variables = _checkpoint_variables(trainer)
    header = {"epoch": epoch, "passes": passes, "history": history, "config": dataclasses.asdict(config),
              "names": [f"{i}:{v.path}" for i, v in enumerate(variables)]}
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, header=np.array(json.dumps(header, default=_json_default)), **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: str, trainer: Trainer, config: Config) -> dict:
    """Restores every variable from `path`; returns its header (epoch, passes, history). Raises ConfigError if
    the checkpoint was written by a different configuration."""
    from tp_keras.config import ConfigError
    with np.load(path) as data:
        header = json.loads(str(data["header"]))
        saved = header["config"]
        current = dataclasses.asdict(config)
        for key in current:
            if key not in _RESUME_MAY_DIFFER and json.dumps(saved.get(key)) != json.dumps(current[key],
                                                                                           default=list):
                raise ConfigError("resume", f"{path} was written with {key}={saved.get(key)!r}, this run has "
                                            f"{current[key]!r}; use the same settings or another --workdir")
        variables = _checkpoint_variables(trainer)
        if len(variables) != len(header["names"]):
            raise ConfigError("resume", f"{path} holds {len(header['names'])} variables, this model "
                                        f"{len(variables)}; use another --workdir")
        for i, v in enumerate(variables):
            value = data[f"v{i}"]
            if tuple(value.shape) != tuple(v.shape):
                raise ConfigError("resume", f"{path}: variable {header['names'][i]} has shape {value.shape}, "
                                            f"the model's is {tuple(v.shape)}; use another --workdir")
            v.assign(value)
    return header


def train_and_evaluate(config: Config, workdir: str, dataset: Dataset | None = None,
                       trainer: Trainer | None = None, *, resume: bool = False, on_epoch_end=None) -> dict:
    """Runs one experiment and returns its summary (also written to workdir/summary.json).

    Args:
      config: the experiment (validated here).
      workdir: output directory (created).
      dataset: optional pre-loaded data (otherwise loaded from config.dataset / config.data_dir).
      trainer: optional `Trainer` from build_trainer(config, build_model(config, dataset)), for a caller that
        wants the trained model afterwards (trainer.model).
      resume: continue from workdir/checkpoint.npz if there is one (written after feedback pre-training and
        after every epoch): same weights, optimizer states, noise state, shuffling and history, so the
        finished run equals an uninterrupted one.
      on_epoch_end: optional `f(row)` called after every training epoch has been recorded and checkpointed
        (`row` is that epoch's metrics.jsonl line); returning a status string (e.g. "pruned: ...") ends the run
        with that status. A hyper-parameter search prunes trials with it.
    """
    config.validate()
    if trainer is not None:  # multi-worker: only the chief writes workdir (the others a removed temporary folder)
        from tp_keras.distribute import worker_workdir
        workdir = worker_workdir(trainer, workdir, resume)
    os.makedirs(workdir, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir, seed=config.seed,
                               validation_size=config.validation_size, no_val_set=config.no_val_set,
                               flatten=config.architecture != "cnn")
    if trainer is None:
        trainer = build_trainer(config, build_model(config, dataset))
    batches = _Batches(dataset.train, config.batch_size, config.seed)
    has_val = dataset.val is not None
    log = print if config.progress else (lambda *a, **k: None)
    checkpoint_path = os.path.join(workdir, CHECKPOINT)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    angles_path = os.path.join(workdir, "angles.jsonl")
    history: list[dict] = []
    first_epoch = 1
    if resume and os.path.exists(checkpoint_path):
        header = load_checkpoint(checkpoint_path, trainer, config)
        history, batches.passes = header["history"], header["passes"]
        first_epoch = header["epoch"] + 1
        log(f"[tp_keras] resuming from {checkpoint_path}: epoch {header['epoch']} done")
    elif resume:
        log(f"[tp_keras] --resume: no checkpoint in {workdir}, starting from the beginning")
    write_json(os.path.join(workdir, "config.json"), dataclasses.asdict(config))
    # The per-epoch files hold exactly the checkpointed epochs (a killed run may have written one more line).
    with open(metrics_path, "w") as f:
        for row in history:
            f.write(json.dumps(row, default=_json_default) + "\n")
    if config.log_angles:
        kept = []
        if first_epoch > 1 and os.path.exists(angles_path):
            with open(angles_path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["epoch"] < first_epoch]
        with open(angles_path, "w") as f:
            f.writelines(kept)
    writer = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
    log(f"[tp_keras] {config.method} on {config.dataset}: {len(dataset.train.x)} train / "
        f"{len(dataset.val.x) if has_val else 0} val / {len(dataset.test.x)} test, {config.precision}, "
        f"workdir {workdir}")
    start = time.perf_counter() - (history[-1].get("total_seconds", 0.0) if history else 0.0)

    def record(row):
        row["total_seconds"] = time.perf_counter() - start
        history.append(row)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
        with writer.as_default(step=row["epoch"]):
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and value is not None:
                    tf.summary.scalar(key, value)
        writer.flush()
        save_checkpoint(checkpoint_path, trainer, epoch=row["epoch"], passes=batches.passes, history=history,
                        config=config)
        write_summary("running")  # an interrupted or killed run still leaves the summary of its finished epochs

    def record_angles(rows):
        with open(angles_path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        with writer.as_default():
            for row in rows:
                for key in ("bp_angle", "gnt_angle"):
                    for layer, value in enumerate(row[key], start=1):
                        tf.summary.scalar(f"angles/{key}_{layer}", value, step=row["iteration"])
        writer.flush()

    def feedback_passes(count, label, where):
        means = []
        for k in range(count):
            means.append(_run_pass(trainer.feedback_step, batches, label, config.progress,
                                   where=f"{where} {k + 1}")["rec_loss"])
        return means

    def write_summary(status):
        summary = {"method": config.method, "dataset": config.dataset, "seed": config.seed, "status": status,
                   "total_seconds": time.perf_counter() - start, **summarize(history, has_val)}
        if history and history[0]["epoch"] == 0:
            summary["rec_loss_first"] = history[0]["rec_loss_first"]
            summary["rec_loss_init"] = history[0]["rec_loss_init"]
        write_json(os.path.join(workdir, "summary.json"), summary)
        return summary

    try:
        status = _train_epochs(config, trainer, batches, dataset, record, feedback_passes, log, record_angles,
                               first_epoch, on_epoch_end)
    except KeyboardInterrupt:
        write_summary("interrupted")
        writer.close()
        raise
    except Diverged as err:
        done = history[-1]["epoch"] if history else None
        status = f"diverged: {err}"
        log(f"[tp_keras] stopping: {status}; " + (f"the last good checkpoint (epoch {done}) is {checkpoint_path}"
                                                  if done is not None else "no checkpoint was written"))
    summary = write_summary(status)
    writer.close()
    return summary
