"""The shared command-line plumbing: one-line errors, exit statuses, argument checks."""

import argparse

import pytest

from lenet_tf import cli


def run_main(main, argv, capsys):
    """Runs `cli.run(main, argv)`; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def raising(err):
    def main(argv):
        raise err

    return main


def test_usage_error_is_one_line_and_status_2(capsys):
    status, _, err = run_main(raising(cli.UsageError("--model x.keras: no such file")), [], capsys)
    assert status == 2
    assert err == "error: --model x.keras: no such file\n"


def test_multi_line_message_is_cut_to_its_first_line(capsys):
    status, _, err = run_main(raising(cli.UsageError("first\nsecond\nthird")), [], capsys)
    assert (status, err) == (2, "error: first\n")


def test_mnist_data_error_is_bad_input(capsys):
    from lenet_tf.data import IDXFormatError

    status, _, err = run_main(raising(IDXFormatError("labels: bad magic number")), [], capsys)
    assert (status, err) == (2, "error: labels: bad magic number\n")


def test_os_error_naming_a_file_is_bad_input(capsys, tmp_path):
    def main(argv):
        open(tmp_path / "missing.bin", "rb")

    status, _, err = run_main(main, [], capsys)
    assert status == 2
    assert err == f"error: {tmp_path / 'missing.bin'}: No such file or directory\n"


def test_os_error_without_a_file_and_other_exceptions_keep_their_traceback(capsys):
    with pytest.raises(OSError):
        cli.run(raising(OSError("socket closed")), [])
    with pytest.raises(ZeroDivisionError):
        cli.run(raising(ZeroDivisionError("bug")), [])


def test_run_error_is_one_line_and_status_1(capsys):
    status, _, err = run_main(raising(cli.RunError("--strategy multiworker: lost a worker\ndetails")), [], capsys)
    assert (status, err) == (1, "error: --strategy multiworker: lost a worker\n")


def test_keyboard_interrupt_exits_130(capsys):
    status, _, err = run_main(raising(KeyboardInterrupt()), [], capsys)
    assert (status, err) == (130, "interrupted\n")


def test_main_status_is_the_exit_status(capsys):
    assert run_main(lambda argv: None, [], capsys)[0] == 0
    assert run_main(lambda argv: 3, [], capsys)[0] == 3


def test_argument_parser_errors_are_one_line(capsys):
    parser = cli.ArgumentParser(prog="python -m lenet_tf.x")
    parser.add_argument("--epochs", type=int, required=True)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--epochs", "many"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: argument --epochs: invalid int value: 'many'")
    assert "--help" in err


def test_argument_parser_help_still_prints_usage(capsys):
    parser = cli.ArgumentParser(prog="prog")
    parser.add_argument("--x")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "usage: prog" in capsys.readouterr().out


def test_require_file(tmp_path):
    good = tmp_path / "a.bin"
    good.write_bytes(b"x")
    assert cli.require_file(str(good), "--model") == good
    with pytest.raises(cli.UsageError, match=r"^--model .*nope.bin: no such file$"):
        cli.require_file(tmp_path / "nope.bin", "--model")
    with pytest.raises(cli.UsageError, match="is a folder"):
        cli.require_file(tmp_path, "--model")


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
    from lenet_tf import train

    with pytest.raises(SystemExit) as exit_info:
        train.build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_train_boolean_flags_can_be_turned_off_whatever_the_defaults():
    from lenet_tf import train

    args = train.build_parser().parse_args(
        ["--no-ema", "--no-distort", "--no-deterministic", "--no-validation", "--no-mixed-precision"]
    )
    assert not (args.ema or args.distort or args.deterministic or args.validation or args.mixed_precision)
    assert isinstance(train.build_parser(), argparse.ArgumentParser)
