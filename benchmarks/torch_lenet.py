"""The PyTorch baseline: the stock LeNet-5 of `benchmarks.stock_lenet`, written in PyTorch.

Same layers (6-16-120-84-10, 5x5 kernels, 2x2 average pooling, tanh, softmax via
cross-entropy), the same input normalisation (pad to 32x32, pixels to [-0.1, 1.175]), Adam,
and the same in-memory MNIST: each batch is an index gather from one tensor, as
`lenet_tf.data` does. Needs the optional `bench` extra (`pip install -e '.[bench]'`).
"""

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


class TorchTrainer:
    """Trains and evaluates the PyTorch LeNet on in-memory MNIST, one batch per step.

    Args:
        images: uint8 `(N, 28, 28)` training pixels.
        labels: `(N,)` digits.
        batch_size: Images per step.
        learning_rate: Adam's learning rate.
        seed: Seed of the weights and the batch order.
    """

    def __init__(self, images, labels, batch_size, learning_rate=1e-3, seed=0):
        torch = _torch()
        torch.manual_seed(seed)
        self._torch = torch
        self.model = build_torch_lenet()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
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
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.images[index]), self.labels[index])
            loss.backward()
            self.optimizer.step()
            if callback is not None and step % every == 0:
                if callback(step):
                    break
                self.model.train()  # the callback's accuracy check left it in eval mode

    def accuracy(self, images, labels, batch_size=1024):
        """Fraction of `images` (uint8 `(N, 28, 28)`) classified as `labels`."""
        self.model.eval()
        inputs = self.normalise(images)
        with self._torch.inference_mode():
            predictions = [self.model(inputs[i : i + batch_size]).argmax(-1) for i in range(0, len(inputs), batch_size)]
        return float((self._torch.cat(predictions).numpy() == np.asarray(labels)).mean())
