"""Keras's optimizers, as the compiled step runs them: names, arguments and defaults of Keras 3.
The update formulas themselves are IR ops (ir/ops/optim.py) compiled into the step."""
from __future__ import annotations


class Optimizer:
    kind = ""
    defaults: dict = {}

    def __init__(self, learning_rate=0.001, name=None, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(unknown)}; "
                            f"it takes learning_rate, {', '.join(self.defaults)}")
        self.learning_rate = float(learning_rate)
        self.hyper = {**self.defaults, **hyper}
        self.name = name or type(self).__name__.lower()
        self.iterations = 0

    def current_learning_rate(self) -> float:
        return float(self.learning_rate)

    def spec(self) -> tuple:
        """(kind, hyper-parameters) for the optimizer pass."""
        return self.kind, dict(self.hyper)

    def get_config(self) -> dict:
        return {"name": self.name, "learning_rate": self.learning_rate, **self.hyper}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    kind = "sgd"
    defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None):
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        super().__init__(learning_rate, name, momentum=float(momentum), nesterov=bool(nesterov))


class Adam(Optimizer):
    kind = "adam"
    defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None):
        super().__init__(learning_rate, name, beta_1=float(beta_1), beta_2=float(beta_2), epsilon=float(epsilon))


class RMSprop(Optimizer):
    kind = "rmsprop"
    defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name=None):
        super().__init__(learning_rate, name, rho=float(rho), momentum=float(momentum), epsilon=float(epsilon),
                         centered=bool(centered))


ALL = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}
# Keras config keys this runtime does not model (they do not change the maths at these settings)
_IGNORED_KEYS = {"name", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue", "use_ema", "ema_momentum",
                 "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps", "is_legacy_optimizer",
                 "jit_compile", "decay", "amsgrad"}


def get(identifier) -> Optimizer:
    """An optimizer from a name ("adam"), a Keras config dict, or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = ALL.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {identifier!r}; known: {', '.join(ALL)}")
        return cls()
    if isinstance(identifier, dict):
        name = identifier.get("class_name", identifier.get("name", ""))
        config = dict(identifier.get("config", identifier))
        cls = ALL.get(str(name).lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(ALL)}")
        for key in ("clipnorm", "clipvalue", "global_clipnorm", "weight_decay"):
            if config.get(key):
                raise ValueError(f"optimizer option {key}={config[key]} is not supported yet")
        if config.get("amsgrad"):
            raise ValueError("Adam(amsgrad=True) is not supported yet")
        if isinstance(config.get("learning_rate"), dict):
            raise ValueError("learning-rate schedules are not supported yet; give a float learning_rate")
        kwargs = {k: v for k, v in config.items() if k not in _IGNORED_KEYS and k != "class_name"}
        return cls(**kwargs)
    raise ValueError(f"cannot interpret {identifier!r} as an optimizer")
