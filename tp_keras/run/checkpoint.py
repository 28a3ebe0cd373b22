"""checkpoint.npz: what --resume continues from.

One file: every model variable (forward and feedback weights, DDTP-RHL's fixed layer, the noise generator's state),
both optimizers' variables (step counters, moments, learning rates), and a JSON header with the epoch, the shuffling
pass counter, the metrics history, the configuration and the fingerprint of the data. Written to a temporary file and
renamed (tp_keras.run.rundir), so the workdir always holds a complete checkpoint (the last good one).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from tp_keras.core.step import Trainer
from tp_keras.run import faults, rundir
from tp_keras.run.config import Config, ConfigError

CHECKPOINT = "checkpoint.npz"


def _checkpoint_variables(trainer: Trainer) -> list:
    variables = list(trainer.model.variables) + list(trainer.forward_optimizer.variables)
    if trainer.feedback_optimizer is not None and trainer.trains_feedback:
        variables += list(trainer.feedback_optimizer.variables)
    return variables


def save_checkpoint(path: str, trainer: Trainer, *, epoch: int, passes: int, history: list, config: Config,
                    data: dict | None = None):
    variables = _checkpoint_variables(trainer)
    header = {"epoch": epoch, "passes": passes, "history": history, "config": dataclasses.asdict(config),
              "names": [f"{i}:{v.path}" for i, v in enumerate(variables)]}
    if data is not None:
        header["data"] = data
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    rundir.write_checkpoint(path, header, arrays, before_rename=lambda: faults.kill_point("checkpoint_rename"))


def _data_text(data: dict) -> str:
    samples = data.get("samples") or {}
    counts = " / ".join(f"{n} {split}" for split, n in samples.items())
    return f"{counts + ' samples, ' if counts else ''}sha256 {str(data.get('sha256'))[:12]}"


def check_same_run(path: str, saved: dict, saved_data: dict | None, config: Config, data: dict | None) -> None:
    """ConfigError (one line) unless the run `path` describes (its settings `saved`, the fingerprint `saved_data`
    of its data) is the one `config` on `data` continues: every setting but rundir.RESUME_MAY_DIFFER equal, and
    the same data, wherever --data_dir now points (a run recorded before fingerprints existed is not
    compared)."""
    current = dataclasses.asdict(config)
    # A setting added since the run was written (absent from its config.json) had its default value then.
    defaults = {f.name: f.default for f in dataclasses.fields(Config) if f.default is not dataclasses.MISSING}
    for key in current:
        was = saved.get(key, defaults.get(key))
        if key not in rundir.RESUME_MAY_DIFFER and json.dumps(was) != json.dumps(current[key], default=list):
            raise ConfigError("resume", f"{path} was written with {key}={was!r}, this run has "
                                        f"{current[key]!r}; use the same settings or another --workdir")
    if isinstance(saved_data, dict) and data is not None and saved_data.get("sha256") != data.get("sha256"):
        here = f"--data_dir={config.data_dir}" if config.data_dir is not None else "this run's data"
        raise ConfigError("resume", f"{path} was trained on other data ({_data_text(saved_data)}) than {here} "
                                    f"holds ({_data_text(data)}); point --data_dir at the files it was trained on, "
                                    "or choose another --workdir")


def load_checkpoint(path: str, trainer: Trainer, config: Config, data: dict | None = None) -> dict:
    """Restores every variable from `path`; returns its header (epoch, passes, history). Raises RunDirError (one
    line naming the file) if it cannot be read, ConfigError if it was written by a different configuration or
    model, on other data (`data`: the fingerprint of this run's, see check_same_run), or holds more epochs than
    config.epochs; in every case no variable has changed."""
    header, arrays = rundir.read_checkpoint(path)
    check_same_run(path, header["config"], header.get("data"), config, data)
    if header["epoch"] > config.epochs:
        raise ConfigError("epochs", f"{config.epochs} is fewer than the {header['epoch']} epochs {path} has done; "
                                    f"give --epochs={header['epoch']} or more to continue it, or choose another "
                                    "--workdir")
    variables = _checkpoint_variables(trainer)
    if len(variables) != len(header["names"]):
        raise ConfigError("resume", f"{path} holds {len(header['names'])} variables, this model "
                                    f"{len(variables)}; use another --workdir")
    values = [arrays[f"v{i}"] for i in range(len(variables))]
    for name, value, v in zip(header["names"], values, variables):
        if tuple(value.shape) != tuple(v.shape):
            raise ConfigError("resume", f"{path}: variable {name} has shape {value.shape}, the model's is "
                                        f"{tuple(v.shape)}; use another --workdir")
    for value, v in zip(values, variables):
        v.assign(value)
    return header
