"""Optimizers the recipes use that Keras does not provide in the form they need."""

import re

import keras
import numpy as np
from keras import ops

from lenet_tf.layers.sparse_conv import pack_kernel, unpack_kernel


@keras.saving.register_keras_serializable(package="lenet_tf")
class KernelMuon(keras.optimizers.Muon):
    """Muon on every kernel, convolution kernels included, read as matrices.

    Keras's `Muon` orthogonalises the momentum of 2-D variables only and steps every other
    variable with AdamW, so a convolution network would train its convolutions with AdamW.
    Here a kernel of any rank is read as the matrix `(all but its last axis, its last axis)`,
    inputs by outputs: a `(5, 5, 6, 16)` convolution kernel is a 150 x 16 matrix. A packed
    `SparseConv2D` kernel named in `sparse_kernels` is read as the dense kernel it stands for,
    zeros where its connection table has none (C3's `(5, 5, 60)` kernel as 150 x 16, not
    25 x 60), and its update is taken back at the connected entries. The Nesterov momentum is
    orthogonalised with Muon's Newton-Schulz iteration (run on the matrix's small Gram matrix:
    Keras's result within float32 rounding, in fewer multiply-adds), scaled, and reshaped back.
    The scale is Keras's by default (AdamW's update size, `rms_rate * sqrt(max(fan_in,
    fan_out))`); with `muon_lr_ratio` it is Muon's as first published, `sqrt(max(1, fan_out /
    fan_in))` at `muon_lr_ratio` times the learning rate, the same spectral norm for every
    kernel of LeNet-5 (each has more inputs than outputs). Vectors (biases, the
    subsampling coefficients) and the layers named in `exclude_layers` get Keras's AdamW step,
    as in `Muon`.

    Args:
        learning_rate: A float or a `keras.optimizers.schedules.LearningRateSchedule`, for the
            Muon and the AdamW steps alike (`adam_lr_ratio` 1).
        sparse_kernels: A dict from the path of a packed sparse kernel (`"C3/kernel"`) to its
            layer's `SparseConv2D.dense_index` (as nested lists or an array). Defaults to none:
            every kernel read as its own matrix.
        muon_lr_ratio: None for Keras's update scale (`rms_rate`), or a float: Muon's original
            scale at this multiple of the learning rate, as `adam_lr_ratio` is AdamW's. Weight
            decay stays `learning_rate * weight_decay` either way.
        **kwargs: Every other argument of `keras.optimizers.Muon` (`weight_decay` of the
            kernels, `adam_weight_decay` of the vectors, `momentum`, `ns_steps`, `rms_rate`,
            `exclude_layers`, `use_ema`, ...).

    Raises:
        ValueError: On `build`, a path of `sparse_kernels` that names none of the variables, or
            whose index does not fit the kernel.

    Example: one step on a convolution kernel moves its 18 x 4 matrix by a near-orthogonal
    matrix, all four singular values close to one another (about 1 after dividing by Muon's
    scale `learning_rate * rms_rate * sqrt(18)`).

    >>> import numpy as np
    >>> kernel = keras.Variable(np.zeros((3, 3, 2, 4), "float32"))
    >>> gradient = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype("float32")
    >>> optimizer = KernelMuon(learning_rate=0.01, weight_decay=0.0)
    >>> optimizer.apply([gradient], [kernel])
    >>> step = np.asarray(kernel).reshape(18, 4) / (0.01 * 0.2 * 18**0.5)
    >>> bool(np.all(np.abs(np.linalg.svd(step, compute_uv=False) - 1) < 0.35))
    True
    """

    def __init__(self, learning_rate=0.001, *, sparse_kernels=None, muon_lr_ratio=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.muon_lr_ratio = muon_lr_ratio
        sparse_kernels = sparse_kernels or {}
        self.sparse_kernels = {path: np.asarray(index).tolist() for path, index in sparse_kernels.items()}
        self._dense_indices = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        paths = {variable.path: variable for variable in var_list}
        for path, index in self.sparse_kernels.items():
            if path not in paths:
                raise ValueError(
                    f"`sparse_kernels` names {path!r}, which is none of the variables: {sorted(paths)}"
                )
            dense_index = np.asarray(index, "int32")
            connections = paths[path].shape[-1]
            numbers = np.sort(dense_index[dense_index > 0])
            if dense_index.ndim != 2 or not np.array_equal(numbers, np.arange(1, connections + 1)):
                raise ValueError(
                    f"`sparse_kernels[{path!r}]`: a dense index of shape {dense_index.shape} does "
                    f"not fit a kernel of shape {tuple(paths[path].shape)}"
                )
            self._dense_indices[self._get_variable_index(paths[path])] = dense_index

    # The next two methods override private ones of Keras 3.15's `Muon` (keras is pinned to
    # 3.15.x), the other two public ones; tests/test_optimizers.py fails if a Keras release changes
    # what they mean.
    def _should_use_adamw(self, variable):
        if len(variable.shape) < 2:
            return True
        if self.exclude_embeddings and "embedding" in variable.path.lower():
            return True
        return any(re.search(keyword, variable.path) for keyword in self.exclude_layers or ())

    def _muon_update_step(self, gradient, variable, lr, m):
        # As `Muon._muon_update_step`, with the Newton-Schulz iteration and the update's
        # scaling (`lr_adjust`) on the kernel's matrix view.
        self.assign_add(m, ops.add(gradient, m * (self.momentum - 1)))
        direction = ops.add(gradient, self.momentum * m) if self.nesterov else m
        dense_index = self._dense_indices.get(self._get_variable_index(variable))
        if dense_index is not None:  # a packed sparse kernel: its dense kernel's matrix
            direction = unpack_kernel(direction, dense_index)
        matrix = ops.reshape(direction, (-1, direction.shape[-1]))
        update = self.lr_adjust(lr * self.zeropower_via_newtonschulz5(matrix, self.ns_steps))
        if dense_index is not None:
            update = pack_kernel(ops.reshape(update, direction.shape), dense_index)
        self.assign_sub(variable, ops.reshape(update, variable.shape))

    def lr_adjust(self, x):
        if self.muon_lr_ratio is None:
            return super().lr_adjust(x)
        fan_in, fan_out = x.shape
        return x * (self.muon_lr_ratio * max(1.0, fan_out / fan_in) ** 0.5)

    def zeropower_via_newtonschulz5(self, x, steps):
        # Keras's five quintic iterations `X <- aX + (bA + cA^2)X` with `A = XX^T`, run on the
        # Gram matrix of X's short side instead: every iterate is `Q X0` with Q a polynomial in
        # `G = X0 X0^T`, so `A = QGQ` and `Q <- (aI + bA + cA^2)Q` in short-by-short products,
        # and X0 is multiplied once at the end. The same result within float32 rounding, and
        # C5's 120 x 400 matrix takes 43 instead of 66 M multiply-adds a step.
        tall = x.shape[0] > x.shape[1]
        wide = ops.transpose(x) if tall else x
        wide = wide / (ops.norm(wide) + 1e-7)
        gram = ops.matmul(wide, ops.transpose(wide))
        polynomial, iterate_gram = ops.eye(gram.shape[0], dtype=gram.dtype), gram
        for step in range(steps):
            if step:
                iterate_gram = ops.matmul(ops.matmul(polynomial, gram), polynomial)
            square = ops.matmul(iterate_gram, iterate_gram)
            factor = self.muon_b * iterate_gram + self.muon_c * square
            polynomial = self.muon_a * polynomial + ops.matmul(factor, polynomial)
        wide = ops.matmul(polynomial, wide)
        return ops.transpose(wide) if tall else wide

    def get_config(self):
        config = super().get_config()
        config["sparse_kernels"] = self.sparse_kernels
        config["muon_lr_ratio"] = self.muon_lr_ratio
        return config
