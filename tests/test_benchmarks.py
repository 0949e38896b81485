"""The benchmark suite measures what it says: its bookkeeping, not the speeds (those vary).

Speeds are never asserted here: `python -m benchmarks.run` measures them and the README shows
them. These tests pin down how the figures are taken: checks are not counted as training time,
a run stops at the first check at the target, workers run real models and report failures.
"""

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, command_env, run_cli

from benchmarks import accelerator, recipe_sweep, run, step_profile, time_to_accuracy, train_throughput, trainers


class ScriptedTrainer:
    """Trains instantly; each step and each check advance a fake clock by a set amount.

    `accuracy` returns the next scripted value. With `clock`, the clock is patched into
    `time_to_accuracy` so that its timing is exact, not measured.
    """

    def __init__(self, accuracies, step_seconds=0.0, check_seconds=0.0):
        self.accuracies = list(accuracies)
        self.step_seconds, self.check_seconds = step_seconds, check_seconds
        self.steps, self.now = 0, 0.0

    def clock(self):
        return self.now

    def train(self, steps, every=None, callback=None):
        for step in range(1, steps + 1):
            self.now += self.step_seconds
            self.steps += 1
            if callback is not None and step % every == 0 and callback(step):
                return

    def accuracy(self, images, labels):
        self.now += self.check_seconds
        return self.accuracies.pop(0)


def test_time_to_accuracy_stops_once_every_target_is_reached():
    trainer = ScriptedTrainer([0.95, 0.985, 0.9902, 0.9906, 0.995])
    result = time_to_accuracy.time_to_accuracy(trainer, None, None, (0.99, 0.9905), checks=5, steps_per_check=5)
    first, second = result["targets"]["0.99"], result["targets"]["0.9905"]
    assert first["reached"] and first["steps"] == 15 and first["accuracy"] == 0.9902
    assert second["reached"] and second["steps"] == 20 and second["accuracy"] == 0.9906
    assert trainer.steps == 20
    assert [check["accuracy"] for check in result["curve"]] == [0.95, 0.985, 0.9902, 0.9906]


def test_time_to_accuracy_does_not_count_the_checks_as_training_time(monkeypatch):
    trainer = ScriptedTrainer([0.5, 0.6, 0.7], step_seconds=0.01, check_seconds=5.0)
    monkeypatch.setattr(time_to_accuracy.time, "perf_counter", trainer.clock)
    result = time_to_accuracy.time_to_accuracy(trainer, None, None, (0.99,), checks=3, steps_per_check=2)
    point = result["targets"]["0.99"]
    assert not point["reached"] and point["steps"] == 6 and point["accuracy"] == 0.7
    # 6 steps of 10 ms trained; the 3 checks of 5 s each are not in the figures.
    assert [check["seconds"] for check in result["curve"]] == pytest.approx([0.02, 0.04, 0.06])
    assert point["seconds"] == pytest.approx(0.06)


def test_time_to_accuracy_table_says_when_a_target_was_not_reached():
    def run(*points):
        targets = {target: {"reached": reached, "seconds": seconds, "steps": steps, "accuracy": accuracy}
                   for target, (reached, seconds, steps, accuracy) in zip(("0.99", "0.9905"), points)}  # fmt: skip
        return {"targets": targets, "curve": [{"accuracy": point[3]} for point in points]}

    result = {
        "batch_size": 128, "epochs": 6, "optimizer": "muon", "train_examples": 60_000,
        "models": {
            "paper": run((True, 21.04, 2340, 0.9903), (True, 30.0, 2808, 0.9907)),
            "stock": run((False, 40.0, 2808, 0.9871), (False, 40.0, 2808, 0.9871)),
        },
    }  # fmt: skip
    table = time_to_accuracy.markdown(result)
    assert "| model (batch 128, at most 6 epochs, muon) | seconds to 99.0% accuracy | epochs |" in table
    assert "| seconds to 0.95% error | epochs | best test accuracy |" in table
    assert "| 21.0 | 5.0 | 30.0 | 6.0 | 99.07% |" in table
    assert "| not reached | - | not reached | - | 98.71% |" in table


def test_throughput_table_names_the_optimizer_and_gives_the_paper_models_ratios():
    results = [
        {"batch_size": size, "optimizer": "adamw", "images_per_second": {"paper": paper, "stock": 4000.0, "torch": torch}}
        for size, paper, torch in ((32, 4400.0, 4000.0), (128, 9000.0, 10000.0))
    ]
    table = train_throughput.markdown(results).splitlines()
    assert table[0] == "| training images/s (adamw) | batch 32 | batch 128 |"
    assert "| paper model / torch | 1.10 | 0.90 |" in table
    assert "| paper model / stock | 1.10 | 2.25 |" in table
    assert not any(line.startswith("| paper model / paper") for line in table)


def test_time_to_accuracy_seed_and_optimizer_reach_every_contender(mnist_dir, tmp_path, capsys, monkeypatch):
    settings = {}

    class RecordingProcess:
        def __init__(self, name, data_dir, **trainer_args):
            settings[name] = (trainer_args["seed"], trainer_args["optimizer"])

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            pass

        def time_to_accuracy(self, targets, checks, steps_per_check):
            return {"targets": {str(t): {"reached": False, "seconds": 1.0, "steps": 1, "accuracy": 0.5}
                                for t in targets}, "curve": [{"accuracy": 0.5}]}  # fmt: skip

    monkeypatch.setattr(trainers, "TrainerProcess", RecordingProcess)
    monkeypatch.setattr(trainers, "available_contenders", lambda: ["paper", "stock"])
    argv = ["--data-dir", mnist_dir, "--seed", "7", "--optimizer", "adamw", "--json", tmp_path / "result.json"]
    status, _, _ = run_cli(time_to_accuracy.main, argv, capsys)
    assert status == 0
    assert settings == {"paper": (7, "adamw"), "stock": (7, "adamw")}
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["seed"], result["optimizer"]) == (7, "adamw")


@pytest.mark.parametrize("name", ["paper", "stock"])
def test_keras_contenders_train_with_the_optimizer_asked_for_at_the_recipes_peak(mnist, name):
    from lenet_tf.optimizers import KernelMuon
    from lenet_tf.training.config import RECIPES

    (x_train, y_train), _ = mnist
    kinds = {}
    for optimizer in trainers.OPTIMIZERS:
        model = trainers.make_trainer(name, x_train[:64], y_train[:64], 32, 10, 10, optimizer=optimizer).model
        kinds[optimizer] = type(model.optimizer)
        assert model.optimizer._learning_rate.peak == RECIPES["fast"]["learning_rate"]
    assert issubclass(kinds["muon"], KernelMuon) and not issubclass(kinds["adamw"], KernelMuon)
    assert kinds["adamw"].__name__ == "AdamW"


def test_torch_contender_trains_with_adamw_alone_when_asked(mnist, torch_lenet):
    import torch

    (x_train, y_train), _ = mnist
    trainer = trainers.make_trainer("torch", x_train[:64], y_train[:64], 32, 10, 10, optimizer="adamw")
    assert [type(each) for each in trainer.optimizers] == [torch.optim.AdamW]
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(8e-3)


def test_make_trainer_refuses_an_optimizer_every_contender_does_not_have(mnist):
    (x_train, y_train), _ = mnist
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        trainers.make_trainer("paper", x_train[:64], y_train[:64], 32, 10, 10, optimizer="sdlm")


@pytest.fixture(scope="module")
def stock_worker(mnist_dir):
    worker = trainers.TrainerProcess("stock", mnist_dir, batch_size=32, total_steps=40, steps_per_call=10)
    yield worker
    worker.close()


def test_trainer_process_trains_a_real_model_and_saves_it(stock_worker, tmp_path):
    assert stock_worker.images_per_second(10) > 0
    stock_worker.save(tmp_path / "stock.keras")
    from benchmarks.stock_lenet import STOCK_LAYER_CLASSES
    from lenet_tf.errors import ModelFileError
    from lenet_tf.saving import load_lenet5

    assert load_lenet5(tmp_path / "stock.keras", also_allow=STOCK_LAYER_CLASSES).name == "lenet5_stock"
    from lenet_tf.inference import load_runtime  # as the inference benchmark runs it

    runtime = load_runtime(tmp_path / "stock.keras", also_allow=STOCK_LAYER_CLASSES)
    assert runtime.predict(np.zeros((3, 28, 28), np.float32)).shape == (3, 10)
    with pytest.raises(ModelFileError, match="'AveragePooling2D', which is not part of a lenet-tf LeNet-5"):
        load_lenet5(tmp_path / "stock.keras")  # the library alone knows only its own layers


def test_trainer_process_passes_worker_errors_back_as_one_line(stock_worker, tmp_path):
    with pytest.raises(RuntimeError, match=r"^stock worker: \w+Error: "):
        stock_worker.save(tmp_path / "stock.txt")  # Keras refuses a name not ending in .keras
    assert stock_worker.images_per_second(10) > 0  # and the worker still serves


def test_trainer_process_for_an_unknown_contender_fails_cleanly(mnist_dir):
    with pytest.raises(RuntimeError, match="worker exited"):
        trainers.TrainerProcess("caffe", mnist_dir, batch_size=32, total_steps=10, steps_per_call=10)


@pytest.fixture
def torch_lenet():
    """`benchmarks.torch_lenet`; the test is skipped where PyTorch is not installed."""
    module = pytest.importorskip("benchmarks.torch_lenet")
    if not module.available():
        pytest.skip("PyTorch is not installed (the optional `bench` extra)")
    return module


def test_torch_lenet_reads_exactly_the_keras_preprocessed_input(mnist, torch_lenet):
    import keras

    from lenet_tf.layers import MNISTPreprocessing

    (x_train, y_train), _ = mnist
    trainer = torch_lenet.TorchTrainer(x_train[:64], y_train[:64], 32, 10, 1e-3, 0.05, 0.9)
    expected = keras.ops.convert_to_numpy(MNISTPreprocessing()(x_train[:64].astype(np.float32)))
    np.testing.assert_array_equal(trainer.images.numpy(), expected.transpose(0, 3, 1, 2))
    assert trainer.model(trainer.images[:2]).shape == (2, 10)


def test_torch_contender_follows_the_keras_onecycle_schedule():
    torch_lenet = pytest.importorskip("benchmarks.torch_lenet")
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import learning_rate_schedule

    config = TrainConfig(recipe="fast", epochs=1)
    keras_schedule = learning_rate_schedule(config, steps_per_epoch=300)
    peak = config.initial_learning_rate()
    for step in (0, 30, 60, 61, 150, 299, 300):
        assert peak * torch_lenet.onecycle_factor(step, 300) == pytest.approx(float(keras_schedule(step)), rel=1e-5, abs=1e-9)


def test_torch_contender_steps_its_kernels_as_kernel_muon_does(mnist, torch_lenet):
    import keras
    import torch

    from lenet_tf.optimizers import KernelMuon
    from lenet_tf.training.recipes import MUON_LR_RATIO

    (x_train, y_train), _ = mnist
    trainer = torch_lenet.TorchTrainer(x_train[:64], y_train[:64], 32, 10, 1e-2, 0.0, 0.9)
    muon, adamw = trainer.optimizers
    assert [tuple(p.shape) for p in muon.param_groups[0]["params"]] == [(6, 25), (16, 150), (120, 400), (84, 120), (10, 84)]
    assert all(p.ndim == 1 for p in adamw.param_groups[0]["params"])
    # Three steps of C3's kernel from the same weights and gradients, weight decay included:
    # torch (filters, inputs), Keras (5, 5, 6, 16).
    rng = np.random.default_rng(0)
    start = rng.normal(size=(16, 6, 5, 5)).astype("float32")
    gradients = [rng.normal(size=(16, 6, 5, 5)).astype("float32") for _ in range(3)]
    matrix = torch.nn.Parameter(torch.from_numpy(start.reshape(16, 150).copy()))
    torch_muon = torch_lenet.make_torch_optimizers(torch.nn.ParameterList([matrix]), "muon", 1e-2, 0.5)[0]
    kernel = keras.Variable(start.transpose(2, 3, 1, 0))
    keras_muon = KernelMuon(1e-2, muon_lr_ratio=MUON_LR_RATIO, weight_decay=0.5)
    for gradient in gradients:
        matrix.grad = torch.from_numpy(gradient.reshape(16, 150))
        torch_muon.step()
        keras_muon.apply([gradient.transpose(2, 3, 1, 0)], [kernel])
    keras_move = np.asarray(kernel).transpose(3, 2, 0, 1).reshape(16, 150) - start.reshape(16, 150)
    torch_move = matrix.detach().numpy() - start.reshape(16, 150)
    # torch orthogonalises in bfloat16, Keras in float32.
    np.testing.assert_allclose(torch_move, keras_move, atol=0.03 * np.abs(keras_move).max())


# Runs `benchmarks.accelerator` with every TensorFlow import failing, as on a machine without it.
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; from benchmarks import accelerator; accelerator.main(sys.argv[1:])"
)


def run_on_jax(script, *args):
    """Runs `python -c script args...` from the repository root, Keras on JAX; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=REPO, env={**command_env(), "KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_accelerator_trains_on_jax_without_tensorflow_with_fit_and_with_scan(mnist_dir, tmp_path):
    pytest.importorskip("jax")
    results = tmp_path / "runs.json"
    proc = run_on_jax(
        WITHOUT_TENSORFLOW, "--data-dir", mnist_dir, "--recipes", "fast", "--precisions", "float32",
        "--loops", "fit", "scan", "--epochs", 1, "--train-limit", 3840, "--json", results,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(results.read_text())
    assert result["device"].startswith("keras ") and " jax " in result["device"]
    assert [trained["loop"] for trained in result["runs"]] == ["fit", "scan"]
    for trained in result["runs"]:  # untrained: about 90% error
        assert trained["test_error"] < 0.5, trained


# Counts JAX's compilations of Keras's evaluation step during one `train_recipe` with `scan`.
COUNT_EVALUATION_COMPILATIONS = """
import logging, sys
import jax
from benchmarks import accelerator
from lenet_tf.data import load_mnist

class CountEvaluationCompilations(logging.Handler):
    count = 0
    def emit(self, record):
        self.count += "compilation of jit(test_step)" in record.getMessage()

counter = CountEvaluationCompilations()
logging.getLogger("jax").addHandler(counter)
logging.getLogger("jax").setLevel(logging.WARNING)
jax.config.update("jax_log_compiles", True)
(x, y), test = load_mnist(sys.argv[1])
accelerator.train_recipe("fast", ((x[:1024], y[:1024]), test), loop="scan", epochs=1)
print(counter.count)
"""


@pytest.mark.slow
def test_accelerator_compiles_one_evaluation_program_per_scan_run(mnist_dir):
    # Each batch shape is one more compilation: about 2 s each on an H100 (docs/performance.md).
    pytest.importorskip("jax")
    proc = run_on_jax(COUNT_EVALUATION_COMPILATIONS, mnist_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "1"


def test_accelerator_refuses_scan_outside_jax_in_one_line(mnist_dir, capsys):
    status, _, err = run_cli(accelerator.main, ["--data-dir", mnist_dir, "--loops", "scan"], capsys)
    assert_one_line_error(status, err, "--loops", "needs the JAX backend")


def test_recipe_sweep_refuses_scan_outside_jax_in_one_line(mnist_dir, tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    status, _, err = run_cli(recipe_sweep.main, ["--data-dir", mnist_dir, "--out", out], capsys)
    assert_one_line_error(status, err, "--loop", "needs the JAX backend")
    assert not out.exists()


def test_recipe_sweep_starts_no_run_after_its_budget(mnist_dir, tmp_path, capsys, monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("a run started after the budget was spent")

    monkeypatch.setattr(recipe_sweep, "train_recipe", no_run)
    out = tmp_path / "sweep.jsonl"
    argv = ["--data-dir", mnist_dir, "--out", out, "--loop", "fit", "--budget-seconds", "1e-9"]
    status, printed, _ = run_cli(recipe_sweep.main, argv, capsys)
    assert status == 0
    assert "budget spent" in printed
    assert out.read_text() == ""


def test_machine_line_names_the_vector_instructions_that_pick_the_kernels():
    # Two hosts of one model name, one with AVX-512 VNNI and BF16 (oneDNN on by default), one
    # without: the results must tell them apart.
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 {}\n"
    assert run.cpu_description(cpuinfo.format("avx2 fma")) == "AMD EPYC (avx2 fma)"
    assert run.cpu_description(cpuinfo.format("fma avx2 avx512f avx512_bf16 avx512_vnni")) == (
        "AMD EPYC (avx2 fma avx512f avx512_vnni avx512_bf16)"
    )
    assert run.cpu_description(cpuinfo.format("sse4_2")) == "AMD EPYC (no AVX2)"
    # Without the flags (no /proc/cpuinfo), the line claims no instructions either way.
    assert run.cpu_description("") == (platform.processor() or platform.machine())


def test_benchmark_outputs_are_checked_before_anything_is_measured(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "kept.txt").write_text("a user's file")
    status, _, err = run_cli(step_profile.main, ["--json", results], capsys)
    assert_one_line_error(status, err, f"--json: {results}: is a folder, not replaced by a file")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    status, _, err = run_cli(run.main, ["--out", blocker, "--data-dir", tmp_path / "no-mnist"], capsys)
    assert_one_line_error(status, err, f"--out: {blocker}/results.md: {blocker} is not a folder")
    assert [path.name for path in results.iterdir()] == ["kept.txt"]


def test_step_profile_differentiates_the_input_only_where_asked():
    import keras

    layer, inputs = keras.layers.Dense(3), np.ones((2, 4), "float32")
    layer.build(inputs.shape)
    for input_gradient, gradients in ((False, 2), (True, 3)):  # kernel, bias (, input)
        _, forward_backward = step_profile.layer_functions(layer, keras.ops.convert_to_tensor(inputs), input_gradient)
        assert len(forward_backward()) == gradients
    _, nothing = step_profile.layer_functions(keras.layers.Flatten(), inputs, input_gradient=False)
    assert nothing is None


def test_step_profile_times_every_layer_and_the_whole_step():
    result = step_profile.profile(batch_size=4, calls=2, repeats=1)
    rows = {row["layer"]: row for row in result["layers"]}
    assert list(rows) == ["preprocess", "C1", "S2", "C3", "S4", "C5", "flatten", "F6", "OUTPUT"]
    assert rows["preprocess"]["forward_backward_ms"] is None  # before the first weights: no gradient
    assert rows["flatten"]["forward_backward_ms"] > 0  # after C1: its input gradient is on the path
    assert result["train_step_ms"] > 0 and result["images_per_second"] > 0
    assert result["jit_compile"] is False and result["model"] == "paper"
    assert result["trainable_parameters"] == 60_000  # the paper's count
    table = step_profile.markdown({"onednn": True, "profiles": [result, dict(result, jit_compile=True)]})
    assert all(f"| {name} |" in table for name in rows)
    assert table.count("paper, batch 4: forward") == 1 and table.count("paper, batch 4, XLA: forward") == 1


def test_step_profile_times_the_stock_lenet_layer_by_layer_beside_the_paper_model():
    stock = step_profile.profile(batch_size=4, calls=2, repeats=1, model_name="stock")
    rows = {row["layer"]: row for row in stock["layers"]}
    assert list(rows) == ["preprocess", "C1", "S2", "C3", "S4", "C5", "flatten", "F6", "OUTPUT"]
    assert rows["S2"]["forward_backward_ms"] > 0  # no weights, but C1's gradient flows through it
    assert stock["model_and_loss_ms"] > 0 and stock["train_step_ms"] > 0
    assert stock["trainable_parameters"] == 61_706  # C3 fully connected, no pooling weights, a Dense output
    paper = dict(stock, model="paper", layers=stock["layers"][:2])  # layers missing in one profile
    table = step_profile.markdown({"onednn": True, "profiles": [stock, paper]}).splitlines()
    assert "| stock, batch 4: forward | forward + backward | paper, batch 4: forward |" in table[2]
    c1, s2 = (next(line for line in table if line.startswith(f"| {name} |")) for name in ("C1", "S2"))
    assert c1.count(f"{rows['C1']['forward_ms']:.2f}") == 2 and s2.endswith("|  |  |")


def test_stock_lenet_builds_its_optimizer_at_compile_as_the_paper_model_does():
    import keras

    from benchmarks.stock_lenet import build_stock_lenet, compile_stock_lenet

    model = build_stock_lenet()
    compile_stock_lenet(model, keras.optimizers.AdamW(1e-3, use_ema=True))
    assert model.optimizer.built  # else `fit`'s first trace builds it, inside the benchmarks' clocks


def test_step_profile_compiles_every_timed_function_with_xla_only_when_asked():
    import keras

    layer, inputs = keras.layers.Dense(3), keras.ops.ones((2, 4))
    layer.build(inputs.shape)
    for jit_compile in (False, True):
        functions = step_profile.layer_functions(layer, inputs, True, jit_compile)
        for function in functions:
            attributes = function.get_concrete_function().function_def.attr
            assert ("_XlaMustCompile" in attributes and attributes["_XlaMustCompile"].b) is jit_compile
