"""`TrainConfig`: every setting of a training run, its default, its help text and its checks.

This module imports no TensorFlow: the command line builds its parser from these fields (their
defaults, help text, choices and accepted ranges), so the two never disagree.

>>> config = TrainConfig(epochs=2, train_limit=1024)
>>> config.optimizer, config.initial_learning_rate()
('adamw', 0.002)
>>> TrainConfig(optimizer="sdlm", batch_size=1).initial_learning_rate()
5e-05
>>> TrainConfig(epochs=0)
Traceback (most recent call last):
...
lenet_tf.errors.SettingError: epochs: must be a positive integer, got 0
"""

import dataclasses
import math
import numbers

from lenet_tf.errors import SettingError

VARIANTS = ("paper", "modern")
OPTIMIZERS = ("adamw", "muon", "adam", "sgd", "sdlm")
# The learning rate when none is given. For sdlm, a tenth of the paper's first global step: the
# paper's 0.0005 diverges on this network within the first samples (docs/sdlm.md).
DEFAULT_LEARNING_RATES = {"adamw": 2e-3, "muon": 2e-3, "adam": 2e-3, "sgd": 2e-3, "sdlm": 5e-5}
SCHEDULES = ("cosine", "onecycle", "paper", "constant")
JIT_COMPILE = ("auto", "on", "off")
STRATEGIES = ("default", "mirrored", "multiworker")
PROGRESS = ("auto", 0, 1, 2)
# What each recipe sets (docs/training.md#recipes, which has what each reaches): paper-schedule
# is the 20-pass run of the README's headline, fast the 6-pass one.
RECIPES = {
    "paper-schedule": {
        "epochs": 20, "batch_size": 32, "optimizer": "adamw", "learning_rate": 2e-3,
        "schedule": "cosine", "weight_decay": 0.05, "ema": True, "map_j": 1.0,
    },
    "fast": {
        "epochs": 6, "batch_size": 64, "optimizer": "muon", "learning_rate": 8e-3,
        "schedule": "onecycle", "weight_decay": 0.1, "ema": True, "map_j": 2.0,
    },
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Check:
    """The values a numeric setting accepts.

    Args:
        accept: Predicate on the value.
        description: What an accepted value is, for messages ("a positive integer").
    """

    accept: object
    description: str


POSITIVE_INT = Check(lambda value: value >= 1, "a positive integer")
POSITIVE = Check(lambda value: math.isfinite(value) and value > 0, "a positive number")
NON_NEGATIVE = Check(lambda value: math.isfinite(value) and value >= 0, "a number >= 0")
SEED = Check(lambda value: 0 <= value < 2**32, "an integer in [0, 2**32)")


def setting(default, help, choices=None, check=None, number=None, metavar=None, resume=True, boolean=False):
    """A `TrainConfig` field with what the command line and the checks need to know of it.

    Args:
        default: The default value.
        help: One line for `--help`. It names values and other settings, never flags.
        choices: The values allowed, for a setting with a few.
        check: A `Check`, for a numeric setting.
        number: `int` or `float`, for a numeric setting whose default is None.
        metavar: The name of the value in `--help` (`"N"`, `"DIR"`).
        resume: Whether a resumed run must have the value its backup was made with: True for
            everything that changes the trajectory of the weights, False for paths and display.
        boolean: Whether the setting is True or False, for one whose default is None.
    """
    boolean = boolean or isinstance(default, bool)
    metadata = dict(help=help, choices=choices, check=check, metavar=metavar, resume=resume, boolean=boolean)
    if check is not None:
        metadata["number"] = number or type(default)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults reproduce the README's results.

    Each field's help text (`dataclasses.fields(TrainConfig)[i].metadata["help"]`) is what
    `python -m lenet_tf.train --help` shows for it. A value that cannot work raises
    `SettingError` naming the field, on construction and again when `train` starts.

    Raises:
        SettingError: A value outside its choices or range, or settings that contradict each
            other (`cpu_devices` without a distribution strategy).
    """

    variant: str = setting(
        "paper", "paper: LeCun et al. 1998 as published; modern: ReLU, max-pool, softmax", choices=VARIANTS
    )
    recipe: str = setting(
        "paper-schedule",
        "paper-schedule: the paper's 20 passes, batch 32, AdamW with cosine decay (0.81% test error); "
        "fast: 6 passes, batch 64, Muon with a one-cycle schedule (docs/training.md#recipes). "
        "Sets epochs, batch_size, optimizer, learning_rate, schedule, weight_decay, ema and map_j, "
        "unless given",
        choices=tuple(RECIPES),
    )
    epochs: int | None = setting(
        None, "passes over the training set (the paper made 20)", check=POSITIVE_INT, number=int
    )
    batch_size: int | None = setting(
        None,
        "images per update (the global batch, split across a strategy's replicas)",
        check=POSITIVE_INT,
        number=int,
    )
    optimizer: str | None = setting(
        None,
        "adamw: Adam with decoupled weight decay, the paper-schedule recipe's; "
        "muon: orthogonalised momentum for every kernel, convolutions included, AdamW for the "
        "biases and coefficients (lenet_tf.optimizers.KernelMuon), the fast recipe's; "
        "adam: overfits more; sgd: Nesterov momentum 0.9 (diverged at learning rate 0.02 in our "
        "runs; 5e-3 trains); sdlm: the paper's stochastic diagonal Levenberg-Marquardt "
        "(docs/sdlm.md): a step of learning_rate / (0.02 + h_kk) per parameter, the paper's "
        "per-pass schedule, no weight average or decay (schedule, weight_decay and ema do not "
        "apply); the paper used batch_size 1",
        choices=OPTIMIZERS,
    )
    learning_rate: float | None = setting(
        None,
        "initial learning rate (the peak for schedule onecycle); with an optimizer other than the "
        "recipe's, 2e-3, or 5e-5 for sdlm (per sample, scaled by the batch size)",
        check=POSITIVE,
        number=float,
    )
    hessian_refresh: int | None = setting(
        None,
        "optimizer sdlm: also re-estimate the Hessian diagonal every N steps, a multiple of "
        "steps_per_execution (default: before each pass only, as the paper)",
        check=POSITIVE_INT,
        number=int,
        metavar="N",
    )
    schedule: str | None = setting(
        None,
        "learning-rate schedule: cosine decay to 0 over the run; onecycle: linear warm-up from "
        "1/25 of learning_rate over the first fifth of the run, then cosine decay to 0; paper: "
        "steps down after epochs 2, 5, 8 and 12 (x0.4, x0.2, x0.1, x0.02); constant",
        choices=SCHEDULES,
    )
    weight_decay: float | None = setting(
        None, "decoupled weight decay of optimizers adamw and muon", check=NON_NEGATIVE, number=float
    )
    ema: bool | None = setting(
        None, "end with an exponential moving average of the weights (over ~5% of the run)", boolean=True
    )
    map_j: float | None = setting(
        None, "constant j of the paper's MAP loss (paper variant)", check=POSITIVE, number=float
    )
    distort: bool = setting(False, "random affine distortions of the training images, fresh every epoch")
    seed: int = setting(0, "seed of the initial weights, the data order and the distortions", check=SEED)
    deterministic: bool = setting(
        False, "deterministic TensorFlow ops: same seed, bit-identical weights (slower)"
    )
    data_dir: str | None = setting(
        None,
        "folder with the MNIST IDX files (default: $LENET_MNIST_DIR, else tensorflow-datasets)",
        metavar="DIR",
        resume=False,
    )
    out: str = setting(
        "runs/lenet5",
        "run folder; rerunning the same command there resumes an interrupted run",
        metavar="RUN_DIR",
        resume=False,
    )
    overwrite: bool = setting(
        False,
        "replace a finished run in the run folder (without it, the run is refused); an interrupted "
        "run is resumed either way",
        resume=False,
    )
    train_limit: int | None = setting(
        None, "train on the first N training images only", check=POSITIVE_INT, number=int, metavar="N"
    )
    steps_per_execution: int = setting(
        8,
        "training steps per compiled call (fewer Python round trips); lowered to a divisor of the "
        "steps per epoch",
        check=POSITIVE_INT,
        resume=False,
    )
    jit_compile: str = setting(
        "auto", "XLA compilation; auto: on a GPU only (it is slower on a CPU)", choices=JIT_COMPILE, resume=False
    )
    mixed_precision: bool = setting(False, "float16 compute with float32 weights (GPUs with tensor cores)")
    trainable_centers: bool = setting(False, "train the RBF centres too (the paper keeps them fixed)")
    strategy: str = setting(
        "default",
        "default: one device; mirrored: all local GPUs (or cpu_devices logical CPUs); multiworker: "
        "the machines listed in $TF_CONFIG",
        choices=STRATEGIES,
    )
    cpu_devices: int | None = setting(
        None,
        "split the CPU into N logical devices for strategy mirrored or multiworker (data "
        "parallelism without GPUs)",
        check=POSITIVE_INT,
        number=int,
        metavar="N",
    )
    worker_timeout: float = setting(
        300.0,
        "strategy multiworker: fail unless every worker starts training within this many seconds",
        check=POSITIVE,
        metavar="SECONDS",
        resume=False,
    )
    verbose: str | int = setting(
        "auto",
        "progress: auto (a bar on a terminal, one line per epoch otherwise), 0 silent, 1 bar, "
        "2 one line per epoch",
        choices=PROGRESS,
        resume=False,
    )
    validation: bool = setting(
        True,
        "measure the test error after every epoch (the final test error is measured either way)",
        resume=False,
    )

    def __post_init__(self):
        if self.recipe in RECIPES:  # else `validate` names the bad recipe
            self._apply_recipe()
        self.validate()

    def _apply_recipe(self):
        """Fills the settings left at None with the recipe's; the learning rate only for its optimizer."""
        recipe = RECIPES[self.recipe]
        own_optimizer = self.optimizer in (None, recipe["optimizer"])
        for name, value in recipe.items():
            if getattr(self, name) is None and (name != "learning_rate" or own_optimizer):
                setattr(self, name, value)

    def validate(self):
        """Raises `SettingError` for the first setting whose value cannot work."""
        for field in dataclasses.fields(self):
            _check_setting(field, getattr(self, field.name))
        if self.cpu_devices and self.strategy == "default":
            raise SettingError("cpu_devices", "needs strategy 'mirrored' or 'multiworker'")
        if self.optimizer == "sdlm":
            _check_sdlm(self)
        elif self.hessian_refresh is not None:
            raise SettingError("hessian_refresh", "applies to optimizer 'sdlm' only")

    def initial_learning_rate(self):
        """`learning_rate`, or the optimizer's default when it is None."""
        return self.learning_rate or DEFAULT_LEARNING_RATES[self.optimizer]

    def fingerprint(self):
        """The settings a resumed run must share with its backup (fields with `resume=True`)."""
        fields = dataclasses.fields(self)
        return {field.name: getattr(self, field.name) for field in fields if field.metadata["resume"]}


def _check_sdlm(config):
    """What sdlm has a rule for: the paper variant on one device, in float32 (docs/sdlm.md)."""
    if config.variant != "paper":
        raise SettingError("optimizer", "sdlm needs variant 'paper' (its curvature rules are the MAP loss's)")
    if config.strategy != "default" or config.mixed_precision:
        raise SettingError("optimizer", "sdlm runs on one device in float32 (strategy 'default', no mixed_precision)")


def _check_setting(field, value):
    metadata = field.metadata
    if value is None and field.default is None:
        return
    if metadata["choices"] is not None:
        if value not in metadata["choices"] or isinstance(value, bool):
            choices = ", ".join(map(repr, metadata["choices"]))
            raise SettingError(field.name, f"must be one of {choices}, got {value!r}")
    elif metadata["boolean"]:
        if not isinstance(value, bool):
            raise SettingError(field.name, f"must be True or False, got {value!r}")
    elif metadata["check"] is not None:
        number = numbers.Integral if metadata["number"] is int else numbers.Real
        accepted = isinstance(value, number) and not isinstance(value, bool) and metadata["check"].accept(value)
        if not accepted:
            raise SettingError(field.name, f"must be {metadata['check'].description}, got {value!r}")
