"""Command line: a thin layer over the Python API.

Exit codes: 0 success, 1 the gate found a regression, 2 bad input or usage (one line
per problem, no traceback unless ``--debug``), 3 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Sequence

from compaudit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, AuditInputError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its one-line message."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised via CLI tests
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"compaudit: error: {message}\n")


def _attributes(text: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated attribute names")
    return tuple(a[len("attr."):] if a.startswith("attr.") else a for a in names)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="compaudit", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    an = sub.add_parser(
        "analyze",
        help="analyze examples + predictions tables into metrics.json and tables/",
        description="Analyze an examples table and a predictions table (Parquet or CSV).",
    )
    an.add_argument("--examples", required=True, type=Path, help="examples.parquet or .csv")
    an.add_argument("--predictions", required=True, type=Path, help="predictions table")
    an.add_argument("--out", required=True, type=Path, help="output folder")
    an.add_argument("--dense", default="dense", help="name of the dense variant")
    an.add_argument("--protected", type=_attributes, default=None,
                    help="comma-separated protected attributes (default: every attr.* column)")
    an.add_argument("--positive-label", type=int, default=1, help="positive class (binary)")
    an.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: off)")
    an.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    an.add_argument("--num-classes", type=int, default=None, help="number of classes")
    an.add_argument("--shift", default="clean", help="shift analysed for classes/PIE/subgroups")
    an.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    an.set_defaults(func=_cmd_analyze)
    return parser


def _cmd_analyze(args: argparse.Namespace) -> int:
    from compaudit.analysis.audit import AnalysisOptions, analyze_files
    from compaudit.analysis.summary import format_summary

    options = AnalysisOptions(
        dense=args.dense, protected=args.protected, positive_label=args.positive_label,
        n_boot=args.bootstrap, seed=args.seed, num_classes=args.num_classes, shift=args.shift,
    )
    result = analyze_files(args.examples, args.predictions, options,
                           progress=not args.no_progress)
    path = result.write(args.out)
    print(format_summary(result.metrics))
    print(f"\nwrote {path} and {len(result.tables)} tables in {Path(args.out) / 'tables'}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compaudit`` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except AuditInputError as err:
        if args.debug:
            traceback.print_exc()
        for problem in err.problems:
            print(f"compaudit: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the documented exit code for internal errors
        traceback.print_exc()
        print("compaudit: internal error (exit 3); please report it with the trace above",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
