"""Variants of the `fast` recipe, three seeds each, trained on an accelerator: test error per run.

Usage:

    KERAS_BACKEND=jax python -m benchmarks.recipe_sweep --data-dir ../shared/data/mnist \
        --out sweep.jsonl [--budget-seconds 270]

Each variant changes some settings of `FORMER_FAST`, the recipe the sweep improved on
(`benchmarks.accelerator.train_recipe` with the `scan` loop: a 6-epoch run takes 2-7 s on an
H200, so a whole sweep fits in minutes). One JSON line per run is appended to `--out` as soon
as it ends (its `settings`: what it changed of the `fast` recipe); no run starts after
`--budget-seconds`. `docs/training-log.md` ("AdamW") has the table this produced and how its best
variants did with `lenet-tf train` on the CPU.
"""

import json
import time

from benchmarks.accelerator import LOOPS, check_loops_backend, train_recipe
from lenet_tf.commands import base

# What `fast` was when the sweep ran; each variant changes some of it, over the `fast` recipe's
# other settings (6 epochs, one-cycle, weight average). Explicit, so that the sweep still means
# what `docs/training-log.md` reports now that `fast` is its winner, with Muon and the MAP loss's
# j = 2 since.
FORMER_FAST = {
    "optimizer": "adamw", "batch_size": 128, "learning_rate": 1e-2, "weight_decay": 0.05, "map_j": 1.0,
}  # fmt: skip
SIX_EPOCH_VARIANTS = (
    {}, {"weight_decay": 0.1},
    {"batch_size": 64, "learning_rate": 5e-3}, {"batch_size": 64, "learning_rate": 5e-3, "weight_decay": 0.1},
    {"learning_rate": 1.5e-2, "weight_decay": 0.1}, {"learning_rate": 7e-3, "weight_decay": 0.1},
    {"weight_decay": 0.2}, {"batch_size": 64, "learning_rate": 8e-3, "weight_decay": 0.1},
    {"batch_size": 64, "learning_rate": 3e-3}, {"ema": False}, {"map_j": 2.0}, {"map_j": 0.5},
    {"schedule": "cosine", "weight_decay": 0.1}, {"batch_size": 256, "learning_rate": 2e-2, "weight_decay": 0.1},
    {"batch_size": 32, "learning_rate": 3e-3}, {"batch_size": 64, "learning_rate": 5e-3, "weight_decay": 0.2},
)  # fmt: skip
TWO_EPOCH_VARIANTS = (
    {"batch_size": 32, "learning_rate": 8e-3, "weight_decay": 0.1},
    {"batch_size": 32, "learning_rate": 1.2e-2, "weight_decay": 0.1},
    {"batch_size": 16, "learning_rate": 4e-3, "weight_decay": 0.1},
)
SEEDS = (0, 1, 2)


def runs():
    """`(settings, epochs, seed)` in the order they run: every seed of a variant together.

    `settings` are `FORMER_FAST` with the variant's changes, for `train_recipe("fast", ...)`.
    """
    six = [(variant, 6, seed) for variant in SIX_EPOCH_VARIANTS for seed in SEEDS]
    two = [(variant, 2, 0) for variant in TWO_EPOCH_VARIANTS]
    return [({**FORMER_FAST, **variant}, epochs, seed) for variant, epochs, seed in six + two]


def build_parser(prog=None):
    parser = base.ArgumentParser(prog=prog, description="Trains variants of the fast recipe; test error per run.")
    base.add_data_dir_argument(parser)
    parser.add_argument("--out", required=True, help="JSON-lines file the runs are appended to")
    parser.add_argument("--budget-seconds", type=base.positive_float, default=float("inf"),
                        help="start no run after this many seconds")  # fmt: skip
    parser.add_argument("--loop", choices=LOOPS, default="scan")
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    from lenet_tf.data import load_mnist

    check_loops_backend([args.loop], "loop")
    start, data = time.perf_counter(), load_mnist(args.data_dir)
    with open(args.out, "a") as out:
        for settings, epochs, seed in runs():
            if time.perf_counter() - start > args.budget_seconds:
                print("budget spent: later runs skipped")
                break
            run = train_recipe("fast", data, "float32", epochs, seed, args.loop, **settings)
            out.write(json.dumps(run) + "\n")
            out.flush()
            print(f"{epochs} epochs, seed {seed}, {settings}: {100 * run['test_error']:.2f}%", flush=True)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
