"""Learning-rate schedules the recipes use that Keras does not compute the way they need."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up to `peak`, then a cosine decay to 0: the one-cycle shape.

    The same rates as `keras.optimizers.schedules.CosineDecay` with `warmup_target=peak`, but
    chosen with `ops.where` instead of a conditional. AdamW evaluates the schedule once per
    variable for its weight decay; on TensorFlow every `CosineDecay` call with a warm-up traces
    a `cond`, which made the first `fit` call of the `fast` recipe 1-2 s slower
    (`docs/performance.md`).

    Args:
        peak: The learning rate at the end of the warm-up.
        warmup_steps: Steps of the linear warm-up, from `peak * start_factor` to `peak`.
        decay_steps: Steps of the cosine decay after the warm-up; later steps stay at 0.
        start_factor: The first step's rate as a fraction of `peak`.

    Example:

    >>> schedule = WarmupCosineDecay(1e-2, warmup_steps=20, decay_steps=80, start_factor=0.04)
    >>> [round(float(schedule(step)), 6) for step in (0, 10, 20, 60, 100, 120)]
    [0.0004, 0.0052, 0.01, 0.005, 0.0, 0.0]
    """

    def __init__(self, peak, warmup_steps, decay_steps, start_factor=0.0):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.start_factor = start_factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.peak * self.start_factor
        warmup = start + (self.peak - start) * step / max(self.warmup_steps, 1)
        progress = ops.clip(step - self.warmup_steps, 0, self.decay_steps) / max(self.decay_steps, 1)
        decay = 0.5 * self.peak * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "start_factor": self.start_factor,
        }
