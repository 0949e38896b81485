"""The report plots of a run: every file written, what each shows, and bad run folders."""

import contextlib
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli
from lenet_tf import reporting as report
from lenet_tf.commands import report as report_command
from lenet_tf.errors import RunFolderError
from lenet_tf.layers import lenet5_connection_table
from lenet_tf.prototypes import digit_bitmaps

PLOTS = ("training_curves", "confusion_matrix", "misclassified", "feature_maps", "prototypes", "c3_connections")


@pytest.fixture(scope="module")
def reported_run(trained_run, tmp_path_factory, mnist_dir):
    """A copy of the trained run folder after `python -m lenet_tf.report RUN_DIR` (in-process).

    A copy, so the shared `trained_run` folder stays as training wrote it.

    Returns:
        `(run_dir, metrics, exit_status, printed_lines)`.
    """
    run_dir, metrics = trained_run
    copy = tmp_path_factory.mktemp("reported") / "run"
    copy.mkdir()
    for name in ("model.keras", "training_log.csv", "metrics.json"):
        shutil.copy(run_dir / name, copy / name)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        report_command.main([str(copy), "--data-dir", str(mnist_dir)])
    return copy, metrics, exit_info.value.code, printed.getvalue().splitlines()


def test_report_writes_every_plot_as_a_png_in_the_run_folder(reported_run):
    run_dir, _, status, printed = reported_run
    assert status == 0
    folder = run_dir / "report"
    assert printed[:-1] == [str(folder / f"{name}.png") for name in PLOTS]
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{name}.png" for name in PLOTS)
    for name in PLOTS:
        with Image.open(folder / f"{name}.png") as image:
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 200, name


def test_report_counts_the_same_errors_as_training(reported_run):
    _, metrics, _, printed = reported_run
    assert printed[-1] == f"test error {100 * metrics['test_error']:.2f}% ({metrics['test_errors']} misclassified)"


def test_saving_a_plot_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "plots" / "prototypes.png"
    report.save_figure(report.plot_connection_table(lenet5_connection_table()), path)
    first = path.read_bytes()
    report.save_figure(report.plot_prototypes(digit_bitmaps()), path)
    assert path.read_bytes() != first and path.read_bytes().startswith(b"\x89PNG")
    assert [entry.name for entry in path.parent.iterdir()] == ["prototypes.png"]


def test_report_cli_refuses_bad_run_folders_in_one_line(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    cases = [
        (tmp_path / "missing", "missing: no such run folder"),
        (tmp_path / "empty_run", "training_log.csv: no such file"),
    ]
    for run_dir, message in cases:
        status, _, err = run_cli(report_command.main, [run_dir], capsys)
        assert_one_line_error(status, err, message)
        assert len(err.splitlines()) == 1


def test_training_log_without_validation_and_malformed_logs(tmp_path):
    log_path = tmp_path / "training_log.csv"
    log_path.write_text("epoch,accuracy,loss\n0,0.9,3.0\n1,0.95,2.0\n")
    log = report.read_training_log(log_path)
    assert log["epoch"].tolist() == [0.0, 1.0] and "val_loss" not in log
    figure = report.plot_training_curves(log)
    assert [len(axis.lines) for axis in figure.axes] == [1, 1]  # training only
    log_path.write_text("epoch,loss\n0,3.0\n")
    with pytest.raises(RunFolderError, match="missing column.*accuracy"):
        report.read_training_log(log_path)
    log_path.write_text("epoch,accuracy,loss\n")
    with pytest.raises(RunFolderError, match="no epochs logged"):
        report.read_training_log(log_path)
    log_path.write_text("epoch,accuracy,loss\n0,high,3.0\n")
    with pytest.raises(RunFolderError, match="not a number"):
        report.read_training_log(log_path)


def test_training_log_reads_missing_validation_cells_as_nan(tmp_path):
    log_path = tmp_path / "training_log.csv"
    # Without validation, as earlier versions (keras.callbacks.CSVLogger) wrote it.
    log_path.write_text("epoch,accuracy,loss,rss_mb,val_accuracy,val_loss,val_rss_mb\n0,0.9,3.0,850.0,NA,NA,NA\n")
    assert set(report.read_training_log(log_path)) == {"epoch", "accuracy", "loss"}
    # Interrupted with validation, resumed without it.
    log_path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.9,3.0,0.95,2.5\n1,0.95,2.0,,\n")
    log = report.read_training_log(log_path)
    assert log["val_accuracy"][0] == 0.95 and np.isnan(log["val_accuracy"][1])
    labels = report.plot_training_curves(log).axes[1].get_legend_handles_labels()[1]
    assert "test, during training: 5.00% last" in labels  # the last epoch that was validated
    labels = report.plot_test_error_per_pass({"resumed": log}).axes[0].get_legend_handles_labels()[1]
    assert labels == ["resumed: 5.00% after pass 1"]


def test_training_curves_label_the_per_epoch_test_error_apart_from_the_saved_models():
    # With weight averaging the saved model is not the one measured after each epoch.
    log = {"epoch": np.array([0.0, 1.0]), "loss": np.array([3.0, 2.0]), "accuracy": np.array([0.9, 0.95]),
           "val_loss": np.array([2.5, 2.2]), "val_accuracy": np.array([0.978, 0.9821])}  # fmt: skip
    figure = report.plot_training_curves(log, final_test_error=0.0181)
    labels = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert labels == ["training", "test, during training: 1.79% last", "test, saved model: 1.81%"]


def test_comparison_draws_each_runs_test_error_per_pass_and_refuses_a_log_without_it():
    with_validation = {"epoch": np.array([0.0, 1.0, 2.0]), "loss": np.ones(3), "accuracy": np.ones(3),
                       "val_loss": np.ones(3), "val_accuracy": np.array([0.97, 0.98, 0.99])}  # fmt: skip
    other = dict(with_validation, val_accuracy=np.array([0.95, 0.985, 0.991]))
    figure = report.plot_test_error_per_pass({"runs/sdlm": with_validation, "runs/paper": other})
    (axis,) = figure.axes
    assert [line.get_label() for line in axis.lines] == ["runs/sdlm: 1.00% after pass 3", "runs/paper: 0.90% after pass 3"]
    np.testing.assert_allclose(axis.lines[0].get_ydata(), [3.0, 2.0, 1.0])
    without = {key: value for key, value in with_validation.items() if not key.startswith("val_")}
    with pytest.raises(RunFolderError, match="runs/x: its training log has no per-epoch test error"):
        report.plot_test_error_per_pass({"runs/x": without})


def test_confusion_matrix_counts_pairs():
    matrix = report.confusion_matrix([0, 0, 1, 9, 9], [0, 1, 1, 9, 4])
    assert matrix.sum() == 5 and np.trace(matrix) == 3
    assert matrix[0, 1] == 1 and matrix[9, 4] == 1
    title = report.plot_confusion_matrix(matrix).axes[0].get_title()
    assert title == "Confusion matrix: 2 errors in 5 test images"


def test_misclassified_grid_draws_each_error_with_true_and_predicted_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = np.arange(50) % 10
    predictions = labels.copy()
    predictions[[3, 17, 41]] = [8, 2, 0]
    figure = report.plot_misclassified(images, labels, predictions)
    (axis,) = figure.axes
    assert [text.get_text() for text in axis.texts] == ["3->8", "7->2", "1->0"]
    mosaic = axis.images[0].get_array()
    first = report.LABEL_BAND, report.LABEL_BAND + 28
    np.testing.assert_array_equal(mosaic[first[0] : first[1], :28], images[3])  # row 1, column 1
    np.testing.assert_array_equal(mosaic[first[0] : first[1], 64:92], images[41])  # column 3
    assert figure.get_suptitle() == "3 misclassified test digits (true->predicted)"
    # More errors than the limit: the first `limit` are drawn and the title says so.
    figure = report.plot_misclassified(images, labels, (labels + 1) % 10, limit=20)
    assert len(figure.axes[0].texts) == 20
    assert figure.get_suptitle().endswith("the first 20")


def test_feature_maps_have_the_paper_shapes():
    from lenet_tf.model import build_lenet5

    image = np.zeros((28, 28), np.float32)
    image[6:22, 12:16] = 255.0
    c1, c3, probabilities = report.feature_maps(build_lenet5("paper"), image)
    assert c1.shape == (28, 28, 6) and c3.shape == (10, 10, 16)
    assert probabilities.shape == (10,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    figure = report.plot_feature_maps(build_lenet5("paper"), image)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles.count("input") == 1 and sum(t.startswith("C1 map") for t in titles) == 6
    assert sum(t.startswith("C3 map") for t in titles) == 16


def test_prototypes_are_the_paper_bitmaps_and_absent_for_the_modern_variant():
    from lenet_tf.model import build_lenet5

    np.testing.assert_array_equal(report.rbf_centres(build_lenet5("paper")), digit_bitmaps())
    assert report.rbf_centres(build_lenet5("modern")) is None
    figure = report.plot_prototypes(digit_bitmaps())
    assert [axis.get_title() for axis in figure.axes] == [str(digit) for digit in range(10)]
