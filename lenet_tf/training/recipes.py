"""How a LeNet-5 is optimised: optimizer, learning-rate schedule, weight average, compile.

What each named recipe sets is `lenet_tf.training.config.RECIPES`; this module turns a
`TrainConfig` into a Keras optimizer and learning-rate schedule. The default recipe
(`paper-schedule`: AdamW 2e-3, cosine decay to 0, weight decay 0.05, batch 32, an exponential
moving average of the weights, the MAP loss with j = 1) reached the lowest test error of the
Adam, AdamW and SGD recipes we tried over 20 epochs (Muon came out level in more time); `fast`
trains with Muon (`lenet_tf.optimizers.KernelMuon`), warming up and decaying in one cycle over
6 epochs, on the MAP loss with j = 2 (0.04 point lower than j = 1 on the mean of sixty 2-epoch
runs); `docs/training.md` has the comparisons. The paper's own stepped schedule is `schedule="paper"`.

>>> ema_momentum(total_steps=37_500)
0.999
>>> effective_steps_per_execution(steps_per_epoch=1875, requested=8)
5
"""

import keras

from lenet_tf.layers import SparseConv2D
from lenet_tf.losses import MAPLoss
from lenet_tf.metrics import NearestPrototypeAccuracy
from lenet_tf.model import model_variant
from lenet_tf.optimizers import KernelMuon
from lenet_tf.schedules import WarmupCosineDecay

# The paper's global learning rate per pass (section III.B), as multiples of its first value
# 0.0005: passes 1-2, 3-5, 6-8, 9-12, then 13 on.
PAPER_SCHEDULE_BOUNDARIES = (2, 5, 8, 12)
PAPER_SCHEDULE_FACTORS = (1.0, 0.4, 0.2, 0.1, 0.02)
SGD_MOMENTUM = 0.9
# One-cycle: a linear warm-up from 1/25 of the peak over the first fifth of the run, then cosine
# decay to 0. (A warm-up over 5% of a 2-epoch run ended at 1.66% test error, over 20% at 1.46%.)
WARMUP_FRACTION = 0.2
WARMUP_START_FACTOR = 0.04
# The weight average spans about 1 / (1 - momentum) steps: 1,000 at 0.999, but at most 1/20 of
# the run, so that a short run does not end on weights still near their initial values.
EMA_MOMENTUM = 0.999
EMA_SPANS_PER_RUN = 20.0
# Muon steps every kernel by the same spectral norm, 2.5x the learning rate (0.02 at `fast`'s
# peak, Muon's usual rate), not by Keras's AdamW-sized scale, which gave C5 1.6x and C1 0.4x C3's
# step: `fast` ends 0.05 point lower on the mean of sixty 2-epoch runs and 0.06 point lower on
# that of six 6-epoch runs (docs/training-log.md, "Muon's original update scale").
MUON_LR_RATIO = 2.5


def learning_rate_schedule(config, steps_per_epoch):
    """The learning rate, or a Keras schedule over training steps, that `config` asks for.

    Args:
        config: A `TrainConfig` (`learning_rate`, `schedule`, `epochs`).
        steps_per_epoch: Training steps per epoch.

    Returns:
        A float for `schedule="constant"`, else a `keras.optimizers.schedules.LearningRateSchedule`:
        `CosineDecay`, `lenet_tf.schedules.WarmupCosineDecay` for `"onecycle"`, or
        `PiecewiseConstantDecay`.
    """
    learning_rate = config.initial_learning_rate()
    if config.schedule == "constant":
        return learning_rate
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    if config.schedule == "onecycle":
        warmup_steps = round(WARMUP_FRACTION * total_steps)
        return WarmupCosineDecay(learning_rate, warmup_steps, total_steps - warmup_steps, WARMUP_START_FACTOR)
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [boundary * steps_per_epoch for boundary in PAPER_SCHEDULE_BOUNDARIES],
        [learning_rate * factor for factor in PAPER_SCHEDULE_FACTORS],
    )


def ema_momentum(total_steps):
    """Momentum of the weight average: 0.999, shortened so it spans at most ~5% of the run.

    Keras starts the average at the first step's weights; with a fixed 0.999 a run of a few
    hundred steps would end on weights still mostly at their initial values.

    Args:
        total_steps: Training steps of the whole run.

    Returns:
        A momentum in [0, 0.999].
    """
    return min(EMA_MOMENTUM, max(0.0, 1.0 - EMA_SPANS_PER_RUN / total_steps))


def make_optimizer(config, steps_per_epoch, sparse_kernels=None):
    """The Keras optimizer `config` asks for, with its schedule and weight average.

    Args:
        config: A `TrainConfig`.
        steps_per_epoch: Training steps per epoch, for the schedule and the average.
        sparse_kernels: For Muon, the model's packed sparse kernels (`sparse_kernels`), read
            as their dense matrices.

    Returns:
        A `keras.optimizers.AdamW`, `lenet_tf.optimizers.KernelMuon` (with the same decay for
        kernels and vectors), `Adam`, `SGD` (Nesterov momentum 0.9) or `SDLM` (the
        paper's per-pass schedule; its Hessian diagonal comes from `sdlm.HessianRefresh`).
    """
    if config.optimizer == "sdlm":
        from lenet_tf.training import sdlm  # TensorFlow's; the other optimizers run on any Keras backend

        schedule = sdlm.paper_eta_schedule(steps_per_epoch, config.batch_size, config.initial_learning_rate())
        return sdlm.SDLM(schedule, mu=sdlm.PAPER_MU)
    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    average = {"use_ema": config.ema, "ema_momentum": ema_momentum(config.epochs * steps_per_epoch)}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=SGD_MOMENTUM, nesterov=True, **average)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **average)
    if config.optimizer == "muon":
        decay = config.weight_decay
        return KernelMuon(
            learning_rate,
            sparse_kernels=sparse_kernels,
            muon_lr_ratio=MUON_LR_RATIO,
            weight_decay=decay,
            adam_weight_decay=decay,
            **average,
        )
    return keras.optimizers.Adam(learning_rate, **average)


def sparse_kernels(model):
    """The packed kernels of `model`'s `SparseConv2D` layers, by path, with their dense index.

    Muon reads C3's packed `(5, 5, 60)` kernel as the `150 x 16` kernel it stands for, inputs by
    outputs as it reads every other convolution. Read as a `25 x 60` matrix, sixty columns in 25
    dimensions, its update could not be orthogonal (docs/training-log.md, "C3 as its dense 150 x 16 matrix").

    Args:
        model: A Keras model.

    Returns:
        A dict from each kernel's path to its layer's `dense_index`.
    """
    sparse_layers = [layer for layer in model.layers if isinstance(layer, SparseConv2D)]
    return {layer.kernel.path: layer.dense_index for layer in sparse_layers}


def effective_steps_per_execution(steps_per_epoch, requested):
    """The largest divisor of `steps_per_epoch` that is at most `requested`.

    Keras runs whole executions of `steps_per_execution` steps, so with a count that does not
    divide the epoch, each epoch would take a few batches of the next one's data: the learning
    rate schedule would drift and a resumed run would see other batches than an uninterrupted one.

    Args:
        steps_per_epoch: Training steps per epoch.
        requested: The most steps per execution wanted.

    Returns:
        An integer in [1, requested].
    """
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def compile_lenet5(model, config, steps_per_epoch, jit_compile=False, steps_per_execution=None):
    """Compiles `model` with `config`'s optimizer and the loss and accuracy its variant needs.

    The paper variant trains on the MAP loss over its RBF distances and measures the nearest
    prototype; the modern variant uses cross-entropy over its softmax. The optimizer is built
    on the model's trainable variables.

    Args:
        model: A model from `build_lenet5`.
        config: A `TrainConfig`.
        steps_per_epoch: Training steps per epoch, for the learning-rate schedule.
        jit_compile: Whether to compile the training step with XLA.
        steps_per_execution: Steps per compiled call; defaults to the largest divisor of
            `steps_per_epoch` up to `config.steps_per_execution`.
    """
    if model_variant(model) == "paper":
        loss, accuracy = MAPLoss(j=config.map_j), NearestPrototypeAccuracy()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch, sparse_kernels(model)),
        loss=loss,
        metrics=[accuracy],
        steps_per_execution=steps_per_execution
        or effective_steps_per_execution(steps_per_epoch, config.steps_per_execution),
        jit_compile=jit_compile,
    )
    # The optimizer's variables (moments, weight average) are created here, eagerly. Left to
    # `fit`, they are created inside its first trace, each initializer behind a traced `cond`:
    # about 2 s more start-up on two cores (docs/performance.md). A resumed run loads into them.
    model.optimizer.build(model.trainable_variables)
