"""Will the run fit in memory? An estimate of a run's bytes, made before anything is allocated, and the check that
refuses a run that cannot fit, in one line, instead of dying of memory exhaustion minutes later.

The estimate counts what grows with the settings (it is a lower bound of the order of the real figure, not an
exact account; TensorFlow's own ~1 GB is outside it):
  parameters           forward and feedback weights (and DDTP-RHL's fixed random layer)
  optimizer            two Adam moments and one gradient per trained parameter
  activations          a batch's activations, targets, local-loss terms and their gradients (8 per unit) and,
                       for the CNN, the un-pooled conv maps
  noise stack          the feedback losses' corrupted copies, stacked along the batch axis (level k of the DRL
                       stack holds k copies), kept for the feedback gradient
  jacobians            per-sample output Jacobians (GNT targets, angle logging)
  data on the device   the training set, its shuffled copy of the current pass, and the largest evaluation split

A population (run/population_run.py) counts the model's parts once per member, each member's evaluation splits,
and its distinct training sets once each (no shuffled copy: members read their rows in place).

It is compared with the memory the machine can give now: MemAvailable of /proc/meminfo, lowered to the cgroup's
limit minus its usage where a container sets one. Where neither is known, nothing is refused.
"""
from __future__ import annotations

import math

from tp_keras.core.rules import get_rule
from tp_keras.run.config import Config, ConfigError

GIB = 2 ** 30


def _conv_geometry(image_shape, channels=(32, 64), kernel=5):
    """(parameters, un-pooled units, pooled units) of each conv block of the paper's CNN (tp_keras.core.cnn)."""
    height, width, depth = image_shape
    blocks = []
    for c in channels:
        pooled_h, pooled_w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        blocks.append((kernel * kernel * depth * c + c, height * width * c, pooled_h * pooled_w * c))
        height, width, depth = pooled_h, pooled_w, c
    return blocks


def _chain_geometry(config: Config, image_shape):
    """(parameters, un-pooled units, pooled units) of each conv block of the launcher's conv chain
    (Config.conv_layer_specs: k×k 'same' convs, 2×2 pooling or none)."""
    height, width, depth = image_shape
    blocks = []
    for spec in config.conv_layer_specs(1)[:len(config.conv_channels)]:
        c, k = spec["filters"], spec["kernel_size"]
        pooled_h, pooled_w = (height, width) if spec["pooling"] == "none" else (height // 2, width // 2)
        blocks.append((k * k * depth * c + c, height * width * c, pooled_h * pooled_w * c))
        height, width, depth = pooled_h, pooled_w, c
    return blocks


def estimate_bytes(config: Config, *, input_size: int, image_shape, num_outputs: int, num_train: int,
                   num_eval: int, members: int = 1, train_copies: int | None = None) -> dict[str, int]:
    """The estimate's parts in bytes (see the module docstring). `num_eval`: samples of the largest evaluation
    split. `members`: a population's (run/population_run.py): every part of the model's K times, each member's
    evaluation splits, and `train_copies` training sets on the device (the distinct members' sets; a single run
    keeps two, its set and the current pass's shuffled copy)."""
    members = max(1, int(members))
    train_copies = 2 if train_copies is None else int(train_copies)
    item = 8 if config.precision == "float64" else 4
    method = get_rule(config.method)
    batch = max(1, min(int(config.batch_size), max(1, int(num_train))))
    if config.architecture == "cnn":
        blocks = _conv_geometry(tuple(image_shape))
        hidden = [b[2] for b in blocks] + [512]
        forward = sum(b[0] for b in blocks) + hidden[-2] * 512 + 512 + 512 * num_outputs + num_outputs
        extra_activations = sum(b[1] for b in blocks)
    elif config.architecture == "conv":  # the conv chain: its blocks ('same' convs), dense hidden layers, output
        blocks = _chain_geometry(config, tuple(image_shape))
        hidden = [b[2] for b in blocks] + list(config.conv_dense)
        dense = [blocks[-1][2]] + list(config.conv_dense) + [num_outputs]
        dense_params = [a * b + b for a, b in zip(dense[:-1], dense[1:])]
        forward = sum(b[0] for b in blocks) + sum(dense_params)
        extra_activations = sum(b[1] for b in blocks)
    else:
        hidden = list(config.hidden_sizes)
        widths = [input_size] + hidden + [num_outputs]
        forward = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        extra_activations = 0
    widths = [input_size] + hidden + [num_outputs]
    if method.feedback == "layerwise" and config.architecture == "conv":  # inverse blocks: as many as the forward
        feedback = sum(b[0] for b in blocks[1:]) + sum(dense_params)
    elif method.feedback == "layerwise":
        feedback = sum(widths[i + 1] * widths[i] + widths[i] for i in range(1, len(widths) - 1))
    elif method.feedback == "direct":
        feedback = sum(num_outputs * h + h for h in hidden)
    elif method.feedback == "direct_rhl":
        fb = int(config.size_hidden_fb)
        feedback = num_outputs * fb + fb + sum(fb * h + h for h in hidden)
        extra_activations += fb * len(hidden)
    else:
        feedback = 0
    trained = (widths[0] * widths[1] + widths[1] if config.only_train_first_layer else forward)
    trained += feedback if method.trains_feedback else 0
    noise_levels = sum(k * widths[k + 1] for k in range(1, len(widths) - 1)) if method.trains_feedback else 0
    jacobian_units = num_outputs * sum(hidden) if (method.target_rule == "gnt" or config.log_angles) else 0
    return {
        "parameters": members * (forward + feedback) * item,
        "optimizer": members * 3 * trained * item,
        "activations": members * batch * (8 * sum(widths) + 2 * extra_activations) * item,
        "noise stack": members * 2 * batch * noise_levels * item,
        "jacobians": members * 3 * batch * jacobian_units * item,
        "data on the device": (train_copies * int(num_train) + members * int(num_eval)) * (input_size + 1) * item,
    }


def available_bytes() -> int | None:
    """Memory the machine can give this process now (see the module docstring), or None if unknown."""
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path) as f:
                limit = f.read().strip()
            with open(usage_path) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:  # "max" or a huge number: no limit
            candidates.append(max(0, int(limit) - usage))
        break
    return min(candidates) if candidates else None


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2 ** 20:.0f} MiB"


def _culprit(config: Config, parts: dict, data_flag: str) -> str:
    """The flag to lower: the one behind the largest part."""
    largest = max(parts, key=parts.get)
    if largest == "data on the device":
        return data_flag
    if largest in ("activations", "noise stack", "jacobians"):
        return "batch_size"
    if get_rule(config.method).feedback == "direct_rhl" and config.size_hidden_fb > config.size_hidden:
        return "size_hidden_fb"
    return {"cnn": "architecture", "conv": "conv_channels"}.get(config.architecture, "size_hidden")


def check_fits(config: Config, data_flag: str = "dataset", *, members_flag: str = "seeds", **shapes) -> dict:
    """Raises ConfigError (one line: the estimate, its largest parts, the memory available, the flag to lower)
    when the run cannot fit in memory; returns the estimate's parts otherwise. `shapes`: as estimate_bytes;
    `data_flag`: the flag that sets the data's size. A population (shapes' `members` > 1) that would not fit is
    refused naming `members_flag`, with what one member needs."""
    parts = estimate_bytes(config, **shapes)
    total = sum(parts.values())
    available = available_bytes()
    if available is None or total <= available:
        return parts
    members = int(shapes.get("members", 1))
    if members > 1:
        one = sum(estimate_bytes(config, **{**shapes, "members": 1, "train_copies": 1}).values())
        shown = ", ".join(f"{name} {_size(value)}" for name, value in sorted(parts.items(), key=lambda kv: -kv[1])
                          if value >= total / 100)
        raise ConfigError(members_flag, f"{members} members need about {_size(total)} of memory ({shown}), more "
                                        f"than the {_size(available)} this machine has available (one member needs "
                                        f"about {_size(one)}); lower --{members_flag}, or run on a machine with "
                                        "more memory")
    flag = _culprit(config, parts, data_flag)
    shown = ", ".join(f"{name} {_size(value)}" for name, value in sorted(parts.items(), key=lambda kv: -kv[1])
                      if value >= total / 100)
    lower = {"dataset": "", "size_hidden": "lower --size_hidden or --num_hidden, or "}.get(flag, f"lower --{flag}, or ")
    raise ConfigError(flag, f"this run needs about {_size(total)} of memory ({shown}), more than the "
                            f"{_size(available)} this machine has available; {lower}run on a machine with more "
                            "memory")


def check_dataset_fits(config: Config, dataset) -> dict:
    """check_fits for a loaded Dataset."""
    evals = [len(s.x) for s in (dataset.val, dataset.test) if s is not None]
    return check_fits(config, input_size=int(math.prod(dataset.train.x.shape[1:])), image_shape=dataset.image_shape,
                      num_outputs=int(dataset.num_outputs), num_train=len(dataset.train.x),
                      num_eval=max(evals, default=0))

