"""`lenet-tf evaluate`: the MNIST test error of a trained model.

    lenet-tf evaluate --model runs/paper/model.keras [--data-dir DIR] [--json]
"""

import json

from lenet_tf.commands import base


def build_parser(prog=None):
    parser = base.ArgumentParser(
        prog=prog or "python -m lenet_tf.evaluate",
        description="Report the MNIST test error of a saved lenet-tf model.",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a .keras file written by lenet-tf train")
    base.add_data_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    from lenet_tf.data import load_mnist
    from lenet_tf.evaluation import evaluate_model
    from lenet_tf.saving import load_lenet5

    model = load_lenet5(args.model)
    _, (x_test, y_test) = load_mnist(args.data_dir)
    result = evaluate_model(model, x_test, y_test)
    del result["predictions"]
    result["model"] = str(args.model)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: test error {100 * result['test_error']:.2f}% "
            f"({result['errors']} of {result['examples']} misclassified)"
        )
    return 0


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)
