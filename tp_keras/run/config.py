"""`Config`: every setting of one experiment, with the paper's MNIST configuration of each method as defaults."""
from __future__ import annotations

import dataclasses
import math
import numbers

from tp_keras.core.rules import HyperParameterError, RULES, UnusedSettingError, get_rule
from tp_keras.reference import configs as paper_configs
from tp_keras.reference.facts import CNN_METHODS
from tp_keras.run.data import DATASETS

PRECISIONS = ("float32", "float64")
OPTIMIZERS = ("adam", "sgd")  # core.optimizers.TorchAdam, TorchSGD
LR_SCHEDULES = ("none", "cosine")
ARCHITECTURES = ("mlp", "cnn", "conv")
# --architecture=cnn (docs/semantics.md §8): the CNN's layers (conv1, conv2, dense 512, output), each with its own
# forward Adam when --lr / --epsilon give one value per layer; its methods are paper_facts.CNN_METHODS.
CNN_NUM_LAYERS = 4
# --architecture=conv (docs/semantics.md §8.8): a ConvChainNetwork (tp_keras/core/conv_networks.py) of conv blocks
# and dense layers; its choices (conv_layers.POOLINGS less the CNN's 3×3 pooling, KERNEL_SIZES, layers.ACTIVATIONS
# less 'linear', conv_networks.INITS and CONV_LOSSES: written here too, as this module loads no TensorFlow;
# tests/test_conv_launch.py checks they agree).
CONV_POOLINGS = ("none", "max", "average")
CONV_KERNEL_SIZES = (3, 5)
CONV_ACTIVATIONS = ("elu", "relu", "tanh")
INITS = ("xavier", "torch")
CONV_LOSSES = ("sum", "mean")
# Training-set augmentation (tp_keras.run.data.crop_flip): 'crop_flip' is the L-DRL authors' random horizontal flip
# then random crop from the image padded by 4 edge pixels, drawn anew every pass.
AUGMENTATIONS = ("none", "crop_flip")
# The conv chain's settings and their defaults, refused where given with another architecture.
CONV_FIELDS = ("conv_channels", "conv_kernel_size", "conv_activation", "conv_pooling", "conv_dense", "init",
               "conv_loss")

# The largest seed every generator a run seeds accepts (NumPy's legacy seeding, behind
# keras.utils.set_random_seed, takes 0..2**32 − 1), and the largest size or count: TensorFlow indexes and shapes
# some tensors with int32.
MAX_SEED = 2 ** 32 - 1
MAX_INT = 2 ** 31 - 1
# Integer settings and their smallest value (the largest is MAX_INT, MAX_SEED for the seed).
_INTEGERS = {"seed": 0, "num_hidden": 1, "size_hidden": 1, "size_hidden_fb": 1, "batch_size": 1, "epochs": 0,
             "epochs_fb": 0, "extra_fb_epochs": 0, "validation_size": 0, "log_interval": 1}

# Keys of the reference's configs that map one-to-one onto Config fields.
_PAPER_KEYS = ("lr", "target_stepsize", "beta1", "beta2", "epsilon", "forward_wd", "lr_fb", "beta1_fb",
               "beta2_fb", "epsilon_fb", "feedback_wd", "sigma", "batch_size", "epochs", "epochs_fb",
               "extra_fb_epochs", "num_hidden", "size_hidden", "size_hidden_fb", "recurrent_input")


class ConfigError(ValueError):
    """A bad setting. `str(err)` is one line naming the flag and the fix."""

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"--{flag}: {message}")


@dataclasses.dataclass
class Config:
    method: str = "dtpdrl"
    dataset: str = "mnist"
    data_dir: str | None = None
    seed: int = 42
    # Architecture: 'mlp' (num_hidden tanh layers of size_hidden units, linear output) or 'cnn' (the Table 3 CNN,
    # tp_keras/core/cnn.py, on the dataset's images; num_hidden and size_hidden do not apply).
    architecture: str = "mlp"
    num_hidden: int = 5
    size_hidden: int = 256
    # Architecture 'conv' (docs/semantics.md §8.8): one conv block per conv_channels value (conv k×k 'same',
    # k = conv_kernel_size, → conv_activation → 2×2 conv_pooling: one value, or one per block), then one dense
    # hidden layer (conv_activation) per conv_dense value (none: the blocks feed the output layer), then the linear
    # output layer; init 'xavier' or 'torch' (PyTorch's default layer init, the L-DRL authors'), the conv layers'
    # local loss 'sum' or 'mean' (ConvChainNetwork's arguments). num_hidden and size_hidden do not apply.
    conv_channels: tuple = ()
    conv_kernel_size: int = 3
    conv_activation: str = "elu"
    conv_pooling: str | tuple = "max"
    conv_dense: tuple = ()
    init: str = "xavier"
    conv_loss: str = "sum"
    # Training-set augmentation, every pass: 'none' or 'crop_flip' (AUGMENTATIONS; image architectures only).
    augment: str = "none"
    # The rule's output_batch_norm (a batch-normalising rule, fw_dtp_bn: the logits normalised too, FW-DTP's
    # authors' `--forward_last_activation=linear-BN`); refused for a rule without batch_norm.
    output_batch_norm: bool = False
    # Forward optimizer, PyTorch semantics (docs/semantics.md §4): 'adam' (TorchAdam: beta1, beta2, epsilon) or
    # 'sgd' (TorchSGD with `momentum`), both with the coupled L2 forward_wd; its learning rate is
    # lr/target_stepsize when normalize_lr. lr and (Adam) epsilon may be tuples, one value per layer (the CNN's 4,
    # or an MLP's num_hidden + 1): one optimizer per layer (docs/semantics.md §4.5, §4.7).
    optimizer: str = "adam"
    momentum: float = 0.0
    lr: float | tuple = 1e-4
    # The rule's hyper-parameters (target_stepsize, sigma, feedback_iterations, gn_damping_training): None takes the
    # rule's default (core/rules, the one place it is written); `paper` gives the method's paper values.
    target_stepsize: float | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float | tuple = 1e-8
    forward_wd: float = 0.0
    normalize_lr: bool = True
    # Feedback optimizer ('adam' or 'sgd' with momentum_fb, as the forward one) and feedback loss. lr_fb may be a
    # tuple, one value per hidden layer, for a rule with one feedback optimizer per hidden layer (ldrl).
    optimizer_fb: str = "adam"
    momentum_fb: float = 0.0
    lr_fb: float | tuple = 1e-4
    beta1_fb: float = 0.9
    beta2_fb: float = 0.999
    epsilon_fb: float = 1e-8
    feedback_wd: float = 0.0
    sigma: float | tuple | None = None
    # Rules that train their feedback first (ldrl): feedback steps per batch, one value or one per hidden layer
    # (None: the rule's; it stays None here).
    feedback_iterations: int | tuple | None = None
    # DDTP-RHL's fixed random feedback layer, and its recurrent-input variant.
    size_hidden_fb: int = 1024
    recurrent_input: bool = False
    # Tikhonov damping of the GNT targets (method 'gnt').
    gn_damping_training: float | None = None
    # Schedule. lr_schedule: the forward learning rate by epoch, 'none' or 'cosine' (PyTorch's CosineAnnealingLR
    # stepped after every epoch: epoch e, from 0, trains at lr_min + (lr − lr_min)(1 + cos(π·e/T))/2 with
    # T = lr_schedule_epochs, which validate sets to epochs when not given; docs/semantics.md §4.8).
    lr_schedule: str = "none"
    lr_schedule_epochs: int | None = None
    lr_min: float = 0.0
    batch_size: int = 128
    epochs: int = 100
    epochs_fb: int = 0
    extra_fb_epochs: int = 0
    # Data split.
    no_val_set: bool = False
    validation_size: int = 5000
    # Diagnostics (docs/semantics.md §13.2–13.5): angles of the weight updates against BP and GNT every log_interval
    # batches, with the GNT update's Tikhonov damping (one value, or one per hidden layer).
    log_angles: bool = False
    log_interval: int = 80
    gn_damping: tuple = (0.0,)
    # Frozen-MNIST (docs/semantics.md §11): only the first hidden layer's forward weights train.
    only_train_first_layer: bool = False
    # Numerics and options.
    precision: str = "float32"
    last_hidden_bias: bool | None = None
    jit_compile: bool | None = None  # None: the device's default (loop.device_defaults: off on a CPU)
    # TensorFloat-32 for float32 matmuls and convolutions on NVIDIA GPUs from Ampere on (TensorFlow's default
    # there). Off: full float32, as the reference's float32 matmuls (PyTorch's default). No effect on a CPU or in
    # float64.
    tf32: bool = False
    # Batches per compiled call of the custom loop: a number, "epoch" (a whole pass) or "auto" (the device's
    # default, loop.device_defaults). Results are bit-identical whatever the value (tp_keras/core/loop.py).
    steps_per_call: int | str = "auto"
    prune_early: bool = False
    progress: bool = True

    def __post_init__(self):
        # Per-layer settings: a one-element list is the plain value, a longer list a tuple (hashable, JSON-able).
        for name in ("lr", "epsilon", "lr_fb", "sigma", "feedback_iterations"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, value[0] if len(value) == 1 else tuple(value))
        for name in ("conv_channels", "conv_dense"):  # always a tuple, one value per layer
            value = getattr(self, name)
            setattr(self, name, tuple(value) if isinstance(value, (list, tuple)) else (value,))
        if isinstance(self.conv_pooling, (list, tuple)):
            self.conv_pooling = self.conv_pooling[0] if len(self.conv_pooling) == 1 else tuple(self.conv_pooling)
        rule = RULES.get(self.method)  # an unknown method is refused by validate
        if rule is not None:
            for flag, field in _RULE_DEFAULTS:
                if getattr(self, flag) is None:
                    setattr(self, flag, getattr(rule, field))

    @classmethod
    def paper(cls, method: str, **overrides) -> "Config":
        """The paper's MNIST configuration of `method` (see reference/configs.py; 'tp' and 'gnt', which have none,
        borrow DTP's and BP's), with `overrides` applied.

        Precision stays float32 unless overridden (the reference ran most configs in float64). An override of a
        flag the method does not use (RULE_FLAGS, e.g. lr_fb for fw_dtp) with a value other than the method's
        default is refused by `validate` (`_note_rule_flags`)."""
        values = {"method": method}
        ref = paper_configs.MNIST_CONFIGS.get(paper_configs.DEFAULTS_FROM.get(method, method))
        if ref is not None:
            values.update({k: ref[k] for k in _PAPER_KEYS})
        defaults = dict(values)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return _note_rule_flags(cls(**values), cls(**defaults))

    @classmethod
    def from_paper_cell(cls, name: str, **overrides) -> "Config":
        """The reference's final config `name` (a key of paper_configs.FINAL_CONFIGS and the name of its flagfile
        launch/<name>.flags, e.g. 'fashion_mnist_train_DTP'): its method, dataset, architecture, precision,
        validation split, Frozen-MNIST switch and every hyper-parameter, exact; `overrides` applied last.

        The reference's config bugs (docs/semantics.md §15) are handled as paper_configs.NOTES says
        (e.g. cifar10_DDTPControl runs ddtp_control)."""
        cell = paper_configs.FINAL_CONFIGS.get(name)
        if cell is None:
            raise ConfigError("cell", f"unknown paper config {name!r}; the names are those of launch/*.flags, "
                                      "e.g. mnist_DDTPlinear")
        values = {k: cell[k] for k in _PAPER_KEYS if k in cell}
        values.update(method=cell["method"], dataset=cell["dataset"], precision=cell["precision"],
                      no_val_set=cell["no_val_set"], only_train_first_layer=cell["only_train_first_layer"])
        if cell["architecture"] != "mlp":
            if "architecture" not in {field.name for field in dataclasses.fields(cls)}:
                raise ConfigError("architecture", f"{name} is a {cell['architecture']} config, which this build "
                                                  "cannot run")
            values["architecture"] = cell["architecture"]
        values.update(overrides)
        return cls.paper(values.pop("method"), **values)

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.size_hidden] * self.num_hidden

    @property
    def hidden_layer_count(self) -> int:
        """The number of hidden layers (the per-hidden-layer settings take one value each): the conv chain's blocks
        and dense hidden layers, or num_hidden."""
        if self.architecture == "conv":
            return len(self.conv_channels) + len(self.conv_dense)
        return self.num_hidden

    @property
    def uses_images(self) -> bool:
        """Whether the network reads NHWC images (the CNN, the conv chain) rather than flattened vectors."""
        return self.architecture in ("cnn", "conv")

    def conv_layer_specs(self, num_outputs: int) -> list[dict]:
        """The conv chain's `layer_specs` (ConvChainNetwork): its conv blocks, dense hidden layers and the linear
        output layer of `num_outputs` units."""
        poolings = _values(self.conv_pooling)
        if len(poolings) == 1:
            poolings *= len(self.conv_channels)
        specs = [{"filters": int(c), "kernel_size": int(self.conv_kernel_size), "activation": self.conv_activation,
                  "pooling": p} for c, p in zip(self.conv_channels, poolings)]
        specs += [{"units": int(u), "activation": self.conv_activation} for u in self.conv_dense]
        return specs + [{"units": int(num_outputs), "activation": "linear"}]

    @property
    def rule(self):
        """The learning rule the model trains with: the method's, with `output_batch_norm` when set."""
        method = get_rule(self.method)
        return dataclasses.replace(method, output_batch_norm=True) if self.output_batch_norm else method

    @property
    def forward_learning_rate(self) -> float | tuple:
        """The forward Adam's learning rate: lr / target_stepsize when normalize_lr (docs/semantics.md §15.1); a tuple,
        one per layer, when lr is one (the CNN, docs/semantics.md §4.5: each layer's Adam takes lr[i]/η̂)."""
        if self.normalize_lr and get_rule(self.method).uses_targets:
            if isinstance(self.lr, (list, tuple)):
                return tuple(v / self.target_stepsize for v in self.lr)
            return self.lr / self.target_stepsize
        return self.lr

    def validate(self) -> "Config":
        """Raises ConfigError (one line, naming the flag and the fix) for any bad setting."""
        if self.method not in RULES:
            raise ConfigError("method", f"unknown method {self.method!r}; choose one of {', '.join(RULES)}")
        if self.dataset not in DATASETS:
            raise ConfigError("dataset", f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"{self.precision!r} is not supported; use float32 or float64")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError("architecture", f"unknown architecture {self.architecture!r}; choose one of "
                                              f"{', '.join(ARCHITECTURES)}")
        cnn = self.architecture == "cnn"
        if cnn:
            self._validate_cnn()
        self._validate_conv()
        self._validate_augment()
        if self.output_batch_norm and not get_rule(self.method).batch_norm:
            raise ConfigError("output_batch_norm", f"normalises the logits of a batch-normalised network, and "
                                                   f"{self.method} has none; use --method=fw_dtp_bn or drop the flag")
        for name in ("lr", "epsilon"):
            count = len(_values(getattr(self, name)))
            if cnn and count not in (1, CNN_NUM_LAYERS):
                raise ConfigError(name, f"{count} values given; the CNN takes one value or one per layer "
                                        f"({CNN_NUM_LAYERS}: conv1, conv2, dense, output), e.g. --{name}=a,b,c,d")
            if self.architecture == "conv" and count not in (1, self.hidden_layer_count + 1):
                raise ConfigError(name, f"{count} values given; this conv chain takes one value or one per layer "
                                        f"({self.hidden_layer_count + 1}: the {len(self.conv_channels)} conv "
                                        f"blocks, {len(self.conv_dense)} dense hidden layers, then the output "
                                        "layer)")
            if self.architecture == "mlp" and count not in (1, self.num_hidden + 1):
                raise ConfigError(name, f"{count} values given; this MLP takes one value or one per layer "
                                        f"({self.num_hidden + 1}: the {self.num_hidden} hidden layers, then the "
                                        "output layer)")
        for name, lowest in _INTEGERS.items():
            _integer(self, name, lowest, MAX_SEED if name == "seed" else MAX_INT)
        method = get_rule(self.method)
        _positive(self, "lr", "e.g. --lr=1e-4")
        _positive(self, "batch_size", "e.g. --batch_size=128")
        _positive(self, "num_hidden", "the network needs at least one hidden layer, e.g. --num_hidden=5")
        _positive(self, "size_hidden", "e.g. --size_hidden=256")
        _positive(self, "size_hidden_fb", "e.g. --size_hidden_fb=1024")
        for name in ("epochs", "epochs_fb", "extra_fb_epochs", "forward_wd", "feedback_wd"):
            _non_negative(self, name)
        for name in ("epsilon", "epsilon_fb"):
            _non_negative(self, name)
        for name in ("beta1", "beta2", "beta1_fb", "beta2_fb"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0):
                raise ConfigError(name, f"{value} is outside [0, 1); Adam's decay rates must be in [0, 1), e.g. 0.9")
        _check_rule_flags(self, method)
        self._validate_rule(method)
        if method.trains_feedback:
            _positive(self, "lr_fb", "e.g. --lr_fb=1e-4")
        self._validate_optimizers(method)
        self._validate_lr_schedule()
        self.steps_per_call = parse_steps_per_call(self.steps_per_call)
        _positive(self, "log_interval", "e.g. --log_interval=80 (angles every 80th batch of an epoch)")
        damping = self.gn_damping if isinstance(self.gn_damping, (list, tuple)) else (self.gn_damping,)
        if len(damping) not in (1, self.num_hidden):
            raise ConfigError("gn_damping", f"{len(damping)} values given; give one value or one per hidden layer "
                                            f"({self.num_hidden}), e.g. --gn_damping=1,1,1,1,0.0001")
        if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) for v in damping):
            raise ConfigError("gn_damping", f"{list(damping)}: every value must be a finite number >= 0")
        if self.log_angles and method.batch_dependent:
            raise ConfigError("log_angles", f"{self.method} batch-normalises its layers, so the per-sample Jacobians "
                                            "the angles are computed from do not exist; drop --log_angles")
        if self.only_train_first_layer and self.log_angles:
            raise ConfigError("log_angles", "angles compare every layer's update; with --only_train_first_layer "
                                            "only the first layer has one: drop one of the two flags")
        if self.validation_size < 1 and not self.no_val_set:
            raise ConfigError("validation_size", f"{self.validation_size} must be >= 1 (or pass --no_val_set)")
        return self

    def _validate_rule(self, method) -> None:
        """The rule's hyper-parameters that the method uses, checked by the rule (`LearningRule`, and
        `check_layers` for one value per hidden layer) and refused in the launcher's words: the flag, the value as
        given, the rule's fix with the flag in its example."""
        values = {field: getattr(self, flag) for field, flag in RULE_FIELD_FLAGS.items()}
        try:
            method.with_hyper_parameters(**method.used(**values)).check_layers(self.hidden_layer_count)
        except HyperParameterError as err:
            flag = RULE_FIELD_FLAGS[err.field]
            shown = ",".join(map(str, err.value)) if isinstance(err.value, tuple) else str(err.value)
            raise ConfigError(flag, err.reworded(shown, f"--{flag}")) from None

    def _validate_optimizers(self, method) -> None:
        """--optimizer/--optimizer_fb and the settings only one of the two kinds uses: momentum is SGD's, β1, β2
        and ε Adam's (refused where given with the other kind); per-layer feedback learning rates need a rule with
        one feedback optimizer per hidden layer."""
        for flag, momentum in (("optimizer", "momentum"), ("optimizer_fb", "momentum_fb")):
            kind = getattr(self, flag)
            if kind not in OPTIMIZERS:
                raise ConfigError(flag, f"unknown optimizer {kind!r}; choose one of {', '.join(OPTIMIZERS)}")
            value = getattr(self, momentum)
            if not (isinstance(value, numbers.Real) and 0.0 <= value < 1.0):
                raise ConfigError(momentum, f"{value} is outside [0, 1); SGD's momentum must be in [0, 1), e.g. 0.9")
            if value and kind != "sgd":
                raise ConfigError(momentum, f"{value} is SGD's momentum, unused by --{flag}={kind}; add "
                                            f"--{flag}=sgd or drop the flag")
        for flag in getattr(self, "_optimizer_flags_given", ()):
            kind_flag, kind = OPTIMIZER_FLAGS[flag]
            if getattr(self, kind_flag) != kind:
                shown = ",".join(map(str, getattr(self, flag))) if isinstance(getattr(self, flag), tuple) \
                    else getattr(self, flag)
                raise ConfigError(flag, f"{shown} is {kind.capitalize()}'s setting, unused by "
                                        f"--{kind_flag}={getattr(self, kind_flag)}; drop the flag or use "
                                        f"--{kind_flag}={kind}")
        count = len(_values(self.lr_fb))
        if method.trains_feedback and count > 1:
            if not method.schedule.per_layer_optimizers:
                raise ConfigError("lr_fb", f"{count} values given; {self.method} trains its feedback with one "
                                           "optimizer: give one value (one per hidden layer is for ldrl)")
            if count != self.hidden_layer_count:
                raise ConfigError("lr_fb", f"{count} values given; give one value or one per hidden layer "
                                           f"({self.hidden_layer_count}), first layer first")

    def _validate_lr_schedule(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError("lr_schedule", f"unknown schedule {self.lr_schedule!r}; choose one of "
                                             f"{', '.join(LR_SCHEDULES)}")
        if self.lr_schedule == "none":
            for flag, default in (("lr_schedule_epochs", None), ("lr_min", 0.0)):
                if getattr(self, flag) != default:
                    raise ConfigError(flag, f"{getattr(self, flag)} sets the cosine schedule, which is off; add "
                                            "--lr_schedule=cosine or drop the flag")
            return
        if self.lr_schedule_epochs is None:
            self.lr_schedule_epochs = max(self.epochs, 1)  # (--epochs=0 trains no epoch to schedule)
        check_integer("lr_schedule_epochs", self.lr_schedule_epochs, 1, MAX_INT, example=85)
        _non_negative(self, "lr_min")

    def _validate_conv(self) -> None:
        """The conv chain's settings: refused with another architecture where they differ from their defaults, and
        checked (with the MLP and rule settings a conv chain cannot take) with --architecture=conv."""
        if self.architecture != "conv":
            for name in CONV_FIELDS:
                if _differs(getattr(self, name), getattr(Config, name)):
                    shown = ",".join(map(str, _values(getattr(self, name))))
                    raise ConfigError(name, f"{shown} sets the conv chain, which --architecture={self.architecture} "
                                            "does not build; add --architecture=conv or drop the flag")
            return
        method = get_rule(self.method)
        if method.batch_dependent:
            raise ConfigError("method", f"{self.method} has no conv chain (its batch normalisation is built for the "
                                        "MLP, as its authors'); use --architecture=mlp, or fw_dtp")
        if method.target_rule == "gnt" or method.feedback == "direct_rhl":
            why = ("Gauss-Newton targets need dense layers' Jacobians" if method.target_rule == "gnt" else
                   "its random feedback layer has no conv version")
            raise ConfigError("method", f"{self.method} has no conv chain ({why}); use --architecture=mlp or "
                                        "another method")
        if self.dataset not in _IMAGE_DATASETS:
            raise ConfigError("dataset", f"the conv chain needs images; {self.dataset} has none (use "
                                         f"{' or '.join(_IMAGE_DATASETS)})")
        for flag in getattr(self, "_mlp_flags_given", ()):
            raise ConfigError(flag, f"{getattr(self, flag)} sets the MLP, which --architecture=conv does not build; "
                                    "drop the flag (the conv chain's dense hidden layers are --conv_dense)")
        for flag, reason in (("log_angles", self.log_angles), ("only_train_first_layer", self.only_train_first_layer),
                             ("last_hidden_bias", self.last_hidden_bias is not None)):
            if reason:
                raise ConfigError(flag, "an MLP setting, which the conv chain does not take; drop the flag or use "
                                        "--architecture=mlp")
        if not self.conv_channels:
            raise ConfigError("conv_channels", "the conv chain needs at least one conv block; give its channels, "
                                               "e.g. --conv_channels=128,128,256,256,512")
        for name in ("conv_channels", "conv_dense"):
            for value in getattr(self, name):
                check_integer(name, value, 1, MAX_INT, example="128,256")
        check_integer("conv_kernel_size", self.conv_kernel_size, 1, MAX_INT, example=3)
        for name, choices in (("conv_kernel_size", CONV_KERNEL_SIZES), ("conv_activation", CONV_ACTIVATIONS),
                              ("init", INITS), ("conv_loss", CONV_LOSSES)):
            if getattr(self, name) not in choices:
                raise ConfigError(name, f"{getattr(self, name)!r} is not supported; choose one of "
                                        f"{', '.join(map(str, choices))}")
        poolings = _values(self.conv_pooling)
        if len(poolings) not in (1, len(self.conv_channels)):
            raise ConfigError("conv_pooling", f"{len(poolings)} values given; give one for every conv block or one "
                                              f"per block ({len(self.conv_channels)}), e.g. --conv_pooling=none,max")
        for pooling in poolings:
            if pooling not in CONV_POOLINGS:
                raise ConfigError("conv_pooling", f"{pooling!r} is not supported; choose one of "
                                                  f"{', '.join(CONV_POOLINGS)}")
        height, width = _IMAGE_SIZES[self.dataset]
        for block, pooling in enumerate(poolings * (len(self.conv_channels) if len(poolings) == 1 else 1), 1):
            if pooling != "none":
                height, width = height // 2, width // 2
                if min(height, width) < 1:
                    raise ConfigError("conv_pooling", f"block {block}'s 2×2 pooling leaves no pixel of the "
                                                      f"{self.dataset} images; pool less (e.g. 'none' for some "
                                                      "blocks) or use fewer blocks")

    def _validate_augment(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ConfigError("augment", f"unknown augmentation {self.augment!r}; choose one of "
                                         f"{', '.join(AUGMENTATIONS)}")
        if self.augment != "none" and not (self.uses_images and self.dataset in _IMAGE_DATASETS):
            raise ConfigError("augment", f"{self.augment} transforms images; --architecture={self.architecture} on "
                                         f"{self.dataset} reads none: use --architecture=conv or cnn, or drop the "
                                         "flag")

    def _validate_cnn(self) -> None:
        if self.method not in CNN_METHODS:
            raise ConfigError("method", f"{self.method} has no CNN; with --architecture=cnn choose one of "
                                        f"{', '.join(CNN_METHODS)}")
        if self.dataset not in ("mnist", "fashion_mnist", "cifar10"):
            raise ConfigError("dataset", f"the CNN needs images; {self.dataset} has none (use cifar10)")
        if self.log_angles:
            raise ConfigError("log_angles", "angles are implemented for the MLP only; drop --log_angles or use "
                                            "--architecture=mlp")
        if self.only_train_first_layer:
            raise ConfigError("only_train_first_layer", "Frozen-MNIST is an MLP setting; drop the flag or use "
                                                        "--architecture=mlp")
        if self.last_hidden_bias is not None:
            raise ConfigError("last_hidden_bias", "the CNN keeps every forward bias (as the reference's CNNs); "
                                                  "drop the flag")


_IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
_IMAGE_SIZES = {"mnist": (28, 28), "fashion_mnist": (28, 28), "cifar10": (32, 32)}
# The MLP's flags, refused with --architecture=conv where given with a value other than the method's default.
_MLP_FLAGS = ("num_hidden", "size_hidden")


# --- flags the method does not use (the rule decides: LearningRule.uses) ------------------------------------------
# Each launcher flag that only some methods use, and the rule's name for the setting it gives.
RULE_FLAGS = {"sigma": "sigma", "target_stepsize": "target_stepsize", "gn_damping_training": "gn_damping",
              "feedback_iterations": "feedback_iterations", "lr_fb": "feedback_optimizer",
              "beta1_fb": "feedback_optimizer", "beta2_fb": "feedback_optimizer", "epsilon_fb": "feedback_optimizer",
              "feedback_wd": "feedback_optimizer", "optimizer_fb": "feedback_optimizer",
              "momentum_fb": "feedback_optimizer", "epochs_fb": "feedback_schedule",
              "extra_fb_epochs": "feedback_schedule", "size_hidden_fb": "size_hidden_fb",
              "recurrent_input": "recurrent_input"}
# The settings of one kind of optimizer: the flag choosing the kind, and the kind that uses the setting (refused,
# where given, with the other kind; momentum is checked by value, its default 0 being plain SGD).
OPTIMIZER_FLAGS = {"beta1": ("optimizer", "adam"), "beta2": ("optimizer", "adam"), "epsilon": ("optimizer", "adam"),
                   "beta1_fb": ("optimizer_fb", "adam"), "beta2_fb": ("optimizer_fb", "adam"),
                   "epsilon_fb": ("optimizer_fb", "adam")}
# The rule's hyper-parameters and the flags that give them (gn_damping: --gn_damping_training, as the reference;
# --gn_damping is the angles' damping).
RULE_FIELD_FLAGS = {"sigma": "sigma", "target_stepsize": "target_stepsize", "gn_damping": "gn_damping_training",
                    "feedback_iterations": "feedback_iterations"}
# The fields that take the rule's default when neither the paper nor the caller gives them (not
# feedback_iterations: None is the rule's there, and it stays None).
_RULE_DEFAULTS = (("sigma", "sigma"), ("target_stepsize", "target_stepsize"), ("gn_damping_training", "gn_damping"))


def _note_rule_flags(config: Config, defaults: Config) -> Config:
    """Records on `config` (`Config.paper`'s result) which of RULE_FLAGS were given and differ from the method's
    default (`defaults`): the flags `validate` refuses where the method does not use them; and likewise which of
    OPTIMIZER_FLAGS (Adam's settings), refused where the chosen optimizer is SGD. A paper flagfile's Adam settings
    other than the method's default are therefore refused with --optimizer=sgd: they were tuned for its Adam.

    "Given" means a non-None override of Config.paper: the launcher's flags, from the command line or a flagfile
    (absl leaves a flag that neither sets None). A value equal to the method's default is what the method ignores
    anyway and is accepted: flags always have a value, and the paper flagfiles (launch/*.flags, generated from
    tp_keras/reference/configs.py) carry every reference value, used or not; none of them carries an unused value other
    than its method's default (tests/test_rule_settings.py checks this), so every flagfile still runs, and an unused
    value that changes anything is refused, not warned about. A Config built field by field (`Config(...)`)
    records nothing."""
    config._rule_flags_given = tuple(flag for flag in RULE_FLAGS
                                     if _differs(getattr(config, flag), getattr(defaults, flag)))
    config._optimizer_flags_given = tuple(flag for flag in OPTIMIZER_FLAGS
                                          if _differs(getattr(config, flag), getattr(defaults, flag)))
    config._mlp_flags_given = tuple(flag for flag in _MLP_FLAGS
                                    if _differs(getattr(config, flag), getattr(defaults, flag)))
    return config


def _differs(a, b) -> bool:
    try:
        return not bool(a == b)
    except (TypeError, ValueError):
        return True


def _check_rule_flags(config: Config, method) -> None:
    """Refuses a flag noted by `_note_rule_flags` that the method does not use, in the launcher's words."""
    for flag in getattr(config, "_rule_flags_given", ()):
        value = getattr(config, flag)
        try:
            method.check_used(RULE_FLAGS[flag], value)
        except UnusedSettingError as err:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            users = [name for name, rule in RULES.items() if rule.uses(err.setting)]
            who = ", ".join(users) if len(users) <= 3 else _FLAG_USERS[err.setting]
            raise ConfigError(flag, f"{shown} is not used by {config.method} ({err.reason}); drop the flag (it is "
                                    f"for {who})") from None


# Who uses a setting, in the launcher's words, where more than three methods do.
_FLAG_USERS = {"sigma": "methods that train their feedback", "target_stepsize": "methods that propagate targets",
               "feedback_optimizer": "methods that train their feedback",
               "feedback_schedule": "methods that train their feedback"}


def _values(value) -> tuple:
    """A setting that may hold one value per layer, as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def check_integer(name: str, value, lowest: int = 0, highest: int = MAX_INT, example=None) -> int:
    """`value` as an int if it is a whole number in lowest..highest; otherwise ConfigError naming --name."""
    example = f", e.g. --{name}={example}" if example is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(name, f"{value!r} is not an integer; give a whole number{example}")
    if not lowest <= value <= highest:
        why = " (the range NumPy's, TensorFlow's and Keras' seeding accept)" if name == "seed" else ""
        raise ConfigError(name, f"{value} must be between {lowest} and {highest}{why}{example}")
    return int(value)


def _integer(config, name, lowest, highest):
    check_integer(name, getattr(config, name), lowest, highest, example=getattr(Config, name))


def _positive(config, name, hint):
    for value in _values(getattr(config, name)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ConfigError(name, f"{value} must be > 0; {hint}")


def _non_negative(config, name):
    for value in _values(getattr(config, name)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise ConfigError(name, f"{value} must be >= 0")


def parse_steps_per_call(value) -> int | str:
    """'auto', 'epoch' or a positive integer (batches per compiled call); ConfigError (one line) otherwise."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "epoch"):
        return value.strip().lower()
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or number < 1 or (isinstance(value, float) and value != number):
        raise ConfigError("steps_per_call", f"{value!r} is not a number of batches per compiled call; give a "
                                            "positive integer, 'epoch' (a whole pass per call) or 'auto' (the "
                                            "device's default)")
    return number
