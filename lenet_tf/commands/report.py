"""`lenet-tf report RUN_DIR`: a training run drawn as PNG plots (see `lenet_tf.reporting`)."""

from lenet_tf.commands import base


def build_parser(prog=None):
    parser = base.ArgumentParser(
        prog=prog or "python -m lenet_tf.report",
        description="Draw a training run as PNG plots: training curves, confusion matrix, all "
        "misclassified test digits, C1/C3 feature maps of a test 3, the RBF prototypes and the C3 "
        "connection table.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by lenet-tf train")
    base.add_data_dir_argument(parser)
    parser.add_argument("--out", metavar="DIR", help="folder for the PNG files (default: RUN_DIR/report)")
    parser.add_argument("--compare", nargs="+", default=(), metavar="OTHER_RUN",
                        help="also draw comparison.png: the test error after each pass of RUN_DIR "
                             "and of these runs (say, --optimizer sdlm against the default)")  # fmt: skip
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    from lenet_tf.reporting import write_report

    result = write_report(args.run_dir, args.data_dir, args.out, args.compare)
    for path in result["files"]:
        print(path)
    print(f"test error {100 * result['test_error']:.2f}% ({result['errors']} misclassified)")
    return 0


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)
