"""The command line of tools.toydata (``python -m tools.toydata --help``): one maker per part, then one summary line."""
import argparse
import sys
from typing import Callable, Dict, List, Optional

from tools.toydata.output import MIN_SIZE, OutputError, _Output
from tools.toydata.p1 import P1_KINDS, P1_MAX_CLASSES, P1_SHAPES, make_p1_data
from tools.toydata.p2 import make_p2_data


def _make_p1_from_args(args: argparse.Namespace) -> str:
    """Run make_p1_data for the CLI and return its part of the summary line."""
    root = make_p1_data(args.out, mini_size=args.p1_mini_size, num_classes=args.p1_classes,
                        mini_per_class=args.p1_mini_per_class,
                        office_train_per_class=args.p1_office_per_class,
                        office_val_per_class=args.p1_office_val_per_class, seed=args.seed, kind=args.p1_kind)
    return "p1 ({}): {} classes, {} mini {}x{} + {} office train + {} office val images in {}".format(
        args.p1_kind, args.p1_classes, args.p1_classes * args.p1_mini_per_class, args.p1_mini_size, args.p1_mini_size,
        args.p1_classes * args.p1_office_per_class, args.p1_classes * args.p1_office_val_per_class, root)


def _make_p2_from_args(args: argparse.Namespace) -> str:
    """Run make_p2_data for the CLI and return its part of the summary line."""
    root = make_p2_data(args.out, size=args.size, num_train=args.num, num_val=args.num_val, seed=args.seed)
    return "p2: {} train + {} validation {}x{} pairs in {}".format(args.num, args.num_val, args.size,
                                                                  args.size, root)


# CLI part name -> maker, in the order the parts are written by default.
PART_MAKERS: Dict[str, Callable[[argparse.Namespace], str]] = {"p1": _make_p1_from_args,
                                                               "p2": _make_p2_from_args}


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m tools.toydata",
                                     description="Generate synthetic data in the homework's layout.")
    parser.add_argument("--out", required=True,
                        help="output root; p1_data/ and p2_data/ are created inside it")
    parser.add_argument("--seed", type=int, default=0,
                        help="non-negative seed; same seed, same bytes (default: %(default)s)")
    parser.add_argument("--parts", nargs="+", default=list(PART_MAKERS), choices=sorted(PART_MAKERS),
                        help="which problems' data to write (default: {})".format(" ".join(PART_MAKERS)))
    p1 = parser.add_argument_group("problem 1 (mini / office classification data)")
    p1.add_argument("--p1-kind", choices=P1_KINDS, default="objects",
                    help="objects: classes of shape x colour x texture under heavy nuisance; shapes: "
                         "upright light shapes on a dark ground, one class per shape (at most 7), the kind on "
                         "which a short DINO run learns (default: %(default)s)")
    p1.add_argument("--p1-classes", type=int, default=8,
                    help="latent classes, 1..{} (real: 64 mini, 65 office) (default: %(default)s)".format(
                        P1_MAX_CLASSES))
    p1.add_argument("--p1-mini-per-class", type=int, default=40,
                    help="unlabeled mini images per class (real: 600) (default: %(default)s)")
    p1.add_argument("--p1-office-per-class", type=int, default=12,
                    help="labeled office train images per class (real: ~61) (default: %(default)s)")
    p1.add_argument("--p1-office-val-per-class", type=int, default=4,
                    help="labeled office val images per class (real: ~6) (default: %(default)s)")
    p1.add_argument("--p1-mini-size", type=int, default=84,
                    help="mini image side in pixels (real: 84) (default: %(default)s)")
    p2 = parser.add_argument_group("problem 2 (satellite segmentation data)")
    p2.add_argument("--size", type=int, default=64, help="tile side in pixels (real data: 512) (default: %(default)s)")
    p2.add_argument("--num", type=int, default=24, help="number of training pairs (default: %(default)s)")
    p2.add_argument("--num-val", type=int, default=8, help="number of validation pairs (default: %(default)s)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < MIN_SIZE or args.num < 0 or args.num_val < 0 or args.seed < 0:
        parser.error("need --size >= {} and non-negative --num, --num-val and --seed".format(MIN_SIZE))
    max_classes = P1_MAX_CLASSES if args.p1_kind == "objects" else len(P1_SHAPES)
    if not 1 <= args.p1_classes <= max_classes or args.p1_mini_size < MIN_SIZE \
            or min(args.p1_mini_per_class, args.p1_office_per_class, args.p1_office_val_per_class) < 0:
        parser.error("need --p1-classes in 1..{} (--p1-kind {}), --p1-mini-size >= {} and non-negative p1 "
                     "counts".format(max_classes, args.p1_kind, MIN_SIZE))
    try:
        _Output(args.out)  # refuse a file or a folder that is not ours before any part writes
        # dict.fromkeys drops repeated parts while keeping the order they were given in.
        summaries = [PART_MAKERS[part](args) for part in dict.fromkeys(args.parts)]
    except OutputError as e:
        print("toydata: error: {}".format(e), file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: one line naming the file
        print("toydata: error: cannot write {}: {}".format(e.filename or args.out, e.strerror or e), file=sys.stderr)
        return 1
    print("toydata: seed {}; {}".format(args.seed, "; ".join(summaries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
