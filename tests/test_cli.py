"""The command layer: one-line errors, exit statuses, argument checks, quiet dependencies and
the `lenet-tf` entry point."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from lenet_tf.commands import base
from lenet_tf.errors import ImageError, RunFailed, SettingError


def empty_parser(prog=None):
    parser = base.ArgumentParser(prog=prog or "prog")
    base.add_verbose_argument(parser)
    return parser


def run_execute(execute, capsys, flags=None):
    """Runs `execute` through `base.run`; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        base.run(empty_parser, execute, [], flags=flags)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def raising(err):
    def execute(args):
        raise err

    return execute


def python(code, **env):
    """Runs `code` in a fresh interpreter from the repository root; returns the result."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **env}, timeout=120,
    )  # fmt: skip


def test_library_error_is_one_line_and_status_2(capsys):
    status, _, err = run_execute(raising(ImageError("x.png: no such file")), capsys)
    assert (status, err) == (2, "error: x.png: no such file\n")


def test_multi_line_message_is_cut_to_its_first_line(capsys):
    status, _, err = run_execute(raising(ImageError("first\nsecond\nthird")), capsys)
    assert (status, err) == (2, "error: first\n")


def test_mnist_data_error_is_bad_input(capsys):
    from lenet_tf.data import IDXFormatError

    status, _, err = run_execute(raising(IDXFormatError("labels: bad magic number")), capsys)
    assert (status, err) == (2, "error: labels: bad magic number\n")


def test_a_setting_error_is_named_by_its_flag(capsys):
    error = SettingError("cpu_devices", "needs strategy 'mirrored' or 'multiworker'")
    assert run_execute(raising(error), capsys)[2] == "error: --cpu-devices: needs strategy 'mirrored' or 'multiworker'\n"
    error = SettingError("learning_rate", "diverged")
    assert run_execute(raising(error), capsys, flags={"learning_rate": "--lr"})[2] == "error: --lr: diverged\n"


def test_os_error_naming_a_file_is_bad_input(capsys, tmp_path):
    def execute(args):
        open(tmp_path / "missing.bin", "rb")

    status, _, err = run_execute(execute, capsys)
    assert (status, err) == (2, f"error: {tmp_path / 'missing.bin'}: No such file or directory\n")


def test_os_error_without_a_file_and_other_exceptions_keep_their_traceback():
    for error in (OSError("socket closed"), ZeroDivisionError("bug")):
        with pytest.raises(type(error)):
            base.run(empty_parser, raising(error), [])


def test_a_failed_run_is_one_line_and_status_1(capsys):
    status, _, err = run_execute(raising(RunFailed("lost a worker\ndetails")), capsys)
    assert (status, err) == (1, "error: lost a worker\n")


def test_keyboard_interrupt_exits_130(capsys):
    assert run_execute(raising(KeyboardInterrupt()), capsys)[::2] == (130, "interrupted\n")


def test_execute_status_is_the_exit_status(capsys):
    assert run_execute(lambda args: None, capsys)[0] == 0
    assert run_execute(lambda args: 3, capsys)[0] == 3


def test_argument_parser_errors_are_one_line(capsys):
    parser = base.ArgumentParser(prog="python -m lenet_tf.x")
    parser.add_argument("--epochs", type=base.positive_int, required=True)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--epochs", "many"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: argument --epochs: must be a positive integer, got 'many'")
    assert "--help" in err


def test_argument_parser_help_still_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        empty_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "usage: prog" in capsys.readouterr().out


QUIET_SCRIPT = """
    import os, sys
    from lenet_tf.commands import base

    def execute(args):
        os.write(2, b"I0000 native start-up line\\n")  # as TensorFlow's C++ code writes
        print("our own message", file=sys.stderr)
        if os.environ.get("FAIL"):
            raise ZeroDivisionError("a bug")

    base.run(base.ArgumentParser, execute, [])
"""


def test_dependency_output_is_held_back_and_ours_is_not():
    result = python(QUIET_SCRIPT)
    assert (result.returncode, result.stderr) == (0, "our own message\n")


def test_verbose_shows_dependency_output():
    result = python(QUIET_SCRIPT, LENET_TF_VERBOSE="1")
    assert "I0000 native start-up line" in result.stderr and "our own message" in result.stderr


def test_a_bug_shows_what_was_held_back_before_its_traceback():
    result = python(QUIET_SCRIPT, FAIL="1")
    assert result.returncode == 1
    assert result.stderr.index("I0000 native") < result.stderr.index("Traceback")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["export", "tflite", "--help"],
                                  ["predict", "--no-such-flag"]])  # fmt: skip
def test_help_and_bad_flags_answer_without_importing_tensorflow(argv):
    result = python(f"""
        import sys
        from lenet_tf.commands.dispatch import main
        try:
            main({argv!r})
        finally:
            print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    assert result.stdout.strip().splitlines()[-1] == "False False", result.stdout + result.stderr
    assert result.returncode == (2 if "--no-such-flag" in argv else 0), result.stderr


def test_entry_point_lists_every_command_and_refuses_unknown_ones():
    listing = subprocess.run([sys.executable, "-m", "lenet_tf", "--help"], capture_output=True, text=True, cwd=REPO)
    assert listing.returncode == 0
    for command in ("train", "evaluate", "predict", "report", "export"):
        assert f"  {command} " in listing.stdout
    exports = subprocess.run([sys.executable, "-m", "lenet_tf", "export"], capture_output=True, text=True, cwd=REPO)
    assert exports.returncode == 2 and "verify" in exports.stderr
    unknown = subprocess.run([sys.executable, "-m", "lenet_tf", "fit"], capture_output=True, text=True, cwd=REPO)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown command 'fit'")


def test_lenet_tf_console_script_is_installed():
    script = shutil.which("lenet-tf", path=os.path.dirname(sys.executable))
    assert script, "pip install -e . installs the lenet-tf command beside python"
    result = subprocess.run([script, "evaluate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: lenet-tf evaluate")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        (["--epochs", "two"], "argument --epochs: must be a positive integer, got 'two'"),
        (["--batch-size", "-8"], "argument --batch-size: must be a positive integer, got -8"),
        (["--lr", "nan"], "argument --lr: must be a positive number, got nan"),
        (["--lr", "inf"], "argument --lr: must be a positive number, got inf"),
        (["--weight-decay", "-1"], "argument --weight-decay: must be a number >= 0, got -1"),
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**32), got -1"),
        (["--strategy", "tpu"], "argument --strategy: invalid choice: 'tpu'"),
        (["--variant", "lenet4"], "argument --variant: invalid choice: 'lenet4'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_train_rejects_bad_flags_in_one_line(argv, message, capsys):
    from lenet_tf.commands import train

    with pytest.raises(SystemExit) as exit_info:
        train.build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_train_flags_are_the_config_fields_with_their_defaults():
    import dataclasses

    from lenet_tf.commands import train
    from lenet_tf.training import TrainConfig

    parser = train.build_parser()
    assert TrainConfig(**vars(parser.parse_args([]))) == TrainConfig()
    fast = parser.parse_args(["--recipe", "fast", "--epochs", "3"])
    assert TrainConfig(**vars(fast)) == TrainConfig(recipe="fast", epochs=3)
    help_text = parser.format_help()
    for field in dataclasses.fields(TrainConfig):
        assert base.flag_name(field.name, train.FLAGS) in help_text, field.name
    assert "--lr LEARNING_RATE" in help_text and "adamw: Adam with decoupled weight decay" in help_text
    assert "(default: 20 with recipe paper-schedule, 6 with fast)" in " ".join(help_text.split())


def test_train_boolean_flags_can_be_turned_off_whatever_the_defaults():
    from lenet_tf.commands import train

    args = train.build_parser().parse_args(
        ["--no-ema", "--no-distort", "--no-deterministic", "--no-validation", "--no-mixed-precision"]
    )
    assert not (args.ema or args.distort or args.deterministic or args.validation or args.mixed_precision)


@pytest.mark.parametrize("argv, verbose", [([], "auto"), (["--verbose"], True), (["--verbose", "auto"], "auto"),
                                           (["--verbose", "0"], 0), (["--verbose", "2"], 2)])  # fmt: skip
def test_train_verbose_is_the_progress_or_bare_for_dependency_logs(argv, verbose, monkeypatch):
    from lenet_tf.commands import train

    monkeypatch.delenv(base.VERBOSE_ENV, raising=False)
    args = train.build_parser().parse_args(argv)
    assert args.verbose == verbose and type(args.verbose) is type(verbose)
    assert base.wants_dependency_logs(args) is (verbose is True)


def test_train_refuses_an_unknown_progress_setting(capsys):
    from lenet_tf.commands import train

    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--verbose", "3"])
    assert capsys.readouterr().err.startswith("error: argument --verbose: invalid choice: 3")
