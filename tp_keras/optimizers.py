"""Adam with PyTorch semantics, as a Keras 3 optimizer.

The reference trains everything with `torch.optim.Adam`, whose hyper-parameters (tuned ε up to 1e-4) only
transfer if the update is reproduced exactly. Keras' own Adam differs in two ways that matter here:

* ε placement: Keras folds the bias corrections into the step size and adds ε to √v ("ε-hat"); PyTorch adds ε
  to √v̂, *after* bias correction. With β2 = 0.999 the two differ by a factor √(1−β2^t) ≈ 1/31 at t = 1.
* weight decay: Keras' `weight_decay=` is decoupled (AdamW). PyTorch's Adam `weight_decay` is *coupled* L2,
  g ← g + wd·θ before the moment updates. The reference uses it on the feedback weights in place of the
  λ-term of the DRL loss.

`TorchAdam` implements PyTorch's update in the same order of operations:

    g ← g + wd·θ
    m ← m + (1−β1)(g − m)
    v ← β2·v + (1−β2)·g²
    θ ← θ − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)
"""
from __future__ import annotations

import keras
from keras import ops


class TorchAdam(keras.optimizers.Optimizer):
    """Adam exactly as `torch.optim.Adam` (ε after bias correction, coupled L2 `l2_decay`).

    Args:
      learning_rate: step size (the reference's forward optimizer receives lr / target_stepsize).
      beta_1, beta_2: moment decay rates.
      epsilon: added to √v̂ after bias correction.
      l2_decay: coupled L2 weight decay (PyTorch's `weight_decay`), added to the gradient before the moments.
        Keras' own `weight_decay` argument (decoupled) is deliberately not used.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, l2_decay=0.0,
                 name="torch_adam", **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("TorchAdam: use l2_decay (coupled L2, PyTorch semantics), not weight_decay.")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.l2_decay = float(l2_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        if self.l2_decay:
            grad = grad + ops.cast(self.l2_decay, dtype) * variable
        step = ops.cast(self.iterations + 1, dtype)
        bias_correction1 = 1.0 - ops.power(ops.cast(self.beta_1, dtype), step)
        bias_correction2 = 1.0 - ops.power(ops.cast(self.beta_2, dtype), step)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, (grad - m) * ops.cast(1.0 - self.beta_1, dtype))
        self.assign(v, v * ops.cast(self.beta_2, dtype) + ops.square(grad) * ops.cast(1.0 - self.beta_2, dtype))
        denom = ops.sqrt(v) / ops.sqrt(bias_correction2) + ops.cast(self.epsilon, dtype)
        self.assign_sub(variable, (lr / bias_correction1) * m / denom)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "l2_decay": self.l2_decay})
        return config
