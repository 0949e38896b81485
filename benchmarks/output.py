"""How a benchmark command reports: its Markdown table on stdout, every figure in `--json`."""

from lenet_tf.commands import base


def add_json_argument(parser):
    """--json FILE, for every benchmark command; checked before any measurement."""
    parser.add_argument("--json", metavar="FILE", type=base.output_file,
                        help="also write every figure to this JSON file")  # fmt: skip


def report(table, result, json_path=None):
    """Prints `table` and, with `json_path`, writes `result` there (atomically).

    Args:
        table: The Markdown the command shows.
        result: Every figure, JSON-serialisable.
        json_path: The `--json` file, or None.
    """
    print(table)
    if json_path:
        from lenet_tf.files import write_json

        write_json(json_path, result)
