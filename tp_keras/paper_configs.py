"""The reference's final configurations, every one at full precision, and the paper's numbers for their cells.

`FINAL_CONFIGS` holds the 79 table configs of the reference's `final_configs/` (all but the two
`toy_figure_output_space_config_*` files, which are no table cell), keyed by the reference's file name, with the
values after the reference's argument processing (argparse defaults filled in): copied from the "resolved" block
of the reference specification's `configs.json` by a one-off script (floats by `repr`, so exact). The library
never reads configs.json at run time; `tests/test_flagfiles.py` compares this module against it when the file
is present. Each entry has:

* identity: "dataset"; "architecture" ("mlp", or "cnn" for the Table 3 network of spec §2.11); "method" (this
  library's method name, mapping below); "network_type" (the reference's class); "precision"
  ("float64" where the reference set `double_precision`, else "float32");
* the hyper-parameters, under the reference's names (which are `Config`'s): "lr", "target_stepsize", "beta1",
  "beta2", "epsilon", "forward_wd", "lr_fb", "beta1_fb", "beta2_fb", "epsilon_fb", "feedback_wd", "sigma",
  "batch_size", "epochs", "epochs_fb", "extra_fb_epochs"; for MLPs also "num_hidden", "size_hidden",
  "size_hidden_fb", "recurrent_input", "size_input"; for the CNN "lr" and "epsilon" are 4-tuples (one per
  layer) and the MLP architecture keys are left out (the reference's resolved values there are unused argparse
  defaults);
* the reference's switches as it resolved them: "double_precision", "no_val_set" (Table 2 `_train` configs),
  "only_train_first_layer" (Frozen-MNIST, spec §4.3), "fb_activation", "gn_damping_hpsearch".

Deliberate departures from the files as shipped (spec §7), stated in `NOTES` and in each flagfile's header:
`cifar10_DDTPControl` maps to method ddtp_control although its network_type is DMLPDTP2 (item 4);
`gn_damping_hpsearch=True` in `mnist_DTPDRL` / `mnist_DTP_pretrained` is kept here as the reference's value but
ignored by the library (item 5); `cifar10_BP` keeps its 150 epochs (item 11).

`PAPER_CELLS` maps a config to its cell (table, column, method) of the paper's Tables 1–3, or to None (DDTP-RHL
variants that the paper does not report separately, and the CNN `_train` configs). `PAPER_RESULTS` holds the
paper's printed numbers per cell. `MNIST_CONFIGS` (method → its MNIST Table 1 config) are the launcher's
per-method defaults (`Config.paper`).
"""

# The quantity each table reports (spec §4.2), and the unit of PAPER_RESULTS' mean/sd.
TABLE_QUANTITY = {
    1: ("error_test_val_best", "test error at the epoch of best validation accuracy, 100 epochs, "
                               "mean ± SD over 10 seeds"),
    2: ("loss_train_last", "training loss after 100 epochs, trained without a validation set, mean ± SD over "
                           "10 seeds"),
    3: ("error_test_val_best", "test error at the epoch of best validation accuracy, 100 epochs, "
                               "mean ± SD over 10 seeds"),
}
# Column names of PAPER_RESULTS / PAPER_CELLS, with the paper's headings.
COLUMNS = {"mnist": "MNIST", "frozen_mnist": "Frozen-MNIST", "fashion_mnist": "Fashion-MNIST",
           "cifar10": "CIFAR10"}
# Row names (this library's methods), with the paper's labels.
ROWS = {"bp": "BP", "ddtp_linear": "DDTP-linear", "ddtp_rhl": "DDTP-RHL", "dtpdrl": "DTPDRL",
        "ddtp_control": "DDTP-control", "dtp": "DTP", "dtp_pretrained": "DTP (pre-trained)", "dfa": "DFA"}


def _results(table, column, printed):
    """{method: "2.87±4.11e-8"} as printed (mantissas share the exponent) → PAPER_RESULTS entries."""
    out = {}
    for method, text in printed.items():
        mean, sd = text.split("±")
        mantissa, _, exponent = sd.partition("e")
        suffix = f"e{exponent}" if exponent else ""
        shown = f"{mean} ± {mantissa}" + (f" · 10^{exponent}" if exponent else "") + ("%" if table != 2 else "")
        out[(table, column, method)] = {"mean": float(mean + suffix), "sd": float(sd), "text": shown}
    return out


# The paper's Tables 1–3 (Meulemans et al., NeurIPS 2020), as printed. Tables 1 and 3: test error in %.
# Table 2: training loss. (The text extraction of Table 2 lists the Frozen-MNIST column as one block and the
# Fashion-MNIST/CIFAR10 pairs row by row; the assignment below follows the row order BP, DDTP-linear, DDTP-RHL,
# DTPDRL, DDTP-control, DTP, DTP (pre-trained), DFA and agrees with the paper's text: DDTP-linear's training
# loss is below BP's on MNIST and Fashion-MNIST.) The paper prints "/" for DFA on Frozen-MNIST (not run): no entry.
PAPER_RESULTS = {
    **_results(1, "mnist", {"bp": "1.98±0.14", "ddtp_linear": "2.04±0.08", "ddtp_rhl": "2.10±0.14",
                            "dtpdrl": "2.21±0.09", "ddtp_control": "2.51±0.08", "dtp": "2.39±0.19",
                            "dtp_pretrained": "2.26±0.18", "dfa": "2.17±0.14"}),
    **_results(1, "frozen_mnist", {"bp": "4.39±0.13", "ddtp_linear": "6.42±0.17", "ddtp_rhl": "5.11±0.19",
                                   "dtpdrl": "6.10±0.17", "ddtp_control": "9.70±0.31", "dtp": "10.64±0.53",
                                   "dtp_pretrained": "9.31±0.40"}),
    **_results(1, "fashion_mnist", {"bp": "10.74±0.16", "ddtp_linear": "11.11±0.35", "ddtp_rhl": "11.53±0.31",
                                    "dtpdrl": "11.22±0.20", "ddtp_control": "11.71±0.28", "dtp": "11.49±0.23",
                                    "dtp_pretrained": "11.52±0.31", "dfa": "11.26±0.25"}),
    **_results(1, "cifar10", {"bp": "45.60±0.50", "ddtp_linear": "50.36±0.26", "ddtp_rhl": "51.94±0.49",
                              "dtpdrl": "50.80±0.43", "ddtp_control": "51.75±0.43", "dtp": "51.74±0.30",
                              "dtp_pretrained": "52.20±0.50", "dfa": "51.28±0.41"}),
    **_results(2, "mnist", {"bp": "2.87±4.11e-8", "ddtp_linear": "1.99±1.90e-9", "ddtp_rhl": "2.29±0.56e-7",
                            "dtpdrl": "3.43±2.57e-9", "ddtp_control": "4.74±9.51e-6", "dtp": "1.28±1.04e-7",
                            "dtp_pretrained": "5.72±5.91e-4", "dfa": "1.57±2.10e-6"}),
    **_results(2, "frozen_mnist", {"bp": "0.191±0.019", "ddtp_linear": "0.349±0.029", "ddtp_rhl": "0.289±0.014",
                                   "dtpdrl": "0.317±0.016", "ddtp_control": "0.995±0.049", "dtp": "1.184±0.072",
                                   "dtp_pretrained": "0.928±0.002"}),
    **_results(2, "fashion_mnist", {"bp": "6.46±0.25e-5", "ddtp_linear": "1.03±0.15e-5", "ddtp_rhl": "3.51±0.80e-3",
                                    "dtpdrl": "1.36±0.48e-3", "ddtp_control": "3.88±2.63e-3", "dtp": "4.07±0.42e-2",
                                    "dtp_pretrained": "2.73±0.67e-2", "dfa": "1.98±0.24e-2"}),
    **_results(2, "cifar10", {"bp": "1.01±0.57e-7", "ddtp_linear": "1.77±0.06e-6", "ddtp_rhl": "4.26±3.61e-2",
                              "dtpdrl": "2.13±0.83e-6", "ddtp_control": "6.14±0.92e-5", "dtp": "9.81±6.42e-5",
                              "dtp_pretrained": "6.77±1.89e-5", "dfa": "2.05±1.3e-5"}),
    **_results(3, "cifar10", {"bp": "24.38±0.29", "ddtp_linear": "23.99±0.31", "ddtp_control": "28.69±0.87",
                              "dfa": "30.00±0.74"}),
}


# The reference's network types → this library's methods. DTP configs with feedback pre-training are named
# "*_DTP_pretrained" / "*_DTP_improved" and map to dtp_pretrained (the same method as dtp, its own config);
# the CNN classes map to the same methods with architecture "cnn"; cifar10_DDTPControl, see NOTES.
#   BP → bp, DTP → dtp / dtp_pretrained, DTPDR → dtpdrl, DMLPDTP2 → ddtp_linear, DKDTP2 → ddtp_rhl,
#   DDTPControl → ddtp_control, DFA → dfa; BPConvCIFAR → bp, DDTPConvCIFAR → ddtp_linear,
#   DDTPConvControlCIFAR → ddtp_control, DFAConvCIFAR → dfa (architecture "cnn").

FINAL_CONFIGS = {
    "mnist_BP": {  # final_configs/mnist_BP.py
        "dataset": "mnist", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.0002970474733093798, "target_stepsize": 1.0, "beta1": 0.99, "beta2": 0.999,
        "epsilon": 6.927830087224072e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_DDTPControl": {  # final_configs/mnist_DDTPControl.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 8.882733337430332e-05, "target_stepsize": 0.09416689927228376, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 5.552559684258553e-08, "forward_wd": 0.0, "lr_fb": 0.00018713096100900022,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 1.2297580110850507e-08,
        "feedback_wd": 0.00040219548415666565, "sigma": 0.008719996683197298, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_DDTPRHL": {  # final_configs/mnist_DDTPRHL.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 2.804754262888465e-05, "target_stepsize": 0.04351591164035645, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 3.9835298531505314e-08, "forward_wd": 0.0, "lr_fb": 0.0003024461368410027,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 3.4025663897285684e-06, "feedback_wd": 0.001621280241954684,
        "sigma": 0.041623297924346575, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_DDTPRHL_extrafb": {  # final_configs/mnist_DDTPRHL_extrafb.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 2.804754262888465e-05, "target_stepsize": 0.04351591164035645, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 3.9835298531505314e-08, "forward_wd": 0.0, "lr_fb": 0.0003024461368410027,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 3.4025663897285684e-06, "feedback_wd": 0.001621280241954684,
        "sigma": 0.041623297924346575, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 4,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_DDTPRHL_rec": {  # final_configs/mnist_DDTPRHL_rec.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float32", "lr": 2.652373507135506e-06, "target_stepsize": 0.013702850480584929, "beta1": 0.99,
        "beta2": 0.999, "epsilon": 2.7973489422583565e-08, "forward_wd": 0.0, "lr_fb": 2.33465546481648e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 1.8063911581818608e-06, "feedback_wd": 0.00024779683921180096,
        "sigma": 0.0571993471784792, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": True, "size_input": 784,
        "double_precision": False, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_DDTPRHL_rec_extrafb": {  # final_configs/mnist_DDTPRHL_rec_extrafb.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float32", "lr": 6.530289454184444e-05, "target_stepsize": 0.03391776356880856, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 1.408840589359605e-08, "forward_wd": 0.0, "lr_fb": 3.055525874735466e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.999, "epsilon_fb": 9.348498204704435e-07,
        "feedback_wd": 0.0030391271787456268, "sigma": 0.06379589790297038, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 4, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024,
        "recurrent_input": True, "size_input": 784, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_DDTPlinear": {  # final_configs/mnist_DDTPlinear.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 2.0354415171962153e-05, "target_stepsize": 0.06096940412767466, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 1.255238177132068e-08, "forward_wd": 0.0, "lr_fb": 0.00016378232822128718,
        "beta1_fb": 0.999, "beta2_fb": 0.999, "epsilon_fb": 0.0002838378678760835,
        "feedback_wd": 5.836204840235672e-07, "sigma": 0.0907524824699504, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_DFA": {  # final_configs/mnist_DFA.py
        "dataset": "mnist", "architecture": "mlp", "method": "dfa", "network_type": "DFA", "precision": "float64",
        "lr": 0.0003808175281098754, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1.0861745402518128e-07, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_DTP": {  # final_configs/mnist_DTP.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 6.185037324617764e-05, "target_stepsize": 0.21951187497378802, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1.0170111936290766e-08, "forward_wd": 0.0, "lr_fb": 0.0019584756448113774, "beta1_fb": 0.9,
        "beta2_fb": 0.999, "epsilon_fb": 7.541132645747324e-06, "feedback_wd": 0.0, "sigma": 0.08372453893037193,
        "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256,
        "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784, "double_precision": True,
        "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_DTPDRL": {  # final_configs/mnist_DTPDRL.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 2.968902530985572e-05, "target_stepsize": 0.06858850589618244, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.001084429920261e-08, "forward_wd": 0.0, "lr_fb": 2.0123315498373473e-05,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 5.0844503288987736e-08,
        "feedback_wd": 5.384963778780523e-06, "sigma": 0.056879454462500055, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": True,
    },
    "mnist_DTP_pretrained": {  # final_configs/mnist_DTP_pretrained.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 8.755114977760993e-05, "target_stepsize": 0.29588215061609174, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.3539369588818846e-07, "forward_wd": 0.0, "lr_fb": 0.00046353371500045345,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 4.3671895272055226e-07, "feedback_wd": 0.002191969471427704,
        "sigma": 0.17295321576257636, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": True,
    },
    "mnist_BP_train": {  # final_configs/mnist_BP_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.000401193255435432, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1.4723788684272334e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_DDTPControl_train": {  # final_configs/mnist_DDTPControl_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 8.18108424322853e-05, "target_stepsize": 0.017910092256155224, "beta1": 0.99,
        "beta2": 0.99, "epsilon": 5.460350916380454e-08, "forward_wd": 0.0, "lr_fb": 0.00038052226304794465,
        "beta1_fb": 0.999, "beta2_fb": 0.99, "epsilon_fb": 4.934136861395631e-06,
        "feedback_wd": 8.721779628349676e-05, "sigma": 0.08870620444452318, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_DDTPRHL_train": {  # final_configs/mnist_DDTPRHL_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 9.607871825148296e-05, "target_stepsize": 0.08650398125145677, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 1.892605805264791e-08, "forward_wd": 0.0, "lr_fb": 0.0003264105195588272,
        "beta1_fb": 0.999, "beta2_fb": 0.99, "epsilon_fb": 0.0002643993674792623, "feedback_wd": 0.000706049032042857,
        "sigma": 0.003896077388858419, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_DDTPlinear_train": {  # final_configs/mnist_DDTPlinear_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 5.445880112825726e-05, "target_stepsize": 0.019894350490609045, "beta1": 0.99,
        "beta2": 0.9, "epsilon": 1.1409034963508697e-08, "forward_wd": 0.0, "lr_fb": 0.00046435267019415523,
        "beta1_fb": 0.999, "beta2_fb": 0.9, "epsilon_fb": 7.73438668243311e-05, "feedback_wd": 0.00044356554874093793,
        "sigma": 0.011955442965055574, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "mnist_DFA_train": {  # final_configs/mnist_DFA_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dfa", "network_type": "DFA", "precision": "float64",
        "lr": 0.00038484282691424794, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 3.1339055831941025e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_DTPDRL_train": {  # final_configs/mnist_DTPDRL_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 5.2176084738183765e-05, "target_stepsize": 0.02044146643830498, "beta1": 0.99,
        "beta2": 0.9, "epsilon": 1.0468313211629022e-08, "forward_wd": 0.0, "lr_fb": 1.5620849343292396e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.99, "epsilon_fb": 3.217657052045938e-07,
        "feedback_wd": 1.8823398552430864e-07, "sigma": 0.031831829269174126, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_DTP_pretrained_train": {  # final_configs/mnist_DTP_pretrained_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 1.5720944356943283e-05, "target_stepsize": 0.1323571252777585, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.292390947076662e-08, "forward_wd": 0.0, "lr_fb": 2.2960882450559396e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 1.2435425546063357e-08, "feedback_wd": 0.00023867380258470717,
        "sigma": 0.009185269864166859, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_DTP_train": {  # final_configs/mnist_DTP_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 3.9426088569746675e-05, "target_stepsize": 0.2220880682462359, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1.4818216136743229e-08, "forward_wd": 0.0, "lr_fb": 0.0017984658003270956, "beta1_fb": 0.9,
        "beta2_fb": 0.999, "epsilon_fb": 3.6271299814354643e-07, "feedback_wd": 0.0, "sigma": 0.23480720168473704,
        "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256,
        "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784, "double_precision": True,
        "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_BP": {  # final_configs/mnist_frozen_BP.py
        "dataset": "mnist", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.001637828769799821, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.99,
        "epsilon": 8.420979503460096e-06, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DDTPControl": {  # final_configs/mnist_frozen_DDTPControl.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 0.0005528204702748224, "target_stepsize": 0.010103924659326077, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 5.064531736133727e-05, "forward_wd": 0.0, "lr_fb": 0.00037190878976282215,
        "beta1_fb": 0.9, "beta2_fb": 0.99, "epsilon_fb": 3.526548961187417e-07, "feedback_wd": 0.00012873305495606508,
        "sigma": 0.06771997897472529, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 0,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": True, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DDTPRHL": {  # final_configs/mnist_frozen_DDTPRHL.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float32", "lr": 0.0012747819097520146, "target_stepsize": 0.02480955861721637, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 5.716850868633521e-05, "forward_wd": 0.0, "lr_fb": 0.0006038728632117109,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 3.6548150986492877e-06,
        "feedback_wd": 9.454160319664471e-05, "sigma": 0.03631642883132282, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DDTPRHL_extrafb": {  # final_configs/mnist_frozen_DDTPRHL_extrafb.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 6.5348117005905355e-06, "target_stepsize": 0.02072565190806602, "beta1": 0.99,
        "beta2": 0.99, "epsilon": 1.7676404393326398e-08, "forward_wd": 0.0, "lr_fb": 1.4838121543493932e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.99, "epsilon_fb": 3.387300875438346e-07, "feedback_wd": 1.5073829479320914e-05,
        "sigma": 0.03956996590341884, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 4,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DDTPRHL_rec_extrafb": {  # final_configs/mnist_frozen_DDTPRHL_rec_extrafb.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 0.001564204554837198, "target_stepsize": 0.04449314675256573, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 0.00010061519623529357, "forward_wd": 0.0, "lr_fb": 0.00015702873911365507,
        "beta1_fb": 0.999, "beta2_fb": 0.99, "epsilon_fb": 2.7128753099491492e-05,
        "feedback_wd": 1.3594469607598668e-05, "sigma": 0.06695879483880195, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 4, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024,
        "recurrent_input": True, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DDTPlinear": {  # final_configs/mnist_frozen_DDTPlinear.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 0.0006940334462200149, "target_stepsize": 0.08035894053210164, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 1.7292833439583752e-07, "forward_wd": 0.0, "lr_fb": 0.0016341768082205421,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 1.726059939681055e-05,
        "feedback_wd": 0.0030069424722153505, "sigma": 0.04784822099047114, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": True, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DTP": {  # final_configs/mnist_frozen_DTP.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 0.00026720570872048997, "target_stepsize": 0.06418278211160548, "beta1": 0.99, "beta2": 0.9,
        "epsilon": 8.712105199295304e-06, "forward_wd": 0.0, "lr_fb": 6.605151255236883e-05, "beta1_fb": 0.99,
        "beta2_fb": 0.999, "epsilon_fb": 0.0002979750769223486, "feedback_wd": 0.0010337317140745048,
        "sigma": 0.09331376363608503, "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DTPDRL": {  # final_configs/mnist_frozen_DTPDRL.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 5.6440486566237356e-05, "target_stepsize": 0.019893250463807396, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 1.127096839808298e-08, "forward_wd": 0.0, "lr_fb": 0.00010240339931055656,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 7.198749925142128e-05,
        "feedback_wd": 0.0003120312183028437, "sigma": 0.02732348984311611, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "mnist_frozen_DTP_pretrained": {  # final_configs/mnist_frozen_DTP_pretrained.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 5.800132985181198e-05, "target_stepsize": 0.010956946694971827, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 7.505830224780078e-06, "forward_wd": 0.0, "lr_fb": 0.0002003429090524803,
        "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 3.459367678282587e-05, "feedback_wd": 5.325034729359803e-05,
        "sigma": 0.0825200614614339, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 0,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "frozen_mnist_BP_train": {  # final_configs/frozen_mnist_BP_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.0015258731263724675, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 7.842694644968446e-06, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": True,
        "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DDTPControl_train": {  # final_configs/frozen_mnist_DDTPControl_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 2.028178289931257e-05, "target_stepsize": 0.05304162640924419, "beta1": 0.999,
        "beta2": 0.999, "epsilon": 2.723479249669673e-06, "forward_wd": 0.0, "lr_fb": 0.0009315266754828716,
        "beta1_fb": 0.999, "beta2_fb": 0.9, "epsilon_fb": 4.434421956023441e-08,
        "feedback_wd": 1.5145000136723712e-06, "sigma": 0.07616232846462798, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": True, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DDTPRHL_train": {  # final_configs/frozen_mnist_DDTPRHL_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 3.63751609496963e-05, "target_stepsize": 0.0657148727491148, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.008849127869548e-08, "forward_wd": 0.0, "lr_fb": 0.0001486915646096219,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 2.813851531917229e-07, "feedback_wd": 6.992101455292766e-06,
        "sigma": 0.028689275143815363, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DDTPlinear_train": {  # final_configs/frozen_mnist_DDTPlinear_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 2.5857604728660573e-05, "target_stepsize": 0.012396326699079663, "beta1": 0.99,
        "beta2": 0.999, "epsilon": 1.1996968323337475e-08, "forward_wd": 0.0, "lr_fb": 3.489272944685859e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 4.050396998406255e-08, "feedback_wd": 0.004880033887201644,
        "sigma": 0.0272294702906134, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": True, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DTPDRL_train": {  # final_configs/frozen_mnist_DTPDRL_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 2.9397069314888417e-05, "target_stepsize": 0.04214703353466974, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 4.2708694335174877e-07, "forward_wd": 0.0, "lr_fb": 0.0009259703434043203,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 5.688987601546281e-06, "feedback_wd": 4.726104223717957e-07,
        "sigma": 0.057544149745474386, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DTP_improved_train": {  # final_configs/frozen_mnist_DTP_improved_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 6.457944425680342e-05, "target_stepsize": 0.0380535570315298, "beta1": 0.999,
        "beta2": 0.99, "epsilon": 1.3476511937778762e-05, "forward_wd": 0.0, "lr_fb": 0.00027446633200659936,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 1.959005950201315e-06, "feedback_wd": 0.0006776311703958594,
        "sigma": 0.22348248777204677, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": True, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "frozen_mnist_DTP_train": {  # final_configs/frozen_mnist_DTP_train.py
        "dataset": "mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 5.235756451964147e-05, "target_stepsize": 0.025674458915738222, "beta1": 0.99, "beta2": 0.999,
        "epsilon": 1.2361083314857393e-07, "forward_wd": 0.0, "lr_fb": 6.233467515966359e-05, "beta1_fb": 0.99,
        "beta2_fb": 0.999, "epsilon_fb": 4.940467044972437e-06, "feedback_wd": 0.0, "sigma": 0.2102614353035358,
        "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256,
        "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784, "double_precision": True,
        "no_val_set": True, "only_train_first_layer": True, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_BP": {  # final_configs/fashion_mnist_BP.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "bp", "network_type": "BP",
        "precision": "float32", "lr": 0.000287604813302375, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.99,
        "epsilon": 4.7253263377092954e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPControl": {  # final_configs/fashion_mnist_DDTPControl.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 3.0076918366526155e-05, "target_stepsize": 0.032346424994794266, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 1.3274012105519261e-08, "forward_wd": 0.0, "lr_fb": 3.12062953559089e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.99, "epsilon_fb": 0.00032568051410950655,
        "feedback_wd": 1.1893046560968361e-06, "sigma": 0.08486912067649759, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPRHL": {  # final_configs/fashion_mnist_DDTPRHL.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 3.3750916220255054e-05, "target_stepsize": 0.026152245505732887, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 3.654040144155189e-07, "forward_wd": 0.0, "lr_fb": 1.1568331102488128e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 0.00020811926328088761,
        "feedback_wd": 0.0008499221021074074, "sigma": 0.04387573790026869, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPRHL_extrafb": {  # final_configs/fashion_mnist_DDTPRHL_extrafb.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 3.171519855395423e-05, "target_stepsize": 0.05598874122443612, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 2.0138675396073716e-08, "forward_wd": 0.0, "lr_fb": 1.578529455711729e-05,
        "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 5.246940731788602e-07, "feedback_wd": 0.000766250333918441,
        "sigma": 0.0862694472920603, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 4,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPRHL_rec": {  # final_configs/fashion_mnist_DDTPRHL_rec.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float32", "lr": 2.9793120523254982e-05, "target_stepsize": 0.05222150562057032, "beta1": 0.99,
        "beta2": 0.999, "epsilon": 2.64654942058129e-08, "forward_wd": 0.0, "lr_fb": 0.00022371330692756543,
        "beta1_fb": 0.99, "beta2_fb": 0.9, "epsilon_fb": 7.59182488242157e-06, "feedback_wd": 0.008109832782142468,
        "sigma": 0.06409847171006239, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": True, "size_input": 784,
        "double_precision": False, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPRHL_rec_extrafb": {  # final_configs/fashion_mnist_DDTPRHL_rec_extrafb.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 6.3790630374119055e-06, "target_stepsize": 0.08410816705027833, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 1.0627279807937555e-08, "forward_wd": 0.0, "lr_fb": 5.275331141492459e-05,
        "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 4.87297459975216e-07, "feedback_wd": 0.00017016700163704547,
        "sigma": 0.06531861405669062, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 4,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": True, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DDTPlinear": {  # final_configs/fashion_mnist_DDTPlinear.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 8.703567590317672e-06, "target_stepsize": 0.017250397502053975, "beta1": 0.99,
        "beta2": 0.99, "epsilon": 1.727973356862063e-08, "forward_wd": 0.0, "lr_fb": 0.0007959054461775743,
        "beta1_fb": 0.99, "beta2_fb": 0.9, "epsilon_fb": 3.1081662356907766e-08, "feedback_wd": 5.782689838884453e-06,
        "sigma": 0.09857259200102354, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DFA": {  # final_configs/fashion_mnist_DFA.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dfa", "network_type": "DFA",
        "precision": "float64", "lr": 0.0009403014926576205, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.99,
        "epsilon": 3.661109295012624e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DTP": {  # final_configs/fashion_mnist_DTP.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP",
        "precision": "float64", "lr": 6.264712908427562e-05, "target_stepsize": 0.24133669284943418, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 3.175105564611512e-08, "forward_wd": 0.0, "lr_fb": 0.00036600402073155754,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 1.3606678094184999e-06, "feedback_wd": 0,
        "sigma": 0.26748740970595125, "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DTPDRL": {  # final_configs/fashion_mnist_DTPDRL.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 7.101735983180753e-05, "target_stepsize": 0.08656715666379391, "beta1": 0.99,
        "beta2": 0.999, "epsilon": 1.6407278251505892e-08, "forward_wd": 0.0, "lr_fb": 9.698300934344597e-05,
        "beta1_fb": 0.99, "beta2_fb": 0.9, "epsilon_fb": 2.267582036430733e-05, "feedback_wd": 2.138772519002704e-05,
        "sigma": 0.08433329930575183, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_DTP_pretrained": {  # final_configs/fashion_mnist_DTP_pretrained.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 9.182096556021097e-06, "target_stepsize": 0.038390892689968543, "beta1": 0.99,
        "beta2": 0.9, "epsilon": 5.0647473988637e-08, "forward_wd": 0.0, "lr_fb": 0.00023284386425380716,
        "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 2.4338150947778934e-08,
        "feedback_wd": 0.00043410554677483223, "sigma": 0.2994857084510052, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_BP": {  # final_configs/fashion_mnist_train_BP.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "bp", "network_type": "BP",
        "precision": "float32", "lr": 0.0004729609283026092, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 0.0001291342102717149, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": False, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DDTPControl": {  # final_configs/fashion_mnist_train_DDTPControl.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 4.7198117795926074e-05, "target_stepsize": 0.026752358694258103, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 2.2416975159816204e-07, "forward_wd": 0.0, "lr_fb": 1.5428686410988164e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 1.0491113661607693e-08, "feedback_wd": 0.0008047147738512633,
        "sigma": 0.06967714866811342, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DDTPRHL": {  # final_configs/fashion_mnist_train_DDTPRHL.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 9.280547454600403e-05, "target_stepsize": 0.0389633145977379, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 1.4534353312007458e-07, "forward_wd": 0.0, "lr_fb": 2.0247575254878852e-05,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 1.0049555849822865e-06, "feedback_wd": 0.00262404487038389,
        "sigma": 0.009899529187317194, "batch_size": 128, "epochs": 100, "epochs_fb": 6, "extra_fb_epochs": 1,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 1024, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DDTPlinear": {  # final_configs/fashion_mnist_train_DDTPlinear.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 0.00014513407044378554, "target_stepsize": 0.06121412698985014, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 9.73382095718682e-08, "forward_wd": 0.0, "lr_fb": 2.824166776378553e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.999, "epsilon_fb": 1.0038107101678827e-08,
        "feedback_wd": 3.306130322600465e-06, "sigma": 0.025888339799957527, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DFA": {  # final_configs/fashion_mnist_train_DFA.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dfa", "network_type": "DFA",
        "precision": "float64", "lr": 0.003226161804181597, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 3.634259282023514e-05, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DTP": {  # final_configs/fashion_mnist_train_DTP.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtp", "network_type": "DTP",
        "precision": "float64", "lr": 6.54260313478272e-05, "target_stepsize": 0.23293009374895887, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.273223890292063e-07, "forward_wd": 0.0, "lr_fb": 0.0019571213882609664,
        "beta1_fb": 0.9, "beta2_fb": 0.99, "epsilon_fb": 2.036307667140769e-06, "feedback_wd": 0,
        "sigma": 0.2914515437743471, "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0,
        "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 784,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DTPDRL": {  # final_configs/fashion_mnist_train_DTPDRL.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 5.006619855903037e-05, "target_stepsize": 0.03418367582756943, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.1639989227689135e-07, "forward_wd": 0.0, "lr_fb": 1.0267359833572585e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 4.303092360286667e-06,
        "feedback_wd": 2.1952471015527958e-05, "sigma": 0.06003463411981926, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "fashion_mnist_train_DTP_pretrained": {  # final_configs/fashion_mnist_train_DTP_pretrained.py
        "dataset": "fashion_mnist", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 5.854740019006692e-06, "target_stepsize": 0.013343171296788602, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 6.097842781997323e-08, "forward_wd": 0.0, "lr_fb": 0.0007037459607549333,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 2.9161738911931673e-07,
        "feedback_wd": 1.5905737448250066e-06, "sigma": 0.04212278453600074, "batch_size": 128, "epochs": 100,
        "epochs_fb": 6, "extra_fb_epochs": 1, "num_hidden": 5, "size_hidden": 256, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 784, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_BP": {  # final_configs/cifar10_BP.py
        "dataset": "cifar10", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.0003886644634575892, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 0.0006565611200656028, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 150,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": False, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPControl": {  # final_configs/cifar10_DDTPControl.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_control", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 2.8323219675905193e-06, "target_stepsize": 0.010169396963818618, "beta1": 0.999,
        "beta2": 0.999, "epsilon": 2.8472255661746614e-06, "forward_wd": 0.0, "lr_fb": 0.0003624950221296255,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 1.0273080761864791e-08, "feedback_wd": 3.293384717134203e-05,
        "sigma": 0.28961379819488814, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPRHL": {  # final_configs/cifar10_DDTPRHL.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 2.2591298843888373e-06, "target_stepsize": 0.016184143061123493, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 7.219082567713133e-08, "forward_wd": 0.0, "lr_fb": 0.0009097783536288601,
        "beta1_fb": 0.99, "beta2_fb": 0.9, "epsilon_fb": 2.050381900135163e-05, "feedback_wd": 1.3449401889831889e-07,
        "sigma": 0.027412564678360344, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 2048, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPRHL_extrafb": {  # final_configs/cifar10_DDTPRHL_extrafb.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 4.009500437916782e-05, "target_stepsize": 0.017531388292282228, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 2.9640663102217724e-06, "forward_wd": 0.0, "lr_fb": 0.0007105402038849696,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 7.929258691080617e-05, "feedback_wd": 5.322705493173674e-06,
        "sigma": 0.009691261031843274, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 4,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 2048, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPRHL_rec_extrafb": {  # final_configs/cifar10_DDTPRHL_rec_extrafb.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 1.4003309610896184e-05, "target_stepsize": 0.08498914083489294, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 3.539855497931238e-07, "forward_wd": 0.0, "lr_fb": 2.4399801446383645e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.999, "epsilon_fb": 1.5639993897081295e-06,
        "feedback_wd": 1.1974850512429385e-07, "sigma": 0.0040553704581791465, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 4, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 2048,
        "recurrent_input": True, "size_input": 3072, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPlinear": {  # final_configs/cifar10_DDTPlinear.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 5.853923327337887e-05, "target_stepsize": 0.06692785794345907, "beta1": 0.9,
        "beta2": 0.999, "epsilon": 1.6241132477640457e-06, "forward_wd": 0.0, "lr_fb": 4.780905626010856e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 3.041173245264719e-07,
        "feedback_wd": 5.3955934972975846e-05, "sigma": 0.006339078037135994, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 2, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DFA": {  # final_configs/cifar10_DFA.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dfa", "network_type": "DFA", "precision": "float64",
        "lr": 0.0003814330192320173, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 2.5157431832952267e-05, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DTP": {  # final_configs/cifar10_DTP.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 8.082623948629054e-06, "target_stepsize": 0.07273290790340803, "beta1": 0.999, "beta2": 0.99,
        "epsilon": 4.205046123856167e-06, "forward_wd": 0.0, "lr_fb": 0.0021313917163958114, "beta1_fb": 0.9,
        "beta2_fb": 0.9, "epsilon_fb": 9.920952029859722e-05, "feedback_wd": 0.0, "sigma": 0.24082769694808398,
        "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024,
        "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072, "double_precision": True,
        "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DTPDRL": {  # final_configs/cifar10_DTPDRL.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 1.4115422537655614e-05, "target_stepsize": 0.02621187229150487, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 5.372362237423211e-07, "forward_wd": 0.0, "lr_fb": 0.00015183543020814424,
        "beta1_fb": 0.99, "beta2_fb": 0.999, "epsilon_fb": 9.668307793961592e-06,
        "feedback_wd": 1.255944396346018e-05, "sigma": 0.09922937053034697, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 2, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DTP_pretrained": {  # final_configs/cifar10_DTP_pretrained.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 5.776337965858819e-05, "target_stepsize": 0.15943272147463028, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 7.79487111181998e-06, "forward_wd": 0.0, "lr_fb": 6.270557614344318e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 7.170375472668493e-07,
        "feedback_wd": 1.1898846056896954e-05, "sigma": 0.24908323936264398, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 2, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": False,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_BP_train": {  # final_configs/cifar10_BP_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "bp", "network_type": "BP", "precision": "float32",
        "lr": 0.00025649200152996375, "target_stepsize": 1.0, "beta1": 0.99, "beta2": 0.999,
        "epsilon": 5.408161240875546e-08, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": False, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPControl_train": {  # final_configs/cifar10_DDTPControl_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_control", "network_type": "DDTPControl",
        "precision": "float64", "lr": 7.451027319970142e-05, "target_stepsize": 0.05033488616277834, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 1.3331154348641842e-07, "forward_wd": 0.0, "lr_fb": 0.0001229329469994943,
        "beta1_fb": 0.9, "beta2_fb": 0.99, "epsilon_fb": 9.232258905602834e-06, "feedback_wd": 9.962175900574956e-06,
        "sigma": 0.061738339504955775, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPRHL_train": {  # final_configs/cifar10_DDTPRHL_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_rhl", "network_type": "DKDTP2",
        "precision": "float64", "lr": 2.125681496387636e-05, "target_stepsize": 0.023885549694668686, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 2.3617230000830492e-08, "forward_wd": 0.0, "lr_fb": 6.329566540235082e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.999, "epsilon_fb": 5.80033747748392e-07, "feedback_wd": 1.8491849310518903e-05,
        "sigma": 0.08806207525364698, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 2048, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPlinear_train": {  # final_configs/cifar10_DDTPlinear_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "ddtp_linear", "network_type": "DMLPDTP2",
        "precision": "float64", "lr": 3.5281433603406804e-05, "target_stepsize": 0.04146495013820349, "beta1": 0.9,
        "beta2": 0.9, "epsilon": 2.5557577819547774e-08, "forward_wd": 0.0, "lr_fb": 0.00011360417631565426,
        "beta1_fb": 0.99, "beta2_fb": 0.9, "epsilon_fb": 1.9322859261177356e-06, "feedback_wd": 6.774110390427096e-07,
        "sigma": 0.030404212370394985, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DFA_train": {  # final_configs/cifar10_DFA_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dfa", "network_type": "DFA", "precision": "float64",
        "lr": 0.00023124966394218356, "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 3.09767392921623e-07, "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99,
        "beta2_fb": 0.99, "epsilon_fb": 0.0001, "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100,
        "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DTPDRL_train": {  # final_configs/cifar10_DTPDRL_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtpdrl", "network_type": "DTPDR",
        "precision": "float64", "lr": 4.642236759634694e-05, "target_stepsize": 0.08553905897894667, "beta1": 0.999,
        "beta2": 0.99, "epsilon": 1.0970452527148417e-07, "forward_wd": 0.0, "lr_fb": 9.993976073274085e-05,
        "beta1_fb": 0.999, "beta2_fb": 0.999, "epsilon_fb": 5.650639108826411e-07,
        "feedback_wd": 8.137707468690146e-05, "sigma": 0.012237837901674018, "batch_size": 128, "epochs": 100,
        "epochs_fb": 10, "extra_fb_epochs": 2, "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500,
        "recurrent_input": False, "size_input": 3072, "double_precision": True, "no_val_set": True,
        "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_DTP_pretrained_train": {  # final_configs/cifar10_DTP_pretrained_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtp_pretrained", "network_type": "DTP",
        "precision": "float64", "lr": 4.6406733979941715e-05, "target_stepsize": 0.13200208071240313, "beta1": 0.9,
        "beta2": 0.99, "epsilon": 1.5387405670994764e-07, "forward_wd": 0.0, "lr_fb": 5.561288685940823e-05,
        "beta1_fb": 0.9, "beta2_fb": 0.9, "epsilon_fb": 3.422970341759682e-06, "feedback_wd": 2.461969739133049e-07,
        "sigma": 0.26549822198764983, "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 2,
        "num_hidden": 3, "size_hidden": 1024, "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DTP_train": {  # final_configs/cifar10_DTP_train.py
        "dataset": "cifar10", "architecture": "mlp", "method": "dtp", "network_type": "DTP", "precision": "float64",
        "lr": 4.651613909659099e-06, "target_stepsize": 0.016255934250580594, "beta1": 0.99, "beta2": 0.99,
        "epsilon": 1.426268683936702e-08, "forward_wd": 0.0, "lr_fb": 6.801192018915636e-05, "beta1_fb": 0.9,
        "beta2_fb": 0.999, "epsilon_fb": 2.170065792908748e-06, "feedback_wd": 0.0, "sigma": 0.028411912506104784,
        "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0, "num_hidden": 3, "size_hidden": 1024,
        "size_hidden_fb": 500, "recurrent_input": False, "size_input": 3072, "double_precision": True,
        "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh", "gn_damping_hpsearch": False,
    },
    "cifar10_BPConv": {  # final_configs/cifar10_BPConv.py
        "dataset": "cifar10", "architecture": "cnn", "method": "bp", "network_type": "BPConvCIFAR",
        "precision": "float64",
        "lr": (0.000592992422167547, 0.00038001447767611315, 7.373656030831236e-06, 1.0011818742335523e-06),
        "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (1.7193559220924876e-07, 0.00019809119366335256, 1.4745363724867889e-08, 3.0370342703184836e-05),
        "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 0.0001,
        "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPControlConv": {  # final_configs/cifar10_DDTPControlConv.py
        "dataset": "cifar10", "architecture": "cnn", "method": "ddtp_control", "network_type": "DDTPConvControlCIFAR",
        "precision": "float64",
        "lr": (0.0007058630744815441, 0.00045976866944110974, 1.4142718290111939e-05, 1.9346548814094763e-05),
        "target_stepsize": 0.09962995994670613, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (1.8847484181047474e-07, 1.3177870193660672e-08, 1.2706140743156817e-06, 1.5886518322735786e-05),
        "forward_wd": 0.0, "lr_fb": 0.00012520797481978556, "beta1_fb": 0.9, "beta2_fb": 0.999,
        "epsilon_fb": 0.00020685070303063725, "feedback_wd": 6.731653502569897e-07, "sigma": 0.07482483561645029,
        "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 1, "double_precision": True,
        "no_val_set": False, "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPConv": {  # final_configs/cifar10_DDTPConv.py
        "dataset": "cifar10", "architecture": "cnn", "method": "ddtp_linear", "network_type": "DDTPConvCIFAR",
        "precision": "float64",
        "lr": (0.00025935571806476586, 0.000885500279951265, 0.0001423047695105589, 3.3871035558126015e-06),
        "target_stepsize": 0.015962099947441903, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (2.7867895625009e-08, 1.9868935703787622e-08, 4.515242618159344e-06, 4.046144976139705e-05),
        "forward_wd": 0.0, "lr_fb": 0.0045157498494467095, "beta1_fb": 0.9, "beta2_fb": 0.999,
        "epsilon_fb": 7.529093372180766e-07, "feedback_wd": 6.169295107849636e-05, "sigma": 0.00921040366516759,
        "batch_size": 128, "epochs": 100, "epochs_fb": 10, "extra_fb_epochs": 1, "double_precision": True,
        "no_val_set": False, "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DFAConv": {  # final_configs/cifar10_DFAConv.py
        "dataset": "cifar10", "architecture": "cnn", "method": "dfa", "network_type": "DFAConvCIFAR",
        "precision": "float64",
        "lr": (4.512786947960491e-05, 0.0003925906667713482, 5.3583994422517426e-05, 7.349907938676488e-05),
        "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (1.1064155093495904e-07, 1.3370147141514222e-08, 1.4849488795615625e-08, 6.579432537287141e-06),
        "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 0.0001,
        "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 100, "epochs_fb": 0, "extra_fb_epochs": 0,
        "double_precision": True, "no_val_set": False, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
    "cifar10_BPConv_train": {  # final_configs/cifar10_BPConv_train.py
        "dataset": "cifar10", "architecture": "cnn", "method": "bp", "network_type": "BPConvCIFAR",
        "precision": "float64",
        "lr": (0.000307860008376031, 9.721247612044138e-05, 0.0005367449933863134, 0.0007177383741161405),
        "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (2.6463096105390523e-07, 3.715648713579463e-08, 1.5494382092779065e-08, 1.31897234391335e-08),
        "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 0.0001,
        "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 300, "epochs_fb": 0, "extra_fb_epochs": 0,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "tanh",
        "gn_damping_hpsearch": False,
    },
    "cifar10_DDTPConv_train": {  # final_configs/cifar10_DDTPConv_train.py
        "dataset": "cifar10", "architecture": "cnn", "method": "ddtp_linear", "network_type": "DDTPConvCIFAR",
        "precision": "float64",
        "lr": (1.5395901937079718e-05, 4.252664987376195e-05, 9.011700881717918e-05, 0.00026653695086486183),
        "target_stepsize": 0.07688144983085089, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (7.952762675272583e-06, 3.573159556208438e-06, 1.0425400798717413e-08, 2.0232644009531115e-08),
        "forward_wd": 0.0, "lr_fb": 4.142073343374983e-05, "beta1_fb": 0.9, "beta2_fb": 0.999,
        "epsilon_fb": 8.070760899188774e-06, "feedback_wd": 5.751527315358352e-07, "sigma": 0.18197929046014408,
        "batch_size": 128, "epochs": 300, "epochs_fb": 10, "extra_fb_epochs": 1, "double_precision": True,
        "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear", "gn_damping_hpsearch": False,
    },
    "cifar10_DFAConv_train": {  # final_configs/cifar10_DFAConv_train.py
        "dataset": "cifar10", "architecture": "cnn", "method": "dfa", "network_type": "DFAConvCIFAR",
        "precision": "float64",
        "lr": (0.000261251891103779, 0.0005709027042137494, 0.000671647950588684, 0.0007906186403687093),
        "target_stepsize": 1.0, "beta1": 0.9, "beta2": 0.999,
        "epsilon": (1.981969257578602e-07, 1.0002025790642068e-08, 1.7871223223982403e-07, 3.847939630472729e-08),
        "forward_wd": 0.0, "lr_fb": 0.000101149118237, "beta1_fb": 0.99, "beta2_fb": 0.99, "epsilon_fb": 0.0001,
        "feedback_wd": 0.0, "sigma": 0.08, "batch_size": 128, "epochs": 300, "epochs_fb": 0, "extra_fb_epochs": 0,
        "double_precision": True, "no_val_set": True, "only_train_first_layer": False, "fb_activation": "linear",
        "gn_damping_hpsearch": False,
    },
}

# What the library does where a shipped file would not reproduce its cell (spec §7), and what a variant is.
NOTES = {
    "cifar10_DDTPControl": (
        "spec §7 item 4: the reference file sets network_type DMLPDTP2, so as shipped it trains DDTP-linear "
        "(DRL), not DDTP-control. Following the spec's recommendation this runs method ddtp_control with the "
        "file's hyper-parameters, for the paper's DDTP-control cell; --method=ddtp_linear runs the file as shipped."),
    "mnist_DTPDRL": (
        "spec §7 item 5: the reference file sets gn_damping_hpsearch=True, which stops the reference after 3 "
        "epochs for a damping search and never writes the Table-1 summary; treated as false here (the library "
        "has no such mode): a full training run."),
    "mnist_DTP_pretrained": (
        "spec §7 item 5: the reference file sets gn_damping_hpsearch=True, which stops the reference after 3 "
        "epochs for a damping search and never writes the Table-1 summary; treated as false here (the library "
        "has no such mode): a full training run."),
    "cifar10_BP": (
        "spec §7 item 11: the reference file trains 150 epochs; the paper's Table 1 says 100. Kept at 150 as "
        "shipped: that is how the tuned config ran (the paper's number may come from such a run), and the reported "
        "test error is taken at the best-validation epoch of the whole run. Pass --epochs=100 for the paper's "
        "stated protocol."),
    "mnist_DDTPRHL_extrafb": (
        "identical to mnist_DDTPRHL except 4 extra feedback epochs per epoch instead of 1 (not re-tuned)."),
}
for _name in ("cifar10_BPConv_train", "cifar10_DDTPConv_train", "cifar10_DFAConv_train"):
    NOTES[_name] = ("trains 300 epochs, as the reference file ships (spec §7 item 11), without a validation set: "
                    "the CNN's training-loss config.")

_RHL_VARIANTS = {"_extrafb": "extra-feedback (4 feedback-only epochs after each epoch)",
                 "_rec": "recurrent-input", "_rec_extrafb": "recurrent-input + extra-feedback"}


def _variant(name):
    for suffix in sorted(_RHL_VARIANTS, key=len, reverse=True):
        if name.endswith(suffix) and "DDTPRHL" in name:
            return suffix
    return None


def _cell_of(name, config):
    """(table, column, method) of the paper cell a config produces, or None."""
    if config["architecture"] == "cnn":
        return None if config["no_val_set"] else (3, "cifar10", config["method"])
    if _variant(name):
        return None
    column = "frozen_mnist" if config["only_train_first_layer"] else config["dataset"]
    return (2 if config["no_val_set"] else 1, column, config["method"])


PAPER_CELLS = {name: _cell_of(name, config) for name, config in FINAL_CONFIGS.items()}


def paper_result(name: str) -> str:
    """One line: the paper's table, cell and number for config `name`, or why it has none."""
    config = FINAL_CONFIGS[name]
    cell = PAPER_CELLS[name]
    if cell is not None:
        table, column, method = cell
        where = f"Table {table}" + (f", {COLUMNS[column]}" if table != 3 else ", CIFAR10 CNN") + f", {ROWS[method]}"
        return f"{where}: {PAPER_RESULTS[cell]['text']} ({TABLE_QUANTITY[table][1]})"
    variant = _variant(name)
    if variant:
        column = "frozen_mnist" if config["only_train_first_layer"] else config["dataset"]
        return (f"not in the paper: Table 1 reports one DDTP-RHL number for {COLUMNS[column]} "
                f"({PAPER_RESULTS[(1, column, 'ddtp_rhl')]['text']}) without recording which DDTP-RHL variant "
                f"produced it (spec §7 item 7); this config is the {_RHL_VARIANTS[variant]} variant")
    return ("not in the paper: Table 3 reports the CNN's test errors only; this is its training-loss config "
            "(no validation set), which the paper does not print")


# The MNIST Table 1 config of each method: the launcher's per-method defaults (`Config.paper`).
MNIST_TABLE1 = {"bp": "mnist_BP", "dtp": "mnist_DTP", "dtp_pretrained": "mnist_DTP_pretrained",
                "dtpdrl": "mnist_DTPDRL", "ddtp_linear": "mnist_DDTPlinear", "ddtp_rhl": "mnist_DDTPRHL",
                "ddtp_control": "mnist_DDTPControl", "dfa": "mnist_DFA"}
MNIST_CONFIGS = {method: FINAL_CONFIGS[name] for method, name in MNIST_TABLE1.items()}

# Methods the paper did not tune on MNIST take another method's configuration as their default:
# vanilla TP (never implemented by the reference) that of DTP, GNT (used by the reference only for a toy
# figure) that of BP (η̂ = 1, no feedback).
# FW-DTP and L-DRL (later papers) start from DTP's and DTPDRL's (same architecture and feedback maps).
DEFAULTS_FROM = {"tp": "dtp", "gnt": "bp", "ldrl": "dtpdrl", "fw_dtp": "dtp"}
