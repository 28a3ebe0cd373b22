"""The CNN of Table 3 (docs/semantics.md §8) for BP, DDTP-linear, DDTP-control and DFA, on the one train step.

Architecture (paper sizes, all parameters of `CNNNetwork` and `CNNModel`):

    conv 5×5, 32 (stride 1, zero padding 2) → tanh → max-pool 3×3 / 2 (padding 1 of −∞)   layer 1: 16×16×32
    conv 5×5, 64                            → tanh → max-pool 3×3 / 2                      layer 2:  8×8×64
    flatten → dense 512, tanh                                                             layer 3
    dense 10, linear (logits)                                                             layer 4

Where its parts live: the conv layer `TPConv2D` in `layers.py`, the network `CNNNetwork` in `networks.py`, the
per-layer forward optimizer in `optimizers.py`; this module holds `CNNModel`, the model under its first name.

How it rides on `tp_keras.core.step` unchanged:

* A conv layer (`TPConv2D`) is conv → tanh → pool, and its activation h_ℓ is the **pooled** map, returned
  flattened (NHWC order, one row per sample). It reads its input either as NHWC images or as such a flattened
  map, so `model.activations(x, detach_inputs)`, the stacked noisy passes of the DRL loss
  (`losses.noisy_forward_stack`, which applies layer k to rows of flattened maps) and the element-mean feedback
  losses (`losses.element_mean_square`, mean over B × units) work on the CNN as they do on the MLP.
* The direct feedback from the output to each hidden layer is the MLP's `layers.DirectFeedback`: a linear map
  Q_ℓ from the 10 logits to the layer's flattened pooled map (i.e. Q_ℓ reshaped onto the pooled map), **without
  bias for the conv layers** and with a bias for the dense hidden layer, as the reference's DDTPConvLayer and
  DDTPMLPLayer. Targets ĥ_ℓ = Q_ℓĥ_L + h_ℓ − Q_ℓh_L (`targets.direct_targets`); DRL and control losses are
  `losses.direct_drl` / `losses.direct_control` on the pooled maps. Xavier-normal from each Q's own shape.
* Local losses (`CNNNetwork.local_loss_scales`, read by `step.compute_updates` through the model): the conv layers use the **element
  mean** (1/(B·C·H·W))·Σ‖h_ℓ − ĥ_ℓ‖² (PyTorch `mse_loss` in the reference), the dense layers the docs/semantics.md §2.2
  loss (1/B)·Σ‖h_ℓ − ĥ_ℓ‖². Each is differentiated with the layer's input detached, so the conv gradient flows through
  the layer's own pool, tanh and conv only.
* One forward optimizer per layer (the reference's list-valued `lr` / `epsilon`, docs/semantics.md §4.5):
  `optimizers.LayerwiseOptimizer` puts one optimizer per layer behind the single-optimizer interface the step,
  `step.Trainer` and the checkpoints use (`build`, `apply_gradients`, `variables`); `optimizers.layerwise_adam`
  builds it from per-layer lr and ε.

Every forward bias exists (the MLP DDTP-linear quirk of a bias-less last hidden layer is not in the reference's
CNNs). BP is the same forward network trained by the gradient of the loss.
"""
from __future__ import annotations

from typing import Sequence

import keras

from tp_keras.core.keras_checks import model_precision
from tp_keras.core.model import TPModel
from tp_keras.core.networks import CNNNetwork
from tp_keras.core.rules import LearningRule, get_rule


@keras.saving.register_keras_serializable(package="tp_keras")
class CNNModel(TPModel):
    """`TPModel(method, network=CNNNetwork(method, ...))` under its first name: the Table 3 CNN set up for one
    method, 'bp', 'ddtp_linear', 'ddtp_control' or 'dfa'. The class adds no behaviour (the network holds the
    layers and their maps); it keeps the constructor, `isinstance` checks and `.keras` files of earlier versions.

    Args: `CNNNetwork`'s (image_shape, conv_channels, fc_units, output_size, kernel_size, hidden_activation, seed,
    dtype) and `TPModel`'s target_stepsize and sigma.

    Per-layer learning rates and ε: train with
    `step.Trainer(model, optimizers.layerwise_adam(model, lrs, ..., epsilons))`.
    `compile(forward_optimizer=...)` / `fit` take one forward optimizer (the same one for every layer).
    """

    def __init__(self, method: str | LearningRule = "ddtp_linear", image_shape: Sequence[int] = (32, 32, 3),
                 conv_channels: Sequence[int] = (32, 64), fc_units: Sequence[int] = (512,), output_size: int = 10,
                 *, kernel_size: int = 5, target_stepsize: float | None = None, sigma: float | None = None,
                 hidden_activation: str = "tanh", seed: int = 42, dtype: str | None = None, **kwargs):
        rule = get_rule(method)
        network = CNNNetwork(rule, image_shape, conv_channels, fc_units, output_size, kernel_size=kernel_size,
                             hidden_activation=hidden_activation, seed=seed, dtype=model_precision(dtype))
        super().__init__(rule, target_stepsize=target_stepsize, sigma=sigma, seed=seed, network=network,
                         dtype=dtype, **kwargs)

    @property
    def conv_layers(self) -> list:
        return self.network.conv_layers

    def get_config(self):
        method = self._saved_method()
        network = self.network.get_config()
        return {"method": method, **{k: network[k] for k in ("image_shape", "conv_channels", "fc_units", "output_size",
                                                             "kernel_size")},
                "target_stepsize": self.target_stepsize, "sigma": self.sigma,
                "hidden_activation": network["hidden_activation"], "seed": self.seed, "dtype": self.dtype_policy.name,
                "name": self.name, **self._saved_state()}
