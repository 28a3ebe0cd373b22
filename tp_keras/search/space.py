"""Search-space files (`launch/spaces/<method>.space`): which launcher flags a search samples, and how.

One parameter per line, `NAME KIND ARGS...`; `#` starts a comment:

    lr               log     1e-6  1e-3     a float on a log scale in [1e-6, 1e-3]
    sigma            float   0.01  0.3      a float, uniform
    size_hidden_fb   int     256   2048     an integer, uniform
    beta1            choice  0.9 0.99 0.999 one of the listed values

NAME is a launcher hyper-parameter flag (`lr`, `target_stepsize`, `beta1`, `epsilon_fb`, `feedback_wd`, `sigma`,
...); every flag the file does not name keeps the flagfile's value. Optuna's TPE sampler draws the values.
"""
from __future__ import annotations

import dataclasses
import math
import os

from tp_keras.core.rules import UnusedSettingError
from tp_keras.run.config import RULE_FLAGS

KINDS = {"log": 2, "float": 2, "int": 2, "choice": None}  # kind -> number of arguments (None: one or more)


class SpaceError(ValueError):
    """A bad search-space file or parameter; `str(err)` is one line naming the file, line and fix."""


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    kind: str
    args: tuple

    def suggest(self, trial):
        """The value Optuna's trial draws for this parameter."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.args))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.args[0]), int(self.args[1]))
        return trial.suggest_float(self.name, float(self.args[0]), float(self.args[1]), log=self.kind == "log")

    def contains(self, value) -> bool:
        if self.kind == "choice":
            return value in self.args
        return self.args[0] <= value <= self.args[1]


def _value(text: str):
    """A choice or bound as written: int, float, or true/false."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a number or true/false")


def parse(text: str, source: str = "<space>", searchable=None) -> tuple[Param, ...]:
    """The parameters of a space file's text. `searchable`: the flag names a space may use (None: any)."""
    params = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split()
        if not line:
            continue
        where = f"{source}:{number}"
        if len(line) < 3 or line[1] not in KINDS:
            raise SpaceError(f"{where}: {raw.strip()!r}: write NAME KIND ARGS with KIND one of "
                             f"{', '.join(KINDS)}, e.g. 'lr log 1e-6 1e-3'")
        name, kind, words = line[0].lstrip("-"), line[1], line[2:]
        if searchable is not None and name not in searchable:
            raise SpaceError(f"{where}: {name!r} is not a launcher hyper-parameter; use one of "
                             f"{', '.join(searchable)}")
        if any(p.name == name for p in params):
            raise SpaceError(f"{where}: {name} is listed twice; keep one line per parameter")
        if KINDS[kind] is not None and len(words) != KINDS[kind]:
            raise SpaceError(f"{where}: {kind} takes LOW HIGH, e.g. '{name} {kind} 1e-6 1e-3'")
        try:
            args = tuple(_value(w) for w in words)
        except ValueError as err:
            raise SpaceError(f"{where}: {err}") from None
        if kind != "choice":
            low, high = args
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and math.isfinite(low)
                    and math.isfinite(high) and low < high):
                raise SpaceError(f"{where}: {name}: the range needs finite numbers LOW < HIGH, got {low} {high}")
            if kind == "log" and low <= 0:
                raise SpaceError(f"{where}: {name}: a log range needs LOW > 0, got {low} (e.g. 1e-8 for 'almost 0')")
            if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise SpaceError(f"{where}: {name}: int bounds must be integers, got {low} {high}")
        elif len(set(args)) != len(args):
            raise SpaceError(f"{where}: {name}: a choice is listed twice")
        params.append(Param(name, kind, args))
    if not params:
        raise SpaceError(f"{source}: no parameters; write one line per searched flag, e.g. 'lr log 1e-6 1e-3'")
    return tuple(params)


def load(path: str, searchable=None) -> tuple[Param, ...]:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise SpaceError(f"--space: cannot read {path}: {err.strerror}") from None
    return parse(text, path, searchable)


def default_path(method: str) -> str:
    """launch/spaces/<method>.space of the working directory, else of the checkout this package runs from."""
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (".", checkout):
        path = os.path.normpath(os.path.join(root, "launch", "spaces", f"{method}.space"))
        if os.path.isfile(path):
            return path
    raise SpaceError(f"--space: no search space given and launch/spaces/{method}.space does not exist; pass "
                     "--space=FILE (one 'NAME KIND ARGS' line per searched flag)")


def check_method(params, method) -> None:
    """Refuses parameters the method ignores, as the launcher refuses such flags: the rule decides
    (`LearningRule.uses`, through the launcher's map of flags onto the rule's settings, `config.RULE_FLAGS`), e.g.
    a feedback setting for a method without trained feedback, η̂ for one without targets, size_hidden_fb without
    DDTP-RHL's random layer. Searching them would only add noise to the search."""
    for p in params:
        if p.name not in RULE_FLAGS:
            continue
        try:
            method.check_used(RULE_FLAGS[p.name], p.args)
        except UnusedSettingError as err:
            raise SpaceError(f"--space: {p.name}: not used by {method.name} ({err.reason}); remove the line (or "
                             f"search a space written for {method.name})") from None


def check_values(params, validate, source: str = "--space") -> None:
    """Refuses, before any trial runs, a value the launcher would refuse: `validate(name, value)` applies the
    launcher's own parsing and checks of flag `name` to `value` and raises ValueError (one line) if it refuses it.
    Every choice and both ends of every range go through it; without this a bad value fails every trial that
    draws it."""
    for p in params:
        for value in p.args:
            try:
                validate(p.name, value)
            except ValueError as err:
                what = f"the choice {value}" if p.kind == "choice" else f"the {p.kind} range's end {value}"
                raise SpaceError(f"{source}: {p.name}: the launcher refuses {what} ({str(err).splitlines()[0]}); "
                                 "fix or remove it in the space file") from None


def to_json(params) -> list:
    return [[p.name, p.kind, list(p.args)] for p in params]


def from_json(data) -> tuple[Param, ...]:
    return tuple(Param(name, kind, tuple(args)) for name, kind, args in data)


def suggest(trial, params) -> dict:
    """{flag name: value} drawn by the trial, in the space file's order."""
    return {p.name: p.suggest(trial) for p in params}
