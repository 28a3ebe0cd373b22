"""DTP-BN: difference target propagation with batch normalisation, as Shibuya et al. ran it beside FW-DTP
("Fixed-Weight Difference Target Propagation", AAAI 2023; their code's `--algorithm=DTP-BN --loss_feedback=DTP`).

It is FWDTP-BN (rules/fw_dtp.py, docs/semantics.md §7.13) with the feedback trained: every hidden layer's output,
every feedback map and every difference target batch-normalised by the batch's own statistics, no forward or
feedback bias, h_ℓ = BN(tanh(h_{ℓ−1}W_ℓ)), g_k(u) = BN(tanh(u Q_k)), ĥ_k = BN(g_k(ĥ_{k+1}) + h_k − g_k(h_{k+1})),
the logits linear; and Q_k trained, as their `tp_net.train_back_weights` with `loss_type='DTP'`, by the summed
reconstruction loss (`SummedReconstruction`, registered 'reconstruction_summed'):

    L_k = (1/B)·Σ_b‖g_k(f_{k+1}(h̃_k)) − h̃_k‖²,   h̃_k = h_k + σε,

their MSE summed over the batch and stepped with lrb/B: no 1/σ² scale and no mean over units (the 2020 paper's
DTP loss, `reconstruction`, has both). f_{k+1}(h̃_k) and g_k normalise over the B noisy rows alone, as their
`layers[d].forward(q)` does. Their schedule: the feedback first, `--epochs_backward` (5) steps per batch on fresh
noise, then the targets with the new feedback weights and the forward step (`feedback_first=True`,
`feedback_iterations=5`), after as many feedback-only epochs (the launcher's --epochs_fb=5); their σ
(`--std_backward`) 0.01 and feedback init Q ~ U(±10⁻²) (`parameterized_function`'s 'uniform', `feedback_init=
'uniform_1e-2'`).
"""
from __future__ import annotations

import dataclasses

from tp_keras.core.lazy_tf import tf

from tp_keras.core.rules import components as K
from tp_keras.core.rules.fw_dtp import FW_DTP_BN


class SummedReconstruction(K.FeedbackLoss):
    """L_k = (1/B)·Σ_b‖g_k(f_{k+1}(h̃_k)) − h̃_k‖² for every hidden layer k, each noisy copy sent through alone (B
    rows: batch-normalised maps take its statistics), no scale. Only g_k trains on L_k: f_{k+1}(h̃_k) is read as a
    constant."""
    name, paths = "reconstruction_summed", ("layerwise",)

    def losses(self, net, rule, hs, noise, clean, batch_size, top_target=None, clean_layers=None):
        noisy = K.noisy_hidden_copies(rule, hs, noise)
        layers = K.bind_forward_inputs(net.tp_layers, hs[:1] + noisy)  # g_k inverts f_{k+1}(h̃_k)
        b = tf.cast(batch_size, hs[0].dtype)
        return [tf.reduce_sum(tf.square(layers[k].feedback(tf.stop_gradient(layers[k](noisy[k - 1])))
                                        - noisy[k - 1])) / b
                for k in range(1, len(layers))], None


K.register_feedback_loss(SummedReconstruction())

DTP_BN = dataclasses.replace(
    FW_DTP_BN, name="dtp_bn", feedback_loss="reconstruction_summed", feedback_trained=True,
    feedback_init="uniform_1e-2", feedback_first=True, feedback_iterations=5, sigma=0.01,
    summary="DTP with batch normalisation (Shibuya et al. 2023's DTP-BN): FWDTP-BN with its feedback trained by "
            "the summed reconstruction loss, 5 steps per batch before the targets")
