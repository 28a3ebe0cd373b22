"""A run as launcher flags, and one run trained in this process (what every search or seed trial does).

A run is the list of launcher flags that `python -m tp_keras.launch` would take (`--method=...`, `--lr=...`),
without `--workdir`/`--resume` (the engine sets them) and without `--data_dir` (where the data lie is each
machine's own business, not part of what runs). `run_training` parses them with the launcher's own flag
definitions, so a trial is exactly the launcher run `launch_command` prints.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import re

from tp_keras.run import launch
from tp_keras.run.cli import flagfile_problem
from tp_keras.run.config import ConfigError
from tp_keras.run.data import dataset_options, load_dataset

# Set per trial by the engine, or not possible in a worker that trains on one device.
RESERVED = {"workdir": "the engine gives every run its own folder under --out",
            "resume": "every trial resumes from its run folder's checkpoint when there is one",
            "strategy": "trials train on one device in their worker process",
            "tpu": "trials train on one device in their worker process",
            "flagfile": "give the base flagfile as the command's own --flagfile"}
LOG_NAME = "launch.log"


def flag_name(arg: str) -> str:
    return arg.lstrip("-").split("=", 1)[0]


def _launcher_flags():
    return launch.FLAGS


def _key(name: str, flags) -> str:
    """A flag's identity: --noprune_early and --prune_early set the same flag."""
    if name not in flags and name.startswith("no") and name[2:] in flags and flags[name[2:]].boolean:
        return name[2:]
    return name


def read_flagfile(path: str) -> list[str]:
    """The flags of a launcher flagfile, one per line; comments and blank lines dropped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("flagfile", flagfile_problem(path, err)) from None
    flags = [line for line in lines if line and not line.startswith("#")]
    for line in flags:
        if not line.startswith("--"):
            raise ConfigError("flagfile", f"{path}: {line!r} is not a flag; write one --name=value per line")
        if flag_name(line) == "flagfile":
            raise ConfigError("flagfile", f"{path}: a nested --flagfile is not supported here; copy its flags in")
    return flags


def check_flags(args, reserved=RESERVED) -> None:
    """Each arg must be a launcher flag the engine does not set itself."""
    flags = _launcher_flags()
    for arg in args:
        name = flag_name(arg)
        if not arg.startswith("--"):
            raise ConfigError(name, f"unexpected argument {arg!r}; launcher flags take the form --name=value")
        if _key(name, flags) in reserved:
            raise ConfigError(name, f"{reserved[_key(name, flags)]}; drop it")
        if _key(name, flags) not in flags:
            raise ConfigError(name, "not a launcher flag (python -m tp_keras.launch --helpfull lists them)")


def merge_flags(*groups) -> list[str]:
    """The groups' flags, each flag once (the last value wins) at the place of its first appearance."""
    flags = _launcher_flags()
    merged: dict[str, str] = {}
    for group in groups:
        for arg in group:
            merged[_key(flag_name(arg), flags)] = arg
    return list(merged.values())


def flag_value(value) -> str:
    """A value as a launcher flag writes it: floats at full precision (repr), booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def as_flags(values: dict) -> list[str]:
    return [f"--{name}={flag_value(value)}" for name, value in values.items()]


def without_data_dir(args) -> tuple[list[str], str | None]:
    """(args without --data_dir, the last --data_dir value or None)."""
    data_dir = None
    kept = []
    for arg in args:
        if flag_name(arg) == "data_dir":
            data_dir = arg.split("=", 1)[1] if "=" in arg else None
        else:
            kept.append(arg)
    return kept, data_dir


def config_from_args(args):
    """The launcher's Config for these flags, validated (ConfigError: one line naming the flag)."""
    from absl import flags as absl_flags

    launch.FLAGS.unparse_flags()
    try:
        launch.FLAGS(["tp_keras.search"] + list(args))
        return launch.config_from_flags().validate()
    except absl_flags.Error as err:  # e.g. "flag --lr=abc: could not convert string to float: 'abc'"
        message = str(err).splitlines()[0]
        named = re.match(r"flag --(\w+)=[^:]*: (.*)", message)
        raise ConfigError(*(named.groups() if named else ("flagfile", message))) from None
    finally:
        launch.FLAGS.unparse_flags()


def launch_command(args, workdir: str) -> str:
    return " ".join(["python -m tp_keras.launch"] + list(args) + [f"--workdir={workdir}", "--resume"])


_cache: dict = {}


def _dataset(config):
    """The dataset of a config; the last one is kept, so the trials of a search (one seed) load it once."""
    options = dataset_options(config)
    key = tuple(sorted(options.items()))
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_dataset(**options)
    return _cache[key]


def prepare(args) -> None:
    """Checks a run's flags and loads its data before any trial starts (ConfigError, DataError: one line)."""
    _dataset(config_from_args(args))


def run_training(args, workdir: str, on_epoch_end=None) -> dict:
    """Trains the run in this process into `workdir`, resuming from its checkpoint when there is one; returns
    its summary. Its output is appended to workdir/launch.log. Afterwards the Keras session is cleared, so
    the next trial starts from a clean graph state."""
    import keras

    from tp_keras.run.experiment import train_and_evaluate
    config = config_from_args(args)
    os.makedirs(workdir, exist_ok=True)
    try:
        with open(os.path.join(workdir, LOG_NAME), "a", buffering=1) as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            print(f"=== {datetime.datetime.now().isoformat(timespec='seconds')}: {launch_command(args, workdir)}",
                  flush=True)
            return train_and_evaluate(config, workdir, _dataset(config), resume=True, on_epoch_end=on_epoch_end)
    finally:
        keras.backend.clear_session()
        gc.collect()
