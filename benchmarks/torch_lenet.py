"""The PyTorch baseline: the stock LeNet-5 of `benchmarks.stock_lenet`, written in PyTorch.

Same layers (6-16-120-84-10, 5x5 kernels, 2x2 average pooling, tanh, softmax via
cross-entropy), the same input normalisation (pad to 32x32, pixels to [-0.1, 1.175]),
and the same in-memory MNIST: each batch is an index gather from one tensor, as
`lenet_tf.data` does; trained with the recipe of `lenet-tf train --recipe fast`. Needs the
optional `bench` extra (`pip install -e '.[bench]'`).
"""

import math

import keras
import numpy as np

from lenet_tf.layers.preprocessing import MNISTPreprocessing


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def available():
    """Whether PyTorch is installed."""
    return _torch() is not None


def build_torch_lenet():
    """Returns the stock LeNet-5 as a `torch.nn.Sequential` on (batch, 1, 32, 32) input."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    )  # fmt: skip


def store_kernels_as_matrices(model):
    """Stores every convolution kernel of `model` as the `(filters, inputs)` matrix it is.

    `torch.optim.Muon` steps 2-D parameters only; `lenet_tf`'s `KernelMuon` reads a convolution
    kernel as that matrix. A parametrisation keeps the layers `nn.Conv2d`, their parameter a
    matrix viewed as the 4-D kernel in each call.
    """
    torch = _torch()
    from torch.nn.utils import parametrize

    class KernelFromMatrix(torch.nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = shape

        def forward(self, matrix):
            return matrix.view(self.shape)

        def right_inverse(self, kernel):
            return kernel.reshape(kernel.shape[0], -1)

    for layer in model:
        if isinstance(layer, torch.nn.Conv2d):
            parametrize.register_parametrization(layer, "weight", KernelFromMatrix(layer.weight.shape))
    return model


def make_torch_optimizers(model, optimizer, learning_rate, weight_decay):
    """`lenet_tf`'s optimizer `optimizer` (`"adamw"` or `"muon"`) in PyTorch's own classes.

    For `"muon"`: `torch.optim.Muon` on the matrices (with Muon's original update scale at
    `MUON_LR_RATIO` times the learning rate and the same decay per step, as the recipes set
    `KernelMuon`) and `torch.optim.AdamW` on the vectors, as `KernelMuon` splits them; call
    `store_kernels_as_matrices` on the model first.
    """
    from lenet_tf.training.recipes import MUON_LR_RATIO

    torch = _torch()
    parameters = list(model.parameters())
    if optimizer == "adamw":
        return [torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)]
    if optimizer != "muon":
        raise ValueError(f"`optimizer` must be \"adamw\" or \"muon\". Received: optimizer={optimizer!r}")
    matrices = [p for p in parameters if p.ndim == 2]
    vectors = [p for p in parameters if p.ndim < 2]
    # torch decays by its group's rate, Keras's Muon by the learning rate itself: same decay per step.
    muon_rate, muon_decay = learning_rate * MUON_LR_RATIO, weight_decay / MUON_LR_RATIO
    optimizers = [torch.optim.Muon(matrices, lr=muon_rate, weight_decay=muon_decay, adjust_lr_fn="original")]
    if vectors:
        optimizers.append(torch.optim.AdamW(vectors, lr=learning_rate, weight_decay=weight_decay))
    return optimizers


def onecycle_factor(step, total_steps):
    """`lenet_tf`'s one-cycle schedule as a multiple of the peak, as `WarmupCosineDecay` computes it.

    A linear warm-up from `WARMUP_START_FACTOR` of the peak over the first `WARMUP_FRACTION` of
    the steps, then a cosine decay to 0 (`lenet_tf.training.recipes.learning_rate_schedule`).
    """
    from lenet_tf.training.recipes import WARMUP_FRACTION, WARMUP_START_FACTOR

    warmup_steps = round(WARMUP_FRACTION * total_steps)
    if step < warmup_steps:
        return WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / warmup_steps
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


class TorchTrainer:
    """Trains and evaluates the PyTorch LeNet on in-memory MNIST, one batch per step.

    The recipe is `lenet_tf`'s `fast` one in PyTorch's own tools: `torch.optim.Muon` for the
    kernels and `AdamW` for the vectors (or `AdamW` alone), the one-cycle schedule through
    `LambdaLR`, and an exponential moving average of the weights
    (`torch.optim.swa_utils.AveragedModel`), which is what `accuracy` measures.

    Args:
        images: uint8 `(N, 28, 28)` training pixels.
        labels: `(N,)` digits.
        batch_size: Images per step.
        total_steps: Steps the schedule spans.
        learning_rate: The schedule's peak.
        weight_decay: Decoupled weight decay.
        ema_momentum: Momentum of the weight average (`lenet_tf.training.recipes.ema_momentum`).
        seed: Seed of the weights and the batch order.
        optimizer: `"muon"` or `"adamw"` (`make_torch_optimizers`).
    """

    def __init__(self, images, labels, batch_size, total_steps, learning_rate, weight_decay, ema_momentum, seed=0,
                 optimizer="muon"):  # fmt: skip
        torch = _torch()
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        torch.manual_seed(seed)
        self._torch = torch
        self.model = build_torch_lenet()
        if optimizer == "muon":
            store_kernels_as_matrices(self.model)
        self.average = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_momentum))
        self.optimizers = make_torch_optimizers(self.model, optimizer, learning_rate, weight_decay)
        self.schedules = [
            torch.optim.lr_scheduler.LambdaLR(each, lambda step: onecycle_factor(step, total_steps))
            for each in self.optimizers
        ]
        self.loss = torch.nn.CrossEntropyLoss()
        self.images = self.normalise(images)
        self.labels = torch.as_tensor(np.asarray(labels, np.int64))
        self.batch_size = batch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._order, self._position = None, 0

    def normalise(self, images):
        """uint8 `(N, 28, 28)` pixels as the float `(N, 1, 32, 32)` tensor the network reads."""
        # The Keras layer itself, so that both stacks see exactly the same input.
        pixels = np.asarray(images, np.float32)
        normalised = np.concatenate([
            keras.ops.convert_to_numpy(MNISTPreprocessing()(pixels[i : i + 8192]))
            for i in range(0, len(pixels), 8192)
        ])  # fmt: skip
        return self._torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))

    def _next_index(self):
        if self._order is None or self._position + self.batch_size > len(self._order):
            self._order = self._torch.randperm(len(self.labels), generator=self._generator)
            self._position = 0
        index = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return index

    def train(self, steps, every=None, callback=None):
        """Runs `steps` training steps; `callback(steps_done)` after every `every` stops on True."""
        self.model.train()
        for step in range(1, steps + 1):
            index = self._next_index()
            self.model.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.images[index]), self.labels[index])
            loss.backward()
            for optimizer, schedule in zip(self.optimizers, self.schedules):
                optimizer.step()
                schedule.step()
            self.average.update_parameters(self.model)
            if callback is not None and step % every == 0:
                if callback(step):
                    break
                self.model.train()  # the callback's accuracy check left it in eval mode

    def accuracy(self, images, labels, batch_size=1024):
        """Fraction of `images` (uint8 `(N, 28, 28)`) the weight average classifies as `labels`."""
        self.average.eval()
        inputs = self.normalise(images)
        with self._torch.inference_mode():
            predictions = [self.average(inputs[i : i + batch_size]).argmax(-1) for i in range(0, len(inputs), batch_size)]
        return float((self._torch.cat(predictions).numpy() == np.asarray(labels)).mean())
