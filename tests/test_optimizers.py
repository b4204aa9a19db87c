"""The Keras-facing optimizers and learning-rate schedules (no compilation): names, defaults,
configs and errors as Keras 3's. The update formulas are tested in test_ops.py, and the whole
training step against TensorFlow in test_tf_fidelity.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from kgraph import optimizers
from kgraph.optimizers import schedules

S = schedules
# values Keras 3.15 gives at steps 0..8 (float32, printed to 8 decimals)
KERAS_SCHEDULE_VALUES = [
    (
        S.ExponentialDecay(0.1, 3, 0.5),
        [0.1, 0.07937005, 0.06299605, 0.05, 0.03968503, 0.03149803, 0.025, 0.01984251, 0.01574901],
    ),
    (S.ExponentialDecay(0.1, 3, 0.5, staircase=True), [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025]),
    (
        S.InverseTimeDecay(0.1, 2, 0.5, staircase=True),
        [0.1, 0.1, 0.06666667, 0.06666667, 0.05, 0.05, 0.04, 0.04, 0.03333334],
    ),
    (S.PiecewiseConstantDecay([2, 4], [0.1, 0.05, 0.01]), [0.1, 0.1, 0.1, 0.05, 0.05, 0.01, 0.01, 0.01, 0.01]),
    (S.PolynomialDecay(0.1, 4, 0.01, power=0.5), [0.1, 0.08794229, 0.07363961, 0.055, 0.01, 0.01, 0.01, 0.01, 0.01]),
    (
        S.PolynomialDecay(0.1, 3, 0.01, power=2.0, cycle=True),
        [0.1, 0.05, 0.02, 0.01, 0.02, 0.0125, 0.01, 0.01444444, 0.01111111],
    ),
    (S.CosineDecay(0.1, 4, alpha=0.2), [0.1, 0.08828428, 0.06, 0.03171573, 0.02, 0.02, 0.02, 0.02, 0.02]),
    (
        S.CosineDecay(0.0, 4, alpha=0.2, warmup_target=0.1, warmup_steps=3),
        [0.0, 0.03333334, 0.06666667, 0.1, 0.08828428, 0.06, 0.03171573, 0.02, 0.02],
    ),
    (  # every 3rd step of Keras's, periods 7, 10.5, ...: restarts at 7 and 17.5
        S.CosineDecayRestarts(0.1, 7, t_mul=1.5, m_mul=0.9),
        [0.1, 0.061126, 0.0049516, 0.0821807, 0.0483629, 0.0120127, 0.0807987, 0.0715248, 0.051469],
    ),
]


@pytest.mark.parametrize("schedule,values", KERAS_SCHEDULE_VALUES, ids=lambda v: repr(v)[:40])
def test_schedules_give_keras_values(schedule, values):
    restarts = isinstance(schedule, S.CosineDecayRestarts)  # every 3rd step, Keras's printed to 7 digits
    values_at = [schedule(step * (3 if restarts else 1)) for step in range(9)]
    assert values_at == pytest.approx(values, rel=1e-5 if restarts else 1e-6)


def test_schedule_round_trips_through_its_keras_config():
    s = S.PolynomialDecay(0.1, 4, 0.01, power=0.5)
    again = S.deserialize(json.loads(json.dumps(S.serialize(s))))
    assert again.get_config() == s.get_config()
    assert S.serialize(s)["config"] == {
        "initial_learning_rate": 0.1,
        "decay_steps": 4,
        "end_learning_rate": 0.01,
        "power": 0.5,
        "cycle": False,
        "name": "PolynomialDecay",
    }


def test_unknown_schedule_names_the_known_ones():
    with pytest.raises(ValueError) as e:
        optimizers.SGD(learning_rate={"class_name": "WarmupCosine", "config": {}})
    assert str(e.value) == (
        "unknown learning-rate schedule 'WarmupCosine'; known: ExponentialDecay, "
        "InverseTimeDecay, PiecewiseConstantDecay, PolynomialDecay, CosineDecay, CosineDecayRestarts"
    )


def test_unknown_optimizer_names_the_known_ones():
    for identifier in ("adamx", {"class_name": "Lamb", "config": {}}):
        with pytest.raises(ValueError) as e:
            optimizers.get(identifier)
        assert "\n" not in str(e.value)
        assert str(e.value).endswith("known: sgd, adam, adamw, rmsprop, adagrad, adadelta, adamax, nadam, lion, ftrl")


@pytest.mark.parametrize("name", list(optimizers.ALL))
def test_every_optimizer_round_trips_through_its_keras_config(name):
    opt = optimizers.get(name)
    again = optimizers.get({"class_name": type(opt).__name__, "config": opt.get_config()})
    assert type(again) is type(opt) and again.get_config() == opt.get_config()


def test_keras_defaults():
    assert optimizers.get("adadelta").learning_rate == 0.001
    assert optimizers.get("sgd").learning_rate == 0.01
    assert optimizers.AdamW().spec() == (
        "adam",
        {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False, "weight_decay": 0.004},
    )
    assert optimizers.Adagrad().get_config()["initial_accumulator_value"] == 0.1


def test_every_fixture_optimizer_is_read():
    for path in (Path(__file__).parent / "fixtures" / "tf").glob("*.json"):
        config = json.loads(path.read_text())["compile"]["optimizer"]
        opt = optimizers.get(config)
        assert type(opt).__name__ == config["class_name"]


def test_a_schedule_sets_the_rate_of_each_step():
    opt = optimizers.get(
        {
            "class_name": "SGD",
            "config": {
                "learning_rate": {
                    "module": "keras.optimizers.schedules",
                    "class_name": "ExponentialDecay",
                    "config": {"initial_learning_rate": 0.1, "decay_steps": 1, "decay_rate": 0.5},
                }
            },
        }
    )
    assert opt.current_learning_rate() == pytest.approx(0.1)
    opt.iterations = 2
    assert opt.learning_rate == pytest.approx(0.025)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5
    assert opt.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"


def test_options_and_their_errors():
    assert optimizers.SGD(clipnorm=1.0, weight_decay=0.1).spec()[1] == {
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.1,
        "clipnorm": 1.0,
    }
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`"):
        optimizers.Adam(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match="weight_decay=None"):
        optimizers.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match="loss_scale_factor=128.0 is not supported"):
        optimizers.get({"class_name": "Adam", "config": {"loss_scale_factor": 128.0}})
    # the constructors as the configs: an option that would change training is refused, not dropped,
    # and a misspelt argument raises as in Keras 3 (it trained as the default rate)
    with pytest.raises(ValueError, match="loss_scale_factor=128.0 is not supported"):
        optimizers.Adam(0.01, loss_scale_factor=128.0)
    with pytest.raises(ValueError, match=r"Argument\(s\) not recognized: \{'lerning_rate': 5.0\}"):
        optimizers.RMSprop(lerning_rate=5.0)
    assert optimizers.SGD(0.1, use_ema=False, ema_momentum=0.99, jit_compile=True).spec() == optimizers.SGD(0.1).spec()


def test_use_ema_options_reach_the_update_and_the_config_as_in_keras():
    opt = optimizers.get({"class_name": "Adam", "config": {"use_ema": True, "ema_overwrite_frequency": 5}})
    assert opt.use_ema and opt.spec()[1]["ema_momentum"] == 0.99 and opt.spec()[1]["ema_overwrite_frequency"] == 5
    assert optimizers.SGD(use_ema=True, ema_momentum=0.5).spec()[1]["ema_overwrite_frequency"] == 0
    config = optimizers.Lion(use_ema=True, ema_momentum=0.9).get_config()
    assert (config["use_ema"], config["ema_momentum"], config["ema_overwrite_frequency"]) == (True, 0.9, None)
    assert optimizers.get({"class_name": "Lion", "config": config}).spec() == optimizers.Lion(**config).spec()
    assert optimizers.SGD().get_config()["use_ema"] is False
    # Keras's checks and words
    with pytest.raises(ValueError, match=r"`ema_momentum` must be in the range \[0, 1\]. Received: ema_momentum=1.5"):
        optimizers.Adam(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="`ema_overwrite_frequency` must be an integer >= 1 or None"):
        optimizers.Adam(use_ema=True, ema_overwrite_frequency=2.5)
    optimizers.Adam(use_ema=False, ema_momentum=1.5)  # unchecked while off, as in Keras


def test_gradient_accumulation_steps_as_keras_checks_and_counts_them():
    opt = optimizers.get({"class_name": "SGD", "config": {"gradient_accumulation_steps": 4}})
    assert opt.spec()[1]["gradient_accumulation_steps"] == 4 and opt.get_config()["gradient_accumulation_steps"] == 4
    assert "gradient_accumulation_steps" not in optimizers.SGD(gradient_accumulation_steps=None).spec()[1]
    opt.step_count = 9  # Keras's iterations count updates: 9 steps of 4 are 2
    assert opt.iterations == 2
    opt.iterations = 3
    assert opt.step_count == 12
    with pytest.raises(ValueError, match="`gradient_accumulation_steps` must be an integer >= 2. Received: .*=1"):
        optimizers.Adam(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="gradient_accumulation_steps with clipnorm is not supported yet"):
        optimizers.Adam(gradient_accumulation_steps=2, clipnorm=1.0)
    # a schedule reads the steps taken, as Keras's reads its _iterations
    schedule = optimizers.schedules.PiecewiseConstantDecay([3], [0.1, 0.01])
    opt = optimizers.SGD(schedule, gradient_accumulation_steps=2)
    opt.step_count = 4
    assert opt.learning_rate == pytest.approx(0.01)


def test_learning_rate_answers_keras_3_variable_idioms():
    """optimizer.learning_rate.assign(x) and .numpy(), as on Keras 3's variable; a schedule's
    rate refuses assign as its setter does."""
    opt = optimizers.SGD(0.1)
    assert opt.learning_rate == pytest.approx(0.1) and opt.learning_rate.numpy().dtype == np.float32
    opt.learning_rate.assign(0.5)
    assert opt.learning_rate == 0.5 and opt.get_config()["learning_rate"] == 0.5
    import copy
    import pickle

    for again in (copy.copy(opt.learning_rate), pickle.loads(pickle.dumps({"lr": opt.learning_rate}))["lr"]):
        assert again == 0.5 and type(again) is float  # a plain float, holding no optimizer
    scheduled = optimizers.SGD(optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    with pytest.raises(TypeError, match="not settable"):
        scheduled.learning_rate.assign(0.5)
