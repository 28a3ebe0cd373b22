"""The catalogue of settings a learning rule does not use or cannot take: each is refused (or, where it is what the
rule ignores anyway, accepted and dropped) by the rule that knows what it uses (`LearningRule.uses`), in one line
naming the setting and the fix, in the words of the front end that took it: a rule's field, a `TPModel` keyword
argument, a launcher flag, a search-space line; and it is refused when the model is built, not at the first step
(a setting that does nothing must not pass silently).
"""
import dataclasses
import os

import numpy as np
import pytest

from conftest import UNTRAINED_FEEDBACK_METHODS
from tp_keras.core.callbacks import FeedbackSchedule
from tp_keras.core.model import TPModel
from tp_keras.core.rules import RULES, SETTINGS, RuleError, UnusedSettingError, get_rule
from tp_keras.core.rules.base import BOOL_FIELDS
from tp_keras.reference import configs as paper_configs
from tp_keras.run.config import RULE_FLAGS, Config, ConfigError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def _tiny(method, **kwargs):
    return TPModel(method, 5, [4, 4], 3, dtype="float64", **kwargs)


# --- what each rule uses --------------------------------------------------------------------------------------

def test_each_rule_knows_what_it_uses():
    uses = {name: {s for s in SETTINGS if rule.uses(s)} for name, rule in RULES.items()}
    feedback = {"sigma", "feedback_optimizer", "feedback_schedule"}
    assert uses["bp"] == set()
    assert uses["gnt"] == {"target_stepsize", "gn_damping"}
    assert uses["dfa"] == uses["fw_dtp"] == uses["fw_dtp_bn"] == {"target_stepsize"}  # fixed feedback: no noise
    assert uses["ldrl"] == uses["dtp_bn"] == {"target_stepsize", "feedback_iterations"} | feedback
    assert uses["ddtp_rhl"] == {"target_stepsize", "size_hidden_fb", "recurrent_input"} | feedback
    others = set(uses) - {"bp", "gnt", "dfa", "fw_dtp", "fw_dtp_bn", "ldrl", "dtp_bn", "ddtp_rhl"}
    for name in sorted(others):
        assert uses[name] == {"target_stepsize"} | feedback, name
    assert RULES["bp"].used(target_stepsize=0.1, sigma=0.05) == {}
    assert RULES["dfa"].used(target_stepsize=0.1, sigma=0.05) == {"target_stepsize": 0.1}
    with pytest.raises(RuleError, match="unknown setting 'lr'"):
        RULES["dtp"].uses("lr")


# --- a rule's fields --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, change, message", [
    ("fw_dtp", dict(sigma=0.5), "rule 'fw_dtp': sigma=0.5 is not used (fw_dtp does not train feedback weights); "
                                "drop it: sigma is for rules that train their feedback"),
    ("bp", dict(target_stepsize=0.5), "rule 'bp': target_stepsize=0.5 is not used (bp propagates no targets, it "
                                      "trains by backprop); drop it: target_stepsize is for rules that propagate"),
    ("ldrl", dict(gn_damping=0.5), "rule 'ldrl': gn_damping=0.5 is not used (ldrl has no Gauss-Newton targets); "
                                   "drop it: gn_damping is for Gauss-Newton targets"),
    ("dtp", dict(feedback_iterations=(1, 1)), "rule 'dtp': feedback_iterations=(1, 1) is not used (dtp takes one "
                                              "feedback step per batch, with its targets)"),
    ("dfa", dict(sigma=(0.1, 0.2)), "rule 'dfa': sigma=(0.1, 0.2) is not used (dfa does not train feedback"),
])
def test_a_rule_refuses_a_hyper_parameter_it_does_not_use(name, change, message):
    with pytest.raises(UnusedSettingError) as err:
        dataclasses.replace(RULES[name], **change)
    assert _one_line(err).startswith(message)
    assert (err.value.setting, err.value.rule) == (next(iter(change)), name)


@pytest.mark.parametrize("field", BOOL_FIELDS)
def test_a_rule_refuses_a_non_bool_in_a_bool_field(field):
    with pytest.raises(RuleError) as err:
        dataclasses.replace(RULES["ldrl"], **{field: "False"})
    assert _one_line(err) == f"rule 'ldrl': {field}='False' must be True or False (a bool, not str)"


def test_a_rule_takes_numpy_bools_as_bools():
    rule = dataclasses.replace(RULES["dtp"], last_hidden_bias=np.bool_(False))
    assert rule.last_hidden_bias is False and rule.get_config()["last_hidden_bias"] is False


def test_a_rule_takes_the_defaults_of_what_it_does_not_use():
    # What every registry rule does (fw_dtp is DTP's structure with feedback_loss="none" and DTP's defaults).
    assert dataclasses.replace(RULES["fw_dtp"], sigma=0.08, target_stepsize=0.3).target_stepsize == 0.3
    assert dataclasses.replace(RULES["ldrl"], sigma=(0.1, 0.2), feedback_iterations=(2, 3)).sigmas(2) == [0.1, 0.2]


# --- TPModel's keyword arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("method, kwargs, message", [
    ("ldrl", dict(gn_damping=0.5), "TPModel: gn_damping=0.5 is not used by rule 'ldrl' (ldrl has no Gauss-Newton "
                                   "targets); drop the argument: gn_damping is for Gauss-Newton targets"),
    ("fw_dtp", dict(sigma=0.5), "TPModel: sigma=0.5 is not used by rule 'fw_dtp' (fw_dtp does not train feedback "
                                "weights); drop the argument: sigma is for rules that train their feedback"),
    ("bp", dict(target_stepsize=0.5), "TPModel: target_stepsize=0.5 is not used by rule 'bp' (bp propagates no "
                                      "targets, it trains by backprop); drop the argument"),
    ("dfa", dict(feedback_iterations=2), "TPModel: feedback_iterations=2 is not used by rule 'dfa'"),
    ("dtpdrl", dict(size_hidden_fb=64), "TPModel: size_hidden_fb=64 is not used by rule 'dtpdrl' (dtpdrl has no "
                                        "random feedback layer); drop the argument"),
    ("ddtp_linear", dict(recurrent_input=True), "TPModel: recurrent_input=True is not used by rule 'ddtp_linear'"),
])
def test_tpmodel_refuses_a_hyper_parameter_the_rule_does_not_use(method, kwargs, message):
    with pytest.raises(ValueError) as err:
        _tiny(method, **kwargs)
    assert _one_line(err).startswith(message)


def test_tpmodel_accepts_and_drops_what_the_rule_ignores_anyway():
    """The rule's own value and the method's paper-configuration value (the launcher passes them for every
    method: bp's η̂ = 1, DTP's σ for fw_dtp, the reference's size_hidden_fb=500) are no-ops, dropped."""
    bp = _tiny("bp", target_stepsize=1.0, sigma=0.08, gn_damping=0.0, size_hidden_fb=500)
    assert bp.rule is RULES["bp"]
    dtp_sigma = paper_configs.MNIST_CONFIGS["dtp"]["sigma"]
    assert _tiny("fw_dtp", sigma=dtp_sigma).rule is RULES["fw_dtp"]
    loaded = TPModel.from_config(bp.get_config())  # a saved model passes every hyper-parameter back
    assert loaded.rule is RULES["bp"]


def test_tpmodel_checks_a_used_value_as_before():
    with pytest.raises(ValueError) as err:
        _tiny("gnt", gn_damping=-1.0)
    assert _one_line(err).startswith("TPModel: gn_damping=-1.0 must be a finite number >= 0")
    assert _tiny("gnt", gn_damping=0.5).rule.gn_damping == 0.5


@pytest.mark.parametrize("name, value, allowed", [("only_train_first_layer", "False", "True or False"),
                                                  ("recurrent_input", 0, "True or False"),
                                                  ("last_hidden_bias", "no", "True, False or None")])
def test_tpmodel_refuses_non_bool_switches(name, value, allowed):
    with pytest.raises(ValueError) as err:
        _tiny("ddtp_rhl", **{name: value})
    assert _one_line(err) == f"TPModel: {name}={value!r} must be {allowed} (a bool, not {type(value).__name__})"


def test_setting_an_unused_hyper_parameter_on_a_model_is_refused_by_the_rule():
    model = _tiny("fw_dtp")
    with pytest.raises(RuleError) as err:
        model.sigma = 0.5
    assert _one_line(err).startswith("rule 'fw_dtp': sigma=0.5 is not used (fw_dtp does not train feedback weights)")
    assert model.rule is RULES["fw_dtp"]


def test_set_rule_by_name_keeps_only_what_the_new_rule_uses():
    model = _tiny("gnt", gn_damping=0.5, target_stepsize=0.2)
    model.set_rule("bp")  # the same (no) feedback maps; bp takes neither η̂ nor λ
    assert model.rule is RULES["bp"]


# --- per-layer values of the wrong length: refused when the model is built --------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(sigma=(0.1, 0.2, 0.3)), "TPModel: sigma=[0.1, 0.2, 0.3] has 3 values for the network's 2 hidden layers; "
                                  "give one value, or one per hidden layer"),
    (dict(feedback_iterations=[1, 2, 3]), "TPModel: feedback_iterations=[1, 2, 3] has 3 values for the network's 2 "
                                          "hidden layers"),
])
def test_per_layer_values_of_the_wrong_length_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError) as err:
        _tiny("ldrl", **kwargs)
    assert _one_line(err) == message if kwargs.get("sigma") else _one_line(err).startswith(message)
    rule = dataclasses.replace(RULES["ldrl"], **kwargs)  # the same through a rule value
    with pytest.raises(ValueError, match="for the network's 2 hidden layers"):
        _tiny(rule)
    assert _tiny("ldrl", sigma=(0.1, 0.2), feedback_iterations=(1, 2)).rule.iterations(2) == [1, 2]


def test_to_tp_model_checks_per_layer_lengths_and_unused_hyper_parameters():
    import keras
    import tp_keras
    keras_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                                    keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)])
    with pytest.raises(ValueError) as err:
        tp_keras.to_tp_model(keras_model, "ldrl", sigma=[0.1, 0.2, 0.3])
    assert "has 3 values for the network's 2 hidden layers" in _one_line(err)
    with pytest.raises(ValueError) as err:
        tp_keras.to_tp_model(keras_model, "fw_dtp", sigma=0.5)
    assert _one_line(err).startswith("TPModel: sigma=0.5 is not used by rule 'fw_dtp'")


# --- FeedbackSchedule on a model that trains no feedback ---------------------------------------------------------

@pytest.mark.parametrize("method", UNTRAINED_FEEDBACK_METHODS)
def test_feedback_schedule_is_refused_where_no_feedback_trains(method):
    x = np.random.default_rng(0).normal(size=(8, 5))
    y = np.arange(8) % 3
    model = _tiny(method)
    model.compile(optimizer="sgd")
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ValueError) as err:
        model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                  callbacks=[FeedbackSchedule(x, y, pretrain_epochs=1, extra_epochs=1)])
    assert _one_line(err) == (f"FeedbackSchedule: {method} does not train feedback weights, so its feedback-only "
                              "passes would train nothing; drop the callback")
    for a, b in zip(before, model.weights):  # refused before the first step
        np.testing.assert_array_equal(a, b.numpy())


# --- the launcher's flags -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, overrides, message", [
    ("fw_dtp", dict(lr_fb=1e-3), "--lr_fb: 0.001 is not used by fw_dtp (fw_dtp does not train feedback weights); "
                                 "drop the flag (it is for methods that train their feedback)"),
    ("fw_dtp", dict(beta1_fb=0.5), "--beta1_fb: 0.5 is not used by fw_dtp"),
    ("dfa", dict(sigma=0.5), "--sigma: 0.5 is not used by dfa (dfa does not train feedback weights)"),
    ("bp", dict(target_stepsize=0.5), "--target_stepsize: 0.5 is not used by bp (bp propagates no targets"),
    ("ldrl", dict(gn_damping_training=0.5), "--gn_damping_training: 0.5 is not used by ldrl (ldrl has no "
                                            "Gauss-Newton targets); drop the flag (it is for gnt)"),
    ("dtpdrl", dict(size_hidden_fb=64), "--size_hidden_fb: 64 is not used by dtpdrl (dtpdrl has no random feedback "
                                        "layer); drop the flag (it is for ddtp_rhl)"),
    ("dtp", dict(recurrent_input=True), "--recurrent_input: True is not used by dtp"),
    ("dtp", dict(feedback_iterations=3), "--feedback_iterations: 3 is not used by dtp (dtp takes one feedback step "
                                         "per batch, with its targets); drop the flag (it is for ldrl, dtp_bn)"),
    ("gnt", dict(epochs_fb=2), "--epochs_fb: 2 is not used by gnt (gnt does not train feedback weights)"),
    ("fw_dtp", dict(extra_fb_epochs=1), "--extra_fb_epochs: 1 is not used by fw_dtp"),
])
def test_the_launcher_refuses_a_flag_the_method_does_not_use(method, overrides, message):
    with pytest.raises(ConfigError) as err:
        Config.paper(method, **overrides).validate()
    assert _one_line(err).startswith(message)
    assert err.value.flag == next(iter(overrides))


def test_the_launcher_accepts_unused_flags_at_the_methods_default():
    """Flags always have a value: one given at the method's default is what the method ignores anyway."""
    bp = Config.paper("bp")
    Config.paper("bp", target_stepsize=bp.target_stepsize, lr_fb=bp.lr_fb, sigma=bp.sigma, epochs_fb=0,
                 size_hidden_fb=bp.size_hidden_fb, gn_damping_training=0.0).validate()
    Config(method="fw_dtp", lr_fb=0.5).validate()  # field by field: nothing is "given"


def test_the_launcher_refuses_an_unused_flag_from_the_command_line_and_a_flagfile(capsys):
    from tp_keras.run import launch
    flagfile = os.path.join(ROOT, "launch", "mnist_BP.flags")
    launch.FLAGS.unparse_flags()
    try:
        launch.FLAGS(["launch", f"--flagfile={flagfile}"])
        launch.config_from_flags().validate()  # the flagfile carries bp's unused values at bp's defaults
        launch.FLAGS.unparse_flags()
        launch.FLAGS(["launch", f"--flagfile={flagfile}", "--lr_fb=0.01"])
        with pytest.raises(ConfigError) as err:
            launch.config_from_flags().validate()
        assert _one_line(err).startswith("--lr_fb: 0.01 is not used by bp")
        launch.FLAGS.unparse_flags()
        launch.FLAGS(["launch", "--method=fw_dtp", "--sigma=0.2"])
        with pytest.raises(ConfigError, match=r"^--sigma: 0.2 is not used by fw_dtp"):
            launch.config_from_flags().validate()
    finally:
        launch.FLAGS.unparse_flags()


def test_no_paper_config_carries_an_unused_value_other_than_its_methods_default():
    """Why every launch/*.flags still runs: the reference's configs carry values their method does not use, but
    always the method's default (its MNIST Table 1 value), so none of them is refused (or needs a warning)."""
    for name, cell in paper_configs.FINAL_CONFIGS.items():
        method = RULES[cell["method"]]
        default = Config.paper(cell["method"])
        for flag, setting in RULE_FLAGS.items():
            if flag in cell and not method.uses(setting):
                assert cell[flag] == getattr(default, flag), (name, flag)
        Config.from_paper_cell(name).validate()


def test_the_model_the_launcher_builds_takes_the_carried_values():
    from tp_keras.run.data import Dataset, Split
    from tp_keras.run.factories import build_model
    split = Split(np.zeros((1, 784), "float32"), np.zeros((1,), "int32"))
    dataset = Dataset(name="mnist", train=split, val=None, test=split, num_outputs=10, task="classification",
                      image_shape=(28, 28, 1))
    for method in UNTRAINED_FEEDBACK_METHODS:
        config = Config.paper(method, num_hidden=1, size_hidden=3).validate()
        model = build_model(config, dataset)
        assert model.method is RULES[method], method
        unused = [s for s in ("sigma", "target_stepsize", "gn_damping") if not RULES[method].uses(s)]
        assert [getattr(model.rule, s) for s in unused] == [getattr(RULES[method], s) for s in unused], method
        assert model.target_stepsize == (config.target_stepsize if method != "bp" else RULES["bp"].target_stepsize)


# --- the search spaces ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, line, message", [
    ("fw_dtp", "lr_fb log 1e-5 1e-3", "--space: lr_fb: not used by fw_dtp (fw_dtp does not train feedback weights); "
                                      "remove the line (or search a space written for fw_dtp)"),
    ("dtpdrl", "size_hidden_fb int 256 2048", "--space: size_hidden_fb: not used by dtpdrl (dtpdrl has no random "
                                              "feedback layer)"),
    ("bp", "target_stepsize log 0.01 1", "--space: target_stepsize: not used by bp (bp propagates no targets"),
    ("dtp", "gn_damping_training float 0 1", "--space: gn_damping_training: not used by dtp"),
    ("dfa", "epochs_fb int 0 3", "--space: epochs_fb: not used by dfa"),
])
def test_a_search_space_refuses_a_flag_the_method_does_not_use(method, line, message):
    from tp_keras.search import space
    with pytest.raises(space.SpaceError) as err:
        space.check_method(space.parse(line + "\n"), get_rule(method))
    assert _one_line(err).startswith(message)
    space.check_method(space.parse("size_hidden_fb int 256 2048\n"), get_rule("ddtp_rhl"))


def test_the_search_refuses_an_unused_flag_on_its_command_line():
    from tp_keras.search import runs
    with pytest.raises(ConfigError) as err:
        runs.config_from_args(["--method=fw_dtp", "--lr_fb=0.001"])
    assert _one_line(err).startswith("--lr_fb: 0.001 is not used by fw_dtp")


# --- one validator, said in each front end's words ------------------------------------------------------------

@pytest.mark.parametrize("method, field, value, flag", [
    ("dtpdrl", "sigma", -0.1, "sigma"), ("dtpdrl", "sigma", float("nan"), "sigma"),
    ("dtp", "target_stepsize", 0.0, "target_stepsize"), ("gnt", "gn_damping", -1.0, "gn_damping_training"),
    ("ldrl", "feedback_iterations", 0, "feedback_iterations"),
])
def test_the_rule_checks_a_hyper_parameter_and_the_front_ends_say_it(method, field, value, flag):
    """The rule is the only check (a HyperParameterError naming the field); the launcher and TPModel say the same
    problem with the flag or the keyword argument, and no check of their own comes first."""
    with pytest.raises(RuleError) as rule_err:
        dataclasses.replace(RULES[method], **{field: value})
    err = rule_err.value
    assert (err.rule, err.field) == (method, field) and _one_line(rule_err).startswith(f"rule {method!r}: {field}=")
    with pytest.raises(ConfigError) as by_flag:
        Config.paper(method, **{flag: value}).validate()
    assert _one_line(by_flag) == f"--{flag}: " + err.reworded(str(value), f"--{flag}")
    with pytest.raises(ValueError) as by_keyword:
        _tiny(method, **{field: value})
    assert _one_line(by_keyword) == "TPModel: " + err.reworded(f"{field}={value!r}", field)


def test_the_rule_holds_the_defaults_config_does_not_repeat_them():
    """A Config built field by field takes the rule's hyper-parameters (the paper's configs are data, apart)."""
    for name, rule in RULES.items():
        config = Config(method=name)
        assert (config.sigma, config.target_stepsize, config.gn_damping_training) == (
            rule.sigma, rule.target_stepsize, rule.gn_damping), name
        assert config.feedback_iterations is None  # the rule's, through TPModel


# --- the in-batch schedule: a component the step and the drivers ask ---------------------------------------------

def test_the_in_batch_schedule_answers_what_the_step_and_the_drivers_ask():
    from tp_keras.core.rules.components import InBatchSchedule
    assert RULES["dtp"].schedule == InBatchSchedule(feedback_first=False, iterations=1, per_layer_optimizers=False)
    ldrl = dataclasses.replace(RULES["ldrl"], feedback_iterations=(1, 3))
    schedule = ldrl.schedule
    assert schedule.feedback_first and schedule.per_layer_optimizers and schedule.steps(2) == [1, 3]
    assert schedule.rounds(2) == [None, [1], [1]]  # both layers, then layer 2 alone
    assert RULES["ldrl"].schedule.rounds(3) == [None] * 3
    # Saved as the rule's three fields, as before.
    config = ldrl.get_config()
    assert (config["feedback_first"], config["feedback_iterations"], config["per_layer_feedback_optimizers"]) == (
        True, [1, 3], True)
    assert "schedule" not in config
