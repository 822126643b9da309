"""Command line: a thin layer over the Python API.

Exit codes: 0 success, 1 the gate found a regression, 2 bad input or usage (one line
per problem, no traceback unless ``--debug``), 3 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from compaudit.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REGRESSION,
    AuditInputError,
)

__all__ = ["main"]

_Options = TypeVar("_Options")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its one-line message."""

    def error(self, message: str) -> NoReturn:  # pragma: no cover - exercised via CLI tests
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
    for add in (_add_analyze, _add_screen, _add_gate, _add_run, _add_report, _add_record):
        add(sub)
    return parser


def _add_analyze(sub: Any) -> None:
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
    an.add_argument("--max-order", type=int, default=None, metavar="N",
                    help="intersect at most N protected attributes per subgroup (default: "
                         "every order with up to 4 attributes, else 2)")
    an.add_argument("--about", default="procedure", choices=("procedure", "models"),
                    help="what the intervals are about: 'procedure' (default; with paired "
                         "replicas they cover seed-to-seed variation) or 'models' (the "
                         "models at hand are fixed artifacts: the examples only)")
    an.add_argument("--dissection", type=Path, default=None, metavar="UNITS",
                    help="per-unit dissection table (a run's variants/*/dissection.parquet, "
                         "concatenated): adds the dissection block")
    an.add_argument("--dissection-concepts", type=Path, default=None, metavar="CONCEPTS",
                    help="concept table of the dissection (dissection_concepts.csv)")
    an.add_argument("--dissection-config", type=Path, default=None, metavar="CONFIG.json",
                    help="JSON object describing the dissection, with iou_threshold "
                         "(a run's metrics.json holds it under dissection.config)")
    an.add_argument("--embeddings", type=Path, default=None, metavar="FILE",
                    help="a feature vector per analysed example (.npz with example_id and "
                         "features, or a Parquet/CSV table with example_id and numeric "
                         "columns): adds slice discovery (tables/slices.csv, "
                         "slice_members.csv)")
    an.add_argument("--n-slices", type=int, default=None, metavar="K",
                    help="slices per variant with --embeddings (default 8)")
    an.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    an.set_defaults(func=_cmd_analyze)


def _add_screen(sub: Any) -> None:
    sc = sub.add_parser(
        "screen",
        help="pre-compression risk screen from the dense population alone",
        description="Score every example's risk of being hurt by compression from the "
                    "dense replicas' predictions (entropy of their mean prediction), and "
                    "summarize it per attribute cell. Reads only the dense variant's rows; "
                    "rows of other variants are validated, then ignored.",
    )
    sc.add_argument("--examples", required=True, type=Path, help="examples.parquet or .csv")
    sc.add_argument("--predictions", required=True, type=Path,
                    help="predictions table (the dense variant's rows are read)")
    sc.add_argument("--out", type=Path, default=Path("screen"),
                    help="output folder (default ./screen)")
    sc.add_argument("--dense", default="dense", help="name of the dense variant")
    sc.add_argument("--protected", type=_attributes, default=None,
                    help="comma-separated protected attributes (default: every attr.* column)")
    sc.add_argument("--top", type=float, default=0.05,
                    help="fraction of examples flagged at risk (default 0.05)")
    sc.add_argument("--shift", default="clean", help="shift of the examples scored")
    sc.set_defaults(func=_cmd_screen)


def _add_gate(sub: Any) -> None:
    gt = sub.add_parser(
        "gate",
        help="check a run's metrics.json against a policy; exit 1 on a regression",
        description="Policy checks with simultaneous intervals; writes gate.json, junit.xml "
                    "and summary.md (also appended to $GITHUB_STEP_SUMMARY when set).",
    )
    gt.add_argument("run_dir", type=Path, help="run folder holding metrics.json (or the file)")
    gt.add_argument("--policy", type=Path, default=None,
                    help="TOML file with a [gate] table (default: built-in policy)")
    gt.add_argument("--baseline", type=Path, default=None,
                    help="metrics.json of a previous release to compare against")
    gt.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/gate)")
    gt.add_argument("--show-passed", action="store_true", help="list passed checks too")
    gt.set_defaults(func=_cmd_gate)


def _add_run(sub: Any) -> None:
    rn = sub.add_parser("run", help="run an audit spec (TOML) end to end",
                        description="Run every stage of an audit spec into one run folder; "
                                    "finished stages are skipped, so a killed run resumes.")
    rn.add_argument("spec", type=Path, help="audit spec, e.g. audits/demo.toml")
    rn.add_argument("--dry-run", action="store_true",
                    help="validate the spec and print the plan; run nothing (= compaudit check)")
    _run_options(rn, default_out=None)
    rn.set_defaults(func=_cmd_run)

    ck = sub.add_parser("check", help="validate an audit spec and print its plan",
                        description="Validate an audit spec (every mistake at once, naming "
                                    "file and key; model files checked from their headers) "
                                    "and print the stages, replicas, variants and files it "
                                    "would use. Runs and writes nothing.")
    ck.add_argument("spec", type=Path, help="audit spec, e.g. audits/demo.toml")
    ck.add_argument("--out", type=Path, default=None,
                    help="run folder the plan is for (default: reports/<audit name>)")
    ck.set_defaults(func=_cmd_check)

    dm = sub.add_parser("demo", help="the embedded default audit on synthetic faces",
                        description="Generate synthetic faces, train a population, compress "
                                    "it four ways, analyze, gate and write the report.")
    dm.add_argument("--no-spurious", action="store_true",
                    help="control: the same audit on data without the planted harm "
                         "(hair length independent of gender)")
    _run_options(dm, default_out=None)
    dm.set_defaults(func=_cmd_demo)


def _add_report(sub: Any) -> None:
    rp = sub.add_parser("report", help="render RUN_DIR/report.html from a run folder")
    rp.add_argument("run_dir", type=Path, help="run folder holding metrics.json")
    rp.add_argument("--out", type=Path, default=None, help="HTML file (default RUN_DIR/report.html)")
    rp.add_argument("--pdf", action="store_true", help="also print a PDF with headless Chromium")
    rp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rp.set_defaults(func=_cmd_report)


def _add_record(sub: Any) -> None:
    vf = sub.add_parser(
        "verify", help="check a run folder against its audit_record.json; exit 1 on a change",
        description="Re-hash every file of RUN_DIR/audit_record.json and re-judge "
                    "metrics.json under the recorded policy. Exit 0 when everything "
                    "matches, 1 naming each changed file or a differing verdict, 2 when "
                    "the folder has no record.")
    vf.add_argument("run_dir", type=Path, help="run folder holding audit_record.json")
    vf.set_defaults(func=_cmd_verify)

    cd = sub.add_parser(
        "card", help="write the model card sections an audit fills (needs the 'card' extra)",
        description="Write a Hugging Face model card from a run folder: evaluation results "
                    "in the YAML front matter, bias, risks and limitations, and what the "
                    "audit covered. Nothing is fetched from the network.")
    cd.add_argument("run_dir", type=Path, help="run folder holding metrics.json and gate/")
    cd.add_argument("--out", type=Path, default=None,
                    help="card to write (default RUN_DIR/model_card.md; with --into: that file)")
    cd.add_argument("--into", type=Path, default=None, metavar="EXISTING.md",
                    help="fill or replace compaudit's sections of an existing card, leaving "
                         "the rest byte for byte")
    cd.set_defaults(func=_cmd_card)


def _run_options(p: argparse.ArgumentParser, *, default_out: Path | None) -> None:
    p.add_argument("--out", type=Path, default=default_out,
                   help="run folder (default: reports/<audit name>)")
    p.add_argument("--executor", choices=("local", "ray", "serial"), default=None,
                   help="override the spec's [executor].kind")
    p.add_argument("--ray-address", default=None, help="address of a running Ray cluster")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _options(cls: Callable[..., _Options], **values: object) -> _Options:
    """Build a config from command-line values; its mistakes name the options."""
    from compaudit.config import ConfigError

    try:
        return cls(**values)
    except ConfigError as err:
        raise AuditInputError([f"option --{key.replace('_', '-')}: {message}" if key
                               else f"options: {message}" for key, message in err.items]) from err


def _cmd_analyze(args: argparse.Namespace) -> int:
    from compaudit.analysis.audit import AnalysisOptions, analyze_files
    from compaudit.analysis.dissection import read_dissection_config
    from compaudit.analysis.slice_audit import SliceSettings
    from compaudit.analysis.summary import format_summary
    from compaudit.config import check_int
    from compaudit.record import record_analysis

    problem = (check_int("option --max-order", args.max_order, minimum=1)
               if args.max_order is not None else None)
    if problem is not None:
        raise AuditInputError(problem)
    slices = {} if args.n_slices is None else {"n_slices": args.n_slices}
    options = _options(
        AnalysisOptions, dense=args.dense, protected=args.protected,
        positive_label=args.positive_label, bootstrap=args.bootstrap, seed=args.seed,
        num_classes=args.num_classes, shift=args.shift, max_intersection_order=args.max_order,
        about=args.about, slices=_options(SliceSettings, enabled=args.embeddings is not None,
                                          **slices),
    )
    config = (read_dissection_config(args.dissection_config)
              if args.dissection_config is not None else None)
    result = analyze_files(args.examples, args.predictions, options,
                           progress=not args.no_progress, dissection=args.dissection,
                           dissection_concepts=args.dissection_concepts,
                           dissection_config=config, embeddings=args.embeddings)
    path = result.write(args.out)
    record = record_analysis(args.out, examples=args.examples, predictions=args.predictions,
                             seed=args.seed, embeddings=args.embeddings)
    print(format_summary(result.metrics))
    print(f"\nwrote {path}, {len(result.tables)} tables in {Path(args.out) / 'tables'} "
          f"and {record}")
    return EXIT_OK


def _cmd_screen(args: argparse.Namespace) -> int:
    from compaudit.analysis.screen import format_screen, screen_files

    result = screen_files(args.examples, args.predictions, dense=args.dense,
                          protected=args.protected, top=args.top, shift=args.shift)
    paths = result.write(args.out)
    print(format_screen(result))
    print(f"\nwrote {paths['scores']}, {paths['groups']} and {paths['summary']}")
    return EXIT_OK


def _run_spec(spec, args: argparse.Namespace) -> int:
    import time

    from compaudit.pipeline import run_audit

    out = args.out or Path("reports") / spec.name
    start = time.perf_counter()
    result = run_audit(spec, out, executor=args.executor, ray_address=args.ray_address,
                       progress=not args.no_progress)
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    method = result.metrics.subgroup_method
    if method is not None and method.note:
        print(f"\ninference: {method.note}.")
    if method is not None and method.warning:
        print(f"compaudit: warning: {method.warning}.", file=sys.stderr)
    print("\ntime per step (wall / CPU): " + ", ".join(
        f"{step} {t['wall_s']:.0f} s / {t['cpu_s']:.0f} s" for step, t in result.timings.items()))
    print(f"verdict: {result.verdict.upper()} (exit {result.exit_code}) in "
          f"{int(minutes)} min {seconds:.0f} s; stages run: {', '.join(result.stages_run) or 'none'}")
    print(f"report: {result.report}")
    return result.exit_code


def _cmd_run(args: argparse.Namespace) -> int:
    from compaudit.spec import load_spec

    if args.dry_run:
        return _cmd_check(args)
    return _run_spec(load_spec(args.spec), args)


def _cmd_check(args: argparse.Namespace) -> int:
    from compaudit.pipeline.plan import describe_plan, preflight
    from compaudit.spec import load_spec

    spec = load_spec(args.spec)
    out = args.out or Path("reports") / spec.name
    preflight(spec, out, executor=getattr(args, "executor", None),
              ray_address=getattr(args, "ray_address", None))
    print(describe_plan(spec, out))
    print("\nspec OK: nothing was run or written")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from compaudit.spec import demo_spec

    spec = demo_spec(spurious=not args.no_spurious)
    return _run_spec(spec, args)


def _cmd_report(args: argparse.Namespace) -> int:
    from compaudit.record import record_outputs
    from compaudit.report import render_report
    from compaudit.rundir import RunFolder

    path = render_report(args.run_dir, out=args.out, pdf=args.pdf,
                         progress=not args.no_progress)
    if Path(path).absolute() == RunFolder(args.run_dir).report.absolute():
        record_outputs(args.run_dir, "report", [path])  # the record follows its report
    print(f"wrote {path}" + (f" and {path.with_suffix('.pdf')}" if args.pdf else ""))
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    import os

    from compaudit.gate import run_gate
    from compaudit.gate.operating import variants_info
    from compaudit.gate.outputs import format_table, to_markdown, write_gate_outputs
    from compaudit.gate.policy import GatePolicy, load_policy
    from compaudit.record import record_gate
    from compaudit.schema import read_metrics

    metrics = read_metrics(args.run_dir)
    baseline = read_metrics(args.baseline, what="baseline metrics") if args.baseline else None
    policy = load_policy(args.policy) if args.policy else GatePolicy()
    run_dir = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
    result = run_gate(metrics, policy, baseline=baseline, variants_info=variants_info(run_dir))
    gate_dir = args.out or run_dir / "gate"
    paths = write_gate_outputs(result, gate_dir)
    record = record_gate(run_dir, gate_dir=gate_dir, policy=policy,
                         policy_source=str(args.policy or "built-in policy"),
                         policy_file=args.policy, baseline=args.baseline,
                         verdict=result.verdict)
    print(format_table(result, show_passed=args.show_passed))
    print(f"\nwrote {paths['junit']}, {paths['markdown']}, {paths['json']} and {record}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(to_markdown(result))
    return result.exit_code


def _cmd_verify(args: argparse.Namespace) -> int:
    from compaudit.record import verify

    result = verify(args.run_dir)
    for problem in result.problems:
        print(f"compaudit: changed: {_one_line(problem)}", file=sys.stderr)
    if not result.ok:
        print(f"verify: FAILED: {len(result.problems)} problem(s) in {result.record}")
        return EXIT_REGRESSION
    verdict = f"; verdict {result.verdict.upper()} re-judged" if result.verdict else ""
    print(f"verify: OK: {result.files} files match {result.record}{verdict}")
    return EXIT_OK


def _cmd_card(args: argparse.Namespace) -> int:
    from compaudit.report.card import write_card

    path = write_card(args.run_dir, out=args.out, into=args.into)
    print(f"wrote {path}")
    return EXIT_OK


def _one_line(text: str) -> str:
    """A message on one printable line (bytes quoted from a bad file stay visible)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


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
            print(f"compaudit: error: {_one_line(problem)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # the file system said no: a path the user gave or a full disk
        if args.debug:
            traceback.print_exc()
        where = f"{err.filename}: " if err.filename else ""
        print(f"compaudit: error: {_one_line(where)}{err.strerror or err}; expected a readable "
              "input and a writable output folder with free space", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the documented exit code for internal errors
        traceback.print_exc()
        print("compaudit: internal error (exit 3); please report it with the trace above",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
