"""Plots of a training run, drawn after the paper's own figures.

`write_report(run_dir)` (behind `lenet-tf report RUN_DIR`) reads RUN_DIR/model.keras and
RUN_DIR/training_log.csv (as `lenet_tf.training.train` writes them), classifies the 10,000
MNIST test images and writes PNG files into RUN_DIR/report/ (or `--out`):

- `training_curves.png`: loss and error rate per epoch, training and test.
- `confusion_matrix.png`: true against predicted digit on the test set.
- `misclassified.png`: every misclassified test digit, `true->predicted` under each, as the
  paper's figure of LeNet-5's 82 errors.
- `feature_maps.png`: the input, C1 and C3 maps and the output for the first "3" of the test set
  that the model reads correctly, as the paper's figure of LeNet-5 reading a 3.
- `prototypes.png`: the 10 RBF centres as 7x12 bitmaps (the paper's Figure 3).
- `c3_connections.png`: which S2 maps each C3 map reads (the paper's Table 1).
- `comparison.png`, with `compare`: the test error after each pass of this run and others.

Each file is written atomically. Drawing uses matplotlib's Agg canvas (no display needed).
"""

import csv
import pathlib

import numpy as np

from lenet_tf.errors import RunFolderError

# Most misclassified digits drawn; a well-trained model has about 100, a barely trained one
# several hundred, and beyond this the digits become too small to read.
MAX_MISCLASSIFIED = 400
# The digit the paper's figure shows LeNet-5 reading.
FEATURE_MAP_DIGIT = 3
DPI = 120
REQUIRED_LOG_COLUMNS = ("epoch", "loss", "accuracy")
LOG_COLUMNS = (*REQUIRED_LOG_COLUMNS, "val_loss", "val_accuracy")
INK = "gray_r"  # dark ink on white paper, as the paper prints digits
MNIST_SIDE = 28
GAP = 4  # pixels between digits of the misclassified mosaic
LABEL_BAND = 11  # pixels above each digit for its true->predicted label


def _figure(width, height):
    """A matplotlib `Figure` drawn by the Agg canvas, outside pyplot's global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _hide_axes(axis):
    axis.set_xticks([])
    axis.set_yticks([])


def read_training_log(path):
    """Reads the per-epoch `training_log.csv` of a run.

    Args:
        path: The CSV file `lenet_tf.training.train` writes (columns `epoch`, `loss`, `accuracy` and,
            with validation, `val_loss` and `val_accuracy`).

    Returns:
        A dict from column name (of those five that the log has) to a float NumPy array, one
        value per epoch: NaN where a row leaves the cell empty (a run resumed with validation
        turned on or off) or "NA" (`keras.callbacks.CSVLogger`'s mark, in logs of earlier
        versions); a validation column with no value at all is left out. Other columns, such as
        `rss_mb`, are not read.

    Raises:
        RunFolderError: The file is missing, empty, or lacks the `epoch`, `loss` or `accuracy` column.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no such file (a run folder of lenet_tf.training.train has one)")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise RunFolderError(f"{path}: no epochs logged")
    missing = [name for name in REQUIRED_LOG_COLUMNS if name not in rows[0]]
    if missing:
        raise RunFolderError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        columns = [name for name in LOG_COLUMNS if name in rows[0]]
        log = {name: np.array([_log_value(row[name]) for row in rows]) for name in columns}
    except (TypeError, ValueError) as err:
        raise RunFolderError(f"{path}: not a number in the log ({err})") from None
    # A run without validation may still have its columns, empty or "NA" (earlier versions).
    return {name: values for name, values in log.items()
            if name in REQUIRED_LOG_COLUMNS or not np.isnan(values).all()}  # fmt: skip


def _log_value(cell):
    return np.nan if cell in ("", "NA") else float(cell)


def _last_validated(values):
    """The index of the last value that is not NaN.

    A run resumed with validation turned on or off has epochs without a validated value.
    """
    return np.flatnonzero(np.isfinite(values))[-1]


def plot_training_curves(log, final_test_error=None):
    """Loss and error rate per epoch, training and test.

    Args:
        log: From `read_training_log`.
        final_test_error: Test error (a fraction) of the saved model, drawn as its own point:
            with weight averaging (EMA) the saved weights are not those the per-epoch test
            curve measured, so the two figures differ slightly.

    Returns:
        The `Figure`.
    """
    from matplotlib.ticker import LogLocator, NullFormatter

    figure = _figure(9, 3.6)
    loss_axis, error_axis = figure.subplots(1, 2)
    epochs = log["epoch"] + 1  # Keras counts from 0; people count passes from 1
    loss_axis.plot(epochs, log["loss"], "o-", label="training")
    error_axis.plot(epochs, 100 * (1 - log["accuracy"]), "o-", label="training")
    if "val_loss" in log:
        loss_axis.plot(epochs, log["val_loss"], "s-", label="test (weights during training)")
        test_error = 100 * (1 - log["val_accuracy"])
        last = test_error[_last_validated(test_error)]
        error_axis.plot(epochs, test_error, "s-", label=f"test, during training: {last:.2f}% last")
    if final_test_error is not None:
        error_axis.plot(
            epochs[-1], 100 * final_test_error, "*", markersize=12,
            label=f"test, saved model: {100 * final_test_error:.2f}%",
        )  # fmt: skip
    loss_axis.set(title="Loss (MAP criterion for the paper variant)", xlabel="epoch", ylabel="loss")
    error_axis.set(title="Error rate", xlabel="epoch", ylabel="error (%)")
    # Errors fall from several percent to under one: only a log scale shows the last epochs.
    error_axis.set_yscale("log")
    error_axis.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    error_axis.yaxis.set_major_formatter("{x:g}")
    error_axis.yaxis.set_minor_formatter(NullFormatter())
    for axis in (loss_axis, error_axis):
        axis.grid(alpha=0.3, which="both")
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    return figure


def confusion_matrix(labels, predictions, classes=10):
    """Counts of (true, predicted) pairs: row = true digit, column = predicted digit."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def plot_confusion_matrix(matrix):
    """The confusion matrix, errors coloured and every cell's count written.

    Args:
        matrix: From `confusion_matrix`.

    Returns:
        The `Figure`.
    """
    figure = _figure(6.4, 5.6)
    axis = figure.subplots()
    errors = matrix.astype(float).copy()
    np.fill_diagonal(errors, np.nan)  # the diagonal would drown the errors' colour scale
    image = axis.imshow(errors, cmap="Reds", vmin=0, vmax=max(1.0, np.nanmax(errors)))
    total_errors = int(matrix.sum() - np.trace(matrix))
    for true in range(len(matrix)):
        for predicted in range(len(matrix)):
            count = int(matrix[true, predicted])
            if true == predicted:
                axis.text(predicted, true, count, ha="center", va="center", fontsize=8, color="0.35")
            elif count:
                strong = count > 0.6 * np.nanmax(errors)
                axis.text(predicted, true, count, ha="center", va="center", fontsize=9,
                          color="white" if strong else "black", fontweight="bold")  # fmt: skip
    axis.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit")
    axis.set_title(f"Confusion matrix: {total_errors} errors in {int(matrix.sum()):,} test images")
    figure.colorbar(image, ax=axis, label="misclassified images", shrink=0.8)
    return figure


def plot_misclassified(images, labels, predictions, limit=MAX_MISCLASSIFIED):
    """Every misclassified digit, `true->predicted` under each, in test-set order.

    Args:
        images: Test images, `(N, 28, 28)` raw pixels.
        labels: True digits, `(N,)`.
        predictions: Predicted digits, `(N,)`.
        limit: Most digits drawn; the title says when there are more.

    Returns:
        The `Figure`.
    """
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    shown = wrong[:limit]
    columns = 12
    rows = max(1, -(-len(shown) // columns))
    # One image of all the digits, with a band above each for its label: hundreds of separate
    # axes would take matplotlib tens of seconds to lay out and draw.
    width, height = MNIST_SIDE + GAP, MNIST_SIDE + LABEL_BAND
    mosaic = np.zeros((rows * height, columns * width), np.float32)
    figure = _figure(columns * 0.75, rows * 0.9 + 0.5)
    axis = figure.subplots()
    axis.set_axis_off()
    for position, index in enumerate(shown):
        top, left = (position // columns) * height + LABEL_BAND, (position % columns) * width
        mosaic[top : top + MNIST_SIDE, left : left + MNIST_SIDE] = images[index]
        axis.text(left + MNIST_SIDE / 2, top - 1.5, f"{labels[index]}->{predictions[index]}",
                  ha="center", va="bottom", fontsize=8)  # fmt: skip
    axis.imshow(mosaic, cmap=INK, vmin=0, vmax=255, interpolation="nearest")
    title = f"{len(wrong)} misclassified test digits (true->predicted)"
    if len(shown) < len(wrong):
        title += f", the first {len(shown)}"
    figure.suptitle(title)
    return figure


def feature_maps(model, image):
    """The C1 and C3 maps and the output probabilities of one image.

    Args:
        model: A LeNet-5 from `build_lenet5` or `load_lenet5`.
        image: One `(28, 28)` raw-pixel image.

    Returns:
        `(c1, c3, probabilities)`: `(28, 28, 6)`, `(10, 10, 16)` and `(10,)` NumPy arrays.
    """
    import keras

    from lenet_tf.model import probability_model

    probabilities = probability_model(model)
    probe = keras.Model(
        probabilities.input,
        [probabilities.get_layer("C1").output, probabilities.get_layer("C3").output, probabilities.output],
    )
    c1, c3, output = probe.predict_on_batch(np.asarray(image, np.float32)[None])
    return np.asarray(c1[0]), np.asarray(c3[0]), np.asarray(output[0])


def plot_feature_maps(model, image):
    """The input, the 6 C1 maps, the 16 C3 maps and the output of one image.

    Each layer's maps share one grey scale, from the layer's lowest to its highest value.

    Args:
        model: A LeNet-5.
        image: One `(28, 28)` raw-pixel image.

    Returns:
        The `Figure`.
    """
    c1, c3, probabilities = feature_maps(model, image)
    figure = _figure(9, 4.7)
    # Two sub-figures, so the output's tick labels do not shift the columns of C3 maps.
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 2])
    axes = top.subplots(1, 8, width_ratios=[1] * 7 + [1.2])
    axes[0].imshow(image, cmap=INK, vmin=0, vmax=255)
    axes[0].set_title("input", fontsize=9)
    for k in range(c1.shape[-1]):
        axes[1 + k].imshow(c1[..., k], cmap=INK, vmin=c1.min(), vmax=c1.max())
        axes[1 + k].set_title(f"C1 map {k}", fontsize=8)
    for axis in axes[:-1]:
        _hide_axes(axis)
    output = axes[-1]
    output.barh(range(10), probabilities, color="tab:blue")
    output.set(yticks=range(10), xlim=(0, 1))
    output.set_title(f"output: {int(probabilities.argmax())} ({probabilities.max():.2f})", fontsize=9)
    output.invert_yaxis()
    output.tick_params(labelsize=7)
    for k, axis in enumerate(bottom.subplots(2, 8).ravel()):
        axis.imshow(c3[..., k], cmap=INK, vmin=c3.min(), vmax=c3.max())
        axis.set_title(f"C3 map {k}", fontsize=8)
        _hide_axes(axis)
    figure.suptitle("LeNet-5 reading a test digit: C1 (6 maps, 28x28) and C3 (16 maps, 10x10)")
    return figure


def rbf_centres(model):
    """The RBF centres of a paper-variant model as `(10, 12, 7)` bitmaps, or None (modern)."""
    from lenet_tf.model import model_variant
    from lenet_tf.prototypes import BITMAP_HEIGHT, BITMAP_WIDTH

    if model_variant(model) != "paper":
        return None
    centres = np.asarray(model.get_layer("OUTPUT").centers.numpy())
    return centres.reshape(len(centres), BITMAP_HEIGHT, BITMAP_WIDTH)


def plot_prototypes(bitmaps):
    """The ten RBF prototypes as bitmaps, ink (+1) dark, as in the paper's Figure 3.

    Args:
        bitmaps: `(10, 12, 7)` array, such as `lenet_tf.prototypes.digit_bitmaps()` or
            `rbf_centres(model)`.

    Returns:
        The `Figure`.
    """
    figure = _figure(8, 2.2)
    axes = figure.subplots(1, len(bitmaps))
    limit = float(np.abs(bitmaps).max())
    for digit, (axis, bitmap) in enumerate(zip(axes, bitmaps)):
        axis.imshow(bitmap, cmap=INK, vmin=-limit, vmax=limit)
        axis.set_title(str(digit))
        _hide_axes(axis)
    figure.suptitle("RBF output centres: 7x12 bitmaps of the digits, +1 ink, -1 background")
    return figure


def plot_connection_table(table):
    """The C3 connection table: an X where an S2 map (row) feeds a C3 map (column).

    Args:
        table: `(6, 16)` boolean array, `lenet5_connection_table()`.

    Returns:
        The `Figure`.
    """
    figure = _figure(7.5, 3.2)
    axis = figure.subplots()
    axis.imshow(table, cmap="Blues", vmin=0, vmax=1.6)
    for row, column in zip(*np.nonzero(table)):
        axis.text(column, row, "X", ha="center", va="center", fontsize=10)
    axis.set(xticks=range(table.shape[1]), yticks=range(table.shape[0]), xlabel="C3 feature map",
             ylabel="S2 feature map")  # fmt: skip
    figure.suptitle(f"C3 connection table (the paper's Table 1): {int(table.sum())} of {table.size} pairs")
    return figure


def save_figure(figure, path):
    """Writes `figure` as a PNG at `path` atomically."""
    from lenet_tf.files import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return pathlib.Path(path)


def plot_test_error_per_pass(logs):
    """Test error after each pass for several runs, to compare recipes (e.g. SDLM and AdamW).

    Args:
        logs: `{label: log}`, each from `read_training_log` of a run with validation.

    Returns:
        The `Figure`.

    Raises:
        RunFolderError: A log without the per-epoch test columns (a run with validation off).
    """
    figure = _figure(6, 3.8)
    axis = figure.subplots()
    for label, log in logs.items():
        if "val_accuracy" not in log:
            raise RunFolderError(f"{label}: its training log has no per-epoch test error (trained without validation)")
        error = 100 * (1 - log["val_accuracy"])
        last = _last_validated(error)
        passes = log["epoch"] + 1
        axis.plot(passes, error, "o-", label=f"{label}: {error[last]:.2f}% after pass {passes[last]:.0f}")
    from matplotlib.ticker import LogLocator, NullFormatter

    axis.set(title="Test error after each pass", xlabel="pass", ylabel="test error (%)", yscale="log")
    axis.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.yaxis.set_major_formatter("{x:g}")
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    return figure


def write_report(run_dir, data_dir=None, out=None, compare=()):
    """Draws every plot of a run and writes them as PNG files.

    Args:
        run_dir: A run folder written by `lenet_tf.training.train` (`model.keras`, `training_log.csv`).
        data_dir: Folder with the MNIST IDX files; None uses `$LENET_MNIST_DIR` or TFDS.
        out: Folder for the PNG files. Defaults to `run_dir/report`.
        compare: Other run folders: adds `comparison.png`, the test error after each pass of
            this run and of each of them (`plot_test_error_per_pass`).

    Returns:
        A dict: `files` (the PNG paths written, in the order of the module docstring),
        `errors` (misclassified test images) and `test_error`.

    Raises:
        RunFolderError: The run folder, its model or its log is missing or unreadable.
    """
    from lenet_tf.data import load_mnist
    from lenet_tf.evaluation import evaluate_model
    from lenet_tf.layers import lenet5_connection_table
    from lenet_tf.saving import load_lenet5

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    out = pathlib.Path(out) if out is not None else run_dir / "report"
    log = read_training_log(run_dir / "training_log.csv")
    model = load_lenet5(run_dir / "model.keras")
    _, (x_test, y_test) = load_mnist(data_dir)
    result = evaluate_model(model, x_test, y_test)
    predictions = result["predictions"]
    # A correctly read 3, as in the paper's figure (the test set's very first 3 is a hard one).
    read = np.flatnonzero((y_test == FEATURE_MAP_DIGIT) & (predictions == FEATURE_MAP_DIGIT))
    first = int(read[0]) if len(read) else int(np.flatnonzero(y_test == FEATURE_MAP_DIGIT)[0])

    figures = {
        "training_curves": plot_training_curves(log, result["test_error"]),
        "confusion_matrix": plot_confusion_matrix(confusion_matrix(y_test, predictions)),
        "misclassified": plot_misclassified(x_test, y_test, predictions),
        "feature_maps": plot_feature_maps(model, x_test[first]),
    }
    centres = rbf_centres(model)
    if centres is not None:  # the modern variant has a softmax layer, no prototypes
        figures["prototypes"] = plot_prototypes(centres)
    figures["c3_connections"] = plot_connection_table(lenet5_connection_table())
    if compare:
        logs = {str(run_dir): log}
        logs.update((str(other), read_training_log(pathlib.Path(other) / "training_log.csv")) for other in compare)
        figures["comparison"] = plot_test_error_per_pass(logs)
    files = [save_figure(figure, out / f"{name}.png") for name, figure in figures.items()]
    return {"files": files, "errors": result["errors"], "test_error": result["test_error"]}
