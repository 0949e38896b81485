"""Stochastic diagonal Levenberg-Marquardt (SDLM), the optimizer LeNet-5 was trained with.

LeCun et al. (1998, Appendix C; Becker & LeCun 1989) update every trainable parameter `k`
after each sample with its own step

    w_k <- w_k - eta / (mu + h_kk) * dE/dw_k,

where `h_kk` is the diagonal of the Gauss-Newton approximation of the Hessian, estimated by
back-propagating second derivatives on 500 training samples before each pass and held fixed
for the pass, `mu = 0.02` keeps the step bounded where the curvature is small, and `eta`
steps down by pass (0.0005 for passes 1-2 ... 0.00001 from pass 13 on).

This module has the three pieces `model.fit` needs:

- `GaussNewtonDiagonal`: the `h_kk` of a LeNet-5 (any chain of its layer types), computed
  with the Becker-LeCun recursion, vectorised over samples.
- `SDLM`: a Keras optimizer whose per-parameter step is `learning_rate / (mu + h_kk)`, with
  `h_kk` in non-trainable optimizer variables.
- `HessianRefresh`: a callback that re-estimates `h_kk` before every epoch (pass).

With `paper_eta_schedule` for the learning rate, a run at batch 1 is:

    model = build_lenet5("paper")
    steps = len(x_train)  # batch 1: one step per sample
    model.compile(
        optimizer=SDLM(paper_eta_schedule(steps, batch_size=1)),
        loss=MAPLoss(j=1.0),
        steps_per_execution=500,
        jit_compile=True,
    )
    model.fit(train_data, epochs=20, steps_per_epoch=steps,
              callbacks=[HessianRefresh(x_train)])

With this project's initialisation the paper's `eta` (0.0005 in the first passes) diverges
within the first hundred samples; `first_eta=5e-5` with `HessianRefresh(every_steps=1000)`
trains. See `docs/sdlm.md` for the derivation of each layer's rule, those measurements, and
the batch-size scaling of `eta`.
"""

import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from lenet_tf.layers import CONV2D_REWRITES, EuclideanRBF, SparseConv2D, TrainableSubsampling
from lenet_tf.losses import MAPLoss

PAPER_MU = 0.02
PAPER_SAMPLES = 500
# The paper's global learning rate per pass: (last pass it applies to, eta); then
# PAPER_FINAL_ETA from pass 13 on.
PAPER_ETA = ((2, 5e-4), (5, 2e-4), (8, 1e-4), (12, 5e-5))
PAPER_FINAL_ETA = 1e-5

_LOSS_ERROR = (
    "SDLM has second derivatives for `MAPLoss` and `MeanSquaredError` only. Received: {loss!r}"
)
# Layers without parameters that only reshape: second derivatives pass through unchanged.
_RESHAPING_LAYERS = (keras.layers.Flatten, keras.layers.Reshape)


def paper_eta(pass_number):
    """The paper's global learning rate `eta` for one sample's update in a pass.

    Args:
        pass_number: The pass over the training set, counted from 1.

    Returns:
        0.0005 for passes 1-2, 0.0002 for 3-5, 0.0001 for 6-8, 0.00005 for 9-12 and
        0.00001 from 13 on.

    Raises:
        ValueError: If `pass_number` is less than 1.

    Example:

    >>> paper_eta(1), paper_eta(3), paper_eta(20)
    (0.0005, 0.0002, 1e-05)
    """
    if pass_number < 1:
        raise ValueError(f"`pass_number` counts from 1. Received: pass_number={pass_number}")
    for last_pass, eta in PAPER_ETA:
        if pass_number <= last_pass:
            return eta
    return PAPER_FINAL_ETA


def paper_eta_schedule(steps_per_pass, batch_size=1, first_eta=PAPER_ETA[0][1]):
    """The paper's per-pass `eta` as a Keras schedule over optimizer steps.

    The paper's values, `paper_eta(pass)`, are `first_eta` times 1, 0.4, 0.2, 0.1 and 0.02;
    another `first_eta` keeps those ratios (with this project's initialisation the paper's
    0.0005 diverges in the first pass, see `docs/sdlm.md`).

    The paper updates after every sample. With a batch of `batch_size` samples and the mean
    loss, one step of `eta * batch_size` moves the weights as far as the paper's
    `batch_size` single-sample steps would (to first order: it sums their gradients), so a
    pass covers the same distance whatever the batch size; this schedule returns the
    per-sample `eta` of the pass times `batch_size`.

    Args:
        steps_per_pass: Optimizer steps in one pass over the training set.
        batch_size: Samples per step; 1 is the paper's setting.
        first_eta: Per-sample `eta` of passes 1-2. The paper's is 0.0005.

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay`: step `s` (the optimizer's
        `iterations` before the update, counted from 0) is in pass `s // steps_per_pass + 1`.

    Raises:
        ValueError: If `steps_per_pass` or `batch_size` is less than 1, or `first_eta` is
            not positive.

    Example:

    >>> schedule = paper_eta_schedule(steps_per_pass=10)
    >>> [round(float(schedule(step)), 6) for step in (0, 19, 20, 49, 50, 120)]
    [0.0005, 0.0005, 0.0002, 0.0002, 0.0001, 1e-05]
    """
    if steps_per_pass < 1 or batch_size < 1 or not first_eta > 0:
        raise ValueError(
            "`steps_per_pass` and `batch_size` must be >= 1 and `first_eta` positive. Received: "
            f"steps_per_pass={steps_per_pass}, batch_size={batch_size}, first_eta={first_eta}"
        )
    scale = first_eta / PAPER_ETA[0][1] * batch_size
    # PiecewiseConstantDecay takes values[i] while step <= boundaries[i]; the last step of
    # pass p is p * steps_per_pass - 1.
    boundaries = [last_pass * steps_per_pass - 1 for last_pass, _ in PAPER_ETA]
    values = [eta * scale for _, eta in PAPER_ETA] + [PAPER_FINAL_ETA * scale]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _layer_weights(layer):
    """The weights of a layer's weighted sums, in the order `_pre_activation` takes them."""
    if isinstance(layer, TrainableSubsampling):
        return [layer.coefficient, layer.bias]
    if isinstance(layer, SparseConv2D):
        return [layer.kernel, layer.bias]
    return [layer.kernel] + ([layer.bias] if layer.use_bias else [])


def _is_weighted(layer):
    """Whether `layer` is a weighted sum + bias + elementwise activation we have a rule for."""
    if isinstance(layer, (TrainableSubsampling, SparseConv2D, keras.layers.Dense)):
        return True
    if type(layer) in (keras.layers.Conv2D, *CONV2D_REWRITES):
        return layer.groups == 1 and layer.data_format == "channels_last"
    return False


def _block_sums(layer, inputs):
    """The input each subsampling coefficient multiplies: the sum of each block."""
    k = layer.pool_size
    return ops.average_pool(inputs, pool_size=k, strides=k, padding="valid") * float(k * k)


def _pre_activation(layer, inputs, weights):
    """The input sums `a` of `layer`'s units, with `weights` in place of `_layer_weights`.

    `a` is linear in `inputs` and linear in each weight, which is what lets one call on
    squared inputs with squared weights back-propagate second derivatives (see
    `GaussNewtonDiagonal`). For a subsampling layer, `inputs` are the block sums.
    """
    if isinstance(layer, TrainableSubsampling):
        coefficient, bias = weights
        return inputs * coefficient + bias
    kernel, *bias = weights
    if isinstance(layer, SparseConv2D):
        # The layer scatters its packed weights into a dense masked kernel; running its own
        # code on the substituted weights keeps the packing in one place.
        with keras.StatelessScope(state_mapping=[(layer.kernel, kernel)]):
            dense_kernel = layer.dense_kernel()
        outputs = layer.convolution_op(inputs, dense_kernel)
    elif isinstance(layer, keras.layers.Dense):
        outputs = ops.matmul(inputs, kernel)
    else:
        outputs = layer.convolution_op(inputs, kernel)
    return outputs + bias[0] if bias else outputs


def _output_derivatives(loss, outputs):
    """Derivatives of each sample's loss `E` with respect to the model outputs `y`.

    Returns:
        `(d2E/dy_i2, sum_i dE/dy_i)` per sample; the sum is None where it depends on the
        labels (it is needed only behind an RBF layer).

    Raises:
        ValueError: If there is no rule for `loss`.
    """
    if isinstance(loss, MAPLoss):
        # E = y_D + log(e^-j + sum_k e^-y_k), p = softmax of (-j, -y) without the rubbish
        # class: dE/dy_i = [i == D] - p_i and d2E/dy_i2 = p_i (1 - p_i), both exact. The
        # label drops out of the sum of the first derivatives, 1 - sum_i p_i.
        rubbish = ops.full_like(outputs[:, :1], -loss.j)
        p = ops.softmax(ops.concatenate([rubbish, -outputs], axis=-1), axis=-1)[:, 1:]
        return p * (1.0 - p), 1.0 - ops.sum(p, axis=-1, keepdims=True)
    if isinstance(loss, keras.losses.MeanSquaredError):
        # E = mean_i (y_i - t_i)^2.
        return ops.full_like(outputs, 2.0 / outputs.shape[-1]), None
    raise ValueError(_LOSS_ERROR.format(loss=loss))


def _layer_chain(model):
    """The layers of `model` after its input, checked to form a chain with a rule each.

    Raises:
        ValueError: If the model branches or has a layer without a second-derivative rule.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    weighted = [i for i, layer in enumerate(layers) if _is_weighted(layer)]
    if not weighted:
        raise ValueError(f"Model {model.name!r} has no layer SDLM can handle.")
    for i, layer in enumerate(layers):
        if i > 0 and layer.input is not layers[i - 1].output:
            raise ValueError(
                f"SDLM needs a chain of layers; {layer.name!r} does not follow "
                f"{layers[i - 1].name!r}."
            )
        supported = _is_weighted(layer) or isinstance(layer, (EuclideanRBF,) + _RESHAPING_LAYERS)
        # Parameter-free layers in front of the first weighted one (input preprocessing)
        # need no rule: nothing upstream of them is trained.
        if i > weighted[0] and not supported:
            raise ValueError(
                "SDLM has no second-derivative rule for layer "
                f"{layer.name!r} ({type(layer).__name__})."
            )
    return layers, weighted[0]


def _rbf_backward(layer, inputs, output_curvature, gradient_sum):
    """Second derivatives through the Euclidean RBF units.

    `y_i = sum_j r_ij^2` with the residuals `r_ij = x_j - w_ij`, which are linear in `x`
    with weight 1: nothing is dropped there. Each residual's square is part of the
    criterion (with `j` -> infinity, E = y_D is the paper's squared error, eq. 8), so its
    second derivative is kept, as the paper keeps the 2 of a squared-error output:
    `d2E/dr_ij2 = (2 r_ij)^2 d2E/dy_i2 + 2 dE/dy_i`; then `d2E/dx_j2 = sum_i d2E/dr_ij2
    = sum_i (2 r_ij)^2 d2E/dy_i2 + 2 sum_i dE/dy_i`. The second term is what keeps the
    curvature from vanishing where every `p_i` is near 0 or 1 (at initialisation `h_kk`
    would be about 1e-35). Trainable centres (not in the paper) get the first term only,
    `sum over samples of (2 r_ij)^2 d2E/dy_i2`, which needs no labels and is never negative.

    Args:
        layer: The `EuclideanRBF` layer.
        inputs: Its inputs `x`, `(batch, features)`.
        output_curvature: `d2E/dy_i2`, `(batch, units)`.
        gradient_sum: `sum_i dE/dy_i`, `(batch, 1)`.

    Returns:
        `(d2E/dx2 per sample, [d2E/dw2 of the centres, summed over the batch])`.

    Raises:
        ValueError: If `gradient_sum` is None (a loss without a rule behind RBF units).
    """
    if gradient_sum is None:
        raise ValueError("SDLM handles an EuclideanRBF output with `MAPLoss` only.")
    squared_jacobian = 4.0 * ops.square(inputs[:, None, :] - layer.centers[None])
    input_curvature = ops.einsum("bi,bij->bj", output_curvature, squared_jacobian)
    center_curvature = ops.einsum("bi,bij->ij", output_curvature, squared_jacobian)
    return input_curvature + 2.0 * gradient_sum, [center_curvature]


def _weighted_backward(layer, inputs, sums, unit_curvature, need_inputs):
    """Second derivatives through a weighted layer, from those of its units' input sums.

    Every input sum `a` is linear in the layer's inputs `u` and in each weight, so the
    vector-Jacobian products of `a(u^2; w^2)` with `d2E/da2` are exactly the recursion:
    w.r.t. `u^2` it is `sum over units fed of w^2 * d2E/da2` (the transposed map with squared
    weights: a transposed convolution with the squared kernel for a convolution), w.r.t.
    `w^2` it is `sum over connections of u^2 * d2E/da2`, shared weights summed over all
    their connections and the batch, and `1 * d2E/da2` for the biases.

    Args:
        layer: A layer that `_is_weighted`.
        inputs: The layer's inputs.
        sums: What its weights multiply: `inputs`, or the block sums of a subsampling layer.
        unit_curvature: `d2E/da2` of the layer's units, per sample.
        need_inputs: Whether to return `d2E/dx2` of the inputs (not for the first layer).

    Returns:
        `(d2E/dx2 of the inputs per sample or None, [d2E/dw2 of each weight, summed])`.
    """
    squared_sums = ops.square(sums)
    squared_weights = [ops.square(weight) for weight in _layer_weights(layer)]
    sources = ([squared_sums] if need_inputs else []) + squared_weights
    with tf.GradientTape() as tape:
        tape.watch(sources)
        squared_pre_activation = _pre_activation(layer, squared_sums, squared_weights)
    gradients = tape.gradient(squared_pre_activation, sources, output_gradients=unit_curvature)
    if not need_inputs:
        return None, gradients
    input_curvature, weight_curvature = gradients[0], gradients[1:]
    if isinstance(layer, TrainableSubsampling):
        # Each input enters its block sum with the fixed weight 1, so it gets its block's
        # second derivative unchanged: the transposed block sum.
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            block_sums = _block_sums(layer, inputs)
        input_curvature = tape.gradient(block_sums, inputs, output_gradients=input_curvature)
    return input_curvature, weight_curvature


def _curvature_weights(layer):
    """The weights of `layer` that get a second derivative, in the order its rule returns."""
    if isinstance(layer, EuclideanRBF):
        return [layer.centers]
    return _layer_weights(layer) if _is_weighted(layer) else []


class GaussNewtonDiagonal:
    """The diagonal Gauss-Newton Hessian `h_kk` of a LeNet-5, as SDLM estimates it.

    Becker & LeCun's (1989) back-propagation of second derivatives, with the off-diagonal
    terms and the terms in the second derivative of the activation dropped, so that every
    `h_kk` is non-negative. For a unit with input sum `a` and output `x = f(a)`:
    `d2E/da2 = f'(a)^2 * sum_k w_k^2 * d2E/da_k2` over the units `k` it feeds, and for a
    weight `d2E/dw2 = sum over its connections of x_in^2 * d2E/da2` (biases: `x_in = 1`).
    The recursion starts from the loss: for `MAPLoss`, `d2E/dy_i2 = p_i (1 - p_i)` at the
    RBF units, then `d2E/dx_j2 = sum_i (2 (x_j - w_ij))^2 p_i (1 - p_i) + 2 (1 - sum_i p_i)`
    at their inputs (the last term is the RBF's own squared distance; see `_rbf_backward`);
    for `MeanSquaredError`, `2 / n`. Neither depends on the labels, so the estimate takes
    images only. `docs/sdlm.md` derives each layer's rule.

    The model must be a chain of: parameter-free layers (preprocessing), then `Conv2D`,
    `Dense`, `SparseConv2D` and `TrainableSubsampling` layers with elementwise activations,
    `Flatten`/`Reshape`, and an optional `EuclideanRBF` output.

    Args:
        model: A model from `build_lenet5("paper")`, or another chain of those layers.
        loss: The training loss: a `MAPLoss` or `keras.losses.MeanSquaredError`.
        batch_size: Samples per compiled call; memory grows with it (about 70 kB a sample
            for LeNet-5).
        jit_compile: Compile the per-batch computation with XLA.

    Raises:
        ValueError: If the model or the loss has no rule, or a trainable variable of the
            model would get no second derivative.

    Example:

        estimate = GaussNewtonDiagonal(model, MAPLoss(j=1.0))
        hessians = estimate(x_train[:500])  # like model.trainable_variables
    """

    def __init__(self, model, loss, batch_size=PAPER_SAMPLES, jit_compile=False):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
        if not isinstance(loss, (MAPLoss, keras.losses.MeanSquaredError)):
            raise ValueError(_LOSS_ERROR.format(loss=loss))
        self.model = model
        self.loss = loss
        self.batch_size = batch_size
        self._layers, self._first_weighted = _layer_chain(model)
        covered = {id(w) for layer in self._layers for w in _curvature_weights(layer)}
        missing = [v.path for v in model.trainable_variables if id(v) not in covered]
        if missing:
            raise ValueError(f"SDLM has no second-derivative rule for the variables {missing}.")
        self._batch_sums = tf.function(self._sums, reduce_retracing=True, jit_compile=jit_compile)

    def __call__(self, images):
        """Estimates `h_kk` on `images`, averaged over them.

        Args:
            images: Model inputs, `(samples, ...)` (LeNet-5: raw pixels `(samples, 28, 28)`).

        Returns:
            A list of float32 tensors, one per variable of `model.trainable_variables` and of
            the same shape: the average over the samples of `d2E/dw2`.

        Raises:
            ValueError: If `images` is empty.
        """
        images = np.asarray(images, dtype="float32")
        if len(images) == 0:
            raise ValueError("`images` is empty: h_kk needs at least one sample.")
        totals = None
        for start in range(0, len(images), self.batch_size):
            sums = self._batch_sums(tf.constant(images[start : start + self.batch_size]))
            totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
        return [total / float(len(images)) for total in totals]

    def _forward(self, images):
        """Runs the model; records `(layer, inputs, sums, f'(a)^2)` from the first weighted
        layer on (`sums` and `f'(a)^2` are None for a layer without weighted sums)."""
        records, x = [], images
        for position, layer in enumerate(self._layers):
            if not _is_weighted(layer):
                if position > self._first_weighted:
                    records.append((layer, x, None, None))
                x = layer(x)
                continue
            sums = _block_sums(layer, x) if isinstance(layer, TrainableSubsampling) else x
            pre_activation = _pre_activation(layer, sums, _layer_weights(layer))
            with tf.GradientTape() as tape:
                tape.watch(pre_activation)
                outputs = layer.activation(pre_activation)
            # An elementwise activation's gradient is its derivative at each unit.
            slope = tape.gradient(outputs, pre_activation)
            records.append((layer, x, sums, ops.square(slope)))
            x = outputs
        return records, x

    def _sums(self, images):
        """`d2E/dw2` summed over a batch, in `model.trainable_variables` order."""
        records, outputs = self._forward(images)
        curvature, gradient_sum = _output_derivatives(self.loss, outputs)
        hessians = {}
        for position in reversed(range(len(records))):
            layer, inputs, sums, slope_squared = records[position]
            if isinstance(layer, EuclideanRBF):
                curvature, weight_curvature = _rbf_backward(layer, inputs, curvature, gradient_sum)
            elif slope_squared is not None:
                curvature, weight_curvature = _weighted_backward(
                    layer, inputs, sums, slope_squared * curvature, need_inputs=position > 0
                )
            else:  # Flatten, Reshape
                curvature, weight_curvature = ops.reshape(curvature, ops.shape(inputs)), []
            hessians.update(zip(map(id, _curvature_weights(layer)), weight_curvature))
        return [hessians[id(variable)] for variable in self.model.trainable_variables]


@keras.saving.register_keras_serializable(package="lenet_tf")
class SDLM(keras.optimizers.Optimizer):
    """Stochastic diagonal Levenberg-Marquardt (LeCun et al., 1998, Appendix C).

    The update of parameter `k` is `w_k -= learning_rate / (mu + h_kk) * g_k`: a plain
    gradient step whose size each parameter divides by its curvature, so directions of
    large curvature take small steps and flat ones large steps, never larger than
    `learning_rate / mu`. `h_kk` lives in non-trainable optimizer variables (`hessians`),
    zero until set; `HessianRefresh` sets them from `GaussNewtonDiagonal` before each epoch,
    as the paper does before each pass. They are saved with the optimizer's other variables.

    The paper's `learning_rate` is `paper_eta_schedule(steps_per_pass, batch_size)`: the
    per-sample `eta` of each pass, times the batch size (see that function).

    Args:
        learning_rate: A float or a `keras.optimizers.schedules.LearningRateSchedule`: the
            paper's global `eta` (times the batch size). Defaults to the first passes' 0.0005.
        mu: The paper's `mu`, which bounds the step where `h_kk` is small. Defaults to 0.02.
        name: Optimizer name.
        **kwargs: Base optimizer keyword arguments (`clipnorm`, `use_ema`, ...). The paper
            has none of them: leave EMA, weight decay and clipping off to reproduce it.

    Raises:
        ValueError: If `mu` is not positive.

    Example:

    >>> import numpy as np
    >>> weight = keras.Variable(np.ones(2, "float32"))
    >>> optimizer = SDLM(learning_rate=0.1, mu=1.0)
    >>> optimizer.build([weight])
    >>> optimizer.assign_hessians([weight], [np.array([0.0, 3.0])])
    >>> optimizer.apply([np.ones(2, "float32")], [weight])
    >>> np.round(1.0 - weight.numpy(), 3)  # steps 0.1 / (1 + h)
    array([0.1  , 0.025], dtype=float32)
    """

    def __init__(self, learning_rate=PAPER_ETA[0][1], mu=PAPER_MU, name="sdlm", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not mu > 0:
            raise ValueError(f"`mu` must be positive. Received: mu={mu}")
        self.mu = mu

    def build(self, variables):
        """Creates one `h_kk` variable per trainable variable, zero until assigned."""
        if self.built:
            return
        super().build(variables)
        self.hessians = self.add_optimizer_variables(variables, "hessian")

    def assign_hessians(self, variables, values):
        """Sets `h_kk` of `variables` (model variables the optimizer was built on).

        Args:
            variables: Trainable variables of the model.
            values: For each variable, its `h_kk`: an array of its shape.

        Raises:
            ValueError: If the optimizer is not built, or a shape does not match.
        """
        if not self.built:
            raise ValueError("Build the optimizer (`optimizer.build(variables)`) before assigning.")
        for variable, value in zip(variables, values, strict=True):
            hessian = self.hessians[self._get_variable_index(variable)]
            shape = tuple(ops.shape(value))
            if shape != tuple(hessian.shape):
                raise ValueError(
                    f"h_kk of {variable.path} has shape {shape}, expected {tuple(hessian.shape)}."
                )
            hessian.assign(value)

    def update_step(self, gradient, variable, learning_rate):
        """`variable -= learning_rate / (mu + h_kk) * gradient`."""
        hessian = self.hessians[self._get_variable_index(variable)]
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = learning_rate / (self.mu + hessian)
        self.assign_sub(variable, ops.multiply(ops.cast(gradient, variable.dtype), step))

    def get_config(self):
        config = super().get_config()
        config.update({"mu": self.mu})
        return config


def sample_indices(count, samples, seed, epoch, step=0):
    """The training samples `h_kk` is estimated on before a step of an epoch.

    A function of `(seed, epoch, step)` only, so a run resumed at an epoch estimates on the
    same samples as an uninterrupted one.

    Args:
        count: Training samples to choose from.
        samples: How many to choose (at most `count`).
        seed: Seed of the choice.
        epoch: The epoch, counted from 0.
        step: The step in the epoch before which `h_kk` is estimated.

    Returns:
        A sorted int64 array of `min(samples, count)` distinct indices.

    Example:

    >>> sample_indices(10, 3, seed=0, epoch=0).tolist() == sample_indices(10, 3, 0, 0).tolist()
    True
    """
    rng = np.random.default_rng([seed, epoch, step])
    return np.sort(rng.choice(count, size=min(samples, count), replace=False))


class HessianRefresh(keras.callbacks.Callback):
    """Re-estimates SDLM's `h_kk` before every epoch, as the paper does before every pass.

    Before epoch `e` (and, with `every_steps`, before every `every_steps`-th step of it),
    picks `samples` training images (a function of `(seed, e, step)`), computes their
    average Gauss-Newton diagonal with `GaussNewtonDiagonal` and the compiled loss of the
    model, and assigns it to the model's `SDLM` optimizer. The time each estimate took is
    appended to `seconds`.

    Args:
        images: Training images to draw from (LeNet-5: raw pixels `(N, 28, 28)`). The
            estimate needs no labels.
        samples: Images per estimate. The paper uses 500.
        every_steps: Also re-estimate every this many steps within an epoch; None (the
            paper) only before each epoch. Keras calls batch hooks once per execution, so
            make it a multiple of `steps_per_execution`.
        seed: Seed of the choice of images.
        loss: The loss whose curvature to use. Defaults to the model's compiled loss.
        batch_size: Images per compiled call of the estimate.

    Raises:
        ValueError: If `samples` or `every_steps` is less than 1.
        TypeError: At the first epoch, if the model's optimizer is not an `SDLM`.
    """

    def __init__(
        self, images, samples=PAPER_SAMPLES, every_steps=None, seed=0, loss=None,
        batch_size=PAPER_SAMPLES,
    ):  # fmt: skip
        super().__init__()
        if samples < 1 or (every_steps is not None and every_steps < 1):
            raise ValueError(
                f"`samples` and `every_steps` must be >= 1. Received: samples={samples}, "
                f"every_steps={every_steps}"
            )
        self.images = images
        self.samples = samples
        self.every_steps = every_steps
        self.seed = seed
        self.loss = loss
        self.batch_size = batch_size
        self.seconds = []
        self._estimate = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.refresh(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.every_steps and batch > 0 and batch % self.every_steps == 0:
            self.refresh(self._epoch, batch)

    def refresh(self, epoch, step=0):
        """Estimates `h_kk` and assigns it to the model's optimizer.

        Args:
            epoch: The current epoch, counted from 0 (chooses the samples).
            step: The step in the epoch (chooses the samples).

        Raises:
            TypeError: If the model's optimizer is not an `SDLM`.
        """
        optimizer = self.model.optimizer
        if not isinstance(optimizer, SDLM):
            raise TypeError(f"HessianRefresh needs an SDLM optimizer. The model has {optimizer!r}.")
        start = time.perf_counter()
        if self._estimate is None or self._estimate.model is not self.model:
            loss = self.loss if self.loss is not None else self.model.loss
            self._estimate = GaussNewtonDiagonal(self.model, loss, batch_size=self.batch_size)
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        index = sample_indices(len(self.images), self.samples, self.seed, epoch, step)
        hessians = self._estimate(np.asarray(self.images)[index])
        optimizer.assign_hessians(self.model.trainable_variables, hessians)
        self.seconds.append(time.perf_counter() - start)
