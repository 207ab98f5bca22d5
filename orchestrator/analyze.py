"""``python -m orchestrator.analyze RUN_DIR [RUN_DIR ...] [--out DIR] [--metric fid]``: does sharing help?

Reads the Parquet results of one or more sweeps (pooled), prints the headline and writes
report.html (self-contained), report.md, benefit.csv, configs.csv and the PNG figures to
``--out`` (default ``<first run>/report``). What is computed and why: CONVENTIONS.md and the
README's "The analysis". Bad input (missing path, foreign directory, unknown schema version,
no baseline arm, everything diverged, unknown metric) is one line on stderr and exit code 2,
before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator.analysis import AnalysisError, analyze, headline, load_runs
from orchestrator.schema import METRIC_NAMES, METRICS_DIR, REPORT_DIR, is_uri, location_name
from trainables.cli import OneLineParser, UsageError


DESCRIPTION = """\
Does sharing help? Reads the Parquet results of one or more sweeps (pooled; a run still in
progress is read as it stands), pairs each shared trial with the independent trial of its
seed, and reports the benefit per task with simultaneous confidence intervals, ΔMTL per
configuration, the effect of alpha, lambda and mode, budget and learning curves and sample
grids. Prints the headline and writes report.html, report.md, benefit.csv, configs.csv and
the figures to --out."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m orchestrator.analyze", description=DESCRIPTION)
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories <storage>/<name> written by orchestrator.sweep (pooled); a URI "
                             "such as s3://bucket/prefix/name is read in place")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <first run>/report; for a URI ./results/<name>/report)")
    parser.add_argument("--metric", default="fid",
                        help=f"the metric compared: one of {', '.join(METRIC_NAMES)} (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples, >= 2000 (default: %(default)s)")
    parser.add_argument("--rng-seed", type=int, default=0,
                        help="seed of the bootstrap's random generator (default: %(default)s)")
    parser.add_argument("--test", choices=("t", "signflip"), default="t",
                        help="the primary family's test over seeds: Student t on the log ratio, or signflip, "
                             "an exact permutation test within seeds (it flips the signs of the per seed log "
                             "ratios) that assumes no normality (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10,
                        help="rows of the top-configuration tables, >= 1 (default: %(default)s)")
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    if args.metric not in METRIC_NAMES:
        raise AnalysisError(f"unknown --metric {args.metric!r}; choose one of {', '.join(METRIC_NAMES)}")
    if args.resamples < 2000:
        raise AnalysisError(f"--resamples must be >= 2000, got {args.resamples}")
    if args.top < 1:
        raise AnalysisError(f"--top must be >= 1, got {args.top}")


def _output_dir(out: Path | None, first_run: Path | str, runs: list[Path | str] = ()) -> Path:
    """--out, else <first run>/report; for a URI ./results/<name>/report, where `aws s3 sync` would
    put the run. Refused unless it is (or can be made) a writable directory."""
    if out is None:
        out = (first_run / REPORT_DIR if isinstance(first_run, Path)
               else Path("results") / location_name(first_run) / REPORT_DIR)
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {out} exists and is not a directory")
    for run in runs:  # files there would join the run's dataset and break every later analysis
        if isinstance(run, Path) and out.resolve().is_relative_to((run / METRICS_DIR).resolve()):
            raise AnalysisError(f"--out {out} is inside the run's {METRICS_DIR}/ ({run / METRICS_DIR}); "
                                f"choose a directory outside it")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise AnalysisError(f"--out {out}: {existing} is not writable; pass a writable --out DIR")
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_numbers(args)
        runs = list(dict.fromkeys(r.rstrip("/") if is_uri(r) else Path(r).resolve() for r in args.runs))
        out = _output_dir(args.out, runs[0], runs)
        data = load_runs(runs, args.metric)
        result = analyze(data, resamples=args.resamples, rng_seed=args.rng_seed, test=args.test)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from orchestrator import report  # matplotlib only when there is something to draw

    try:
        paths = report.write_report(result, out, top=args.top)
    except OSError as exc:
        print(f"error: cannot write the report to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line in headline(result):
        print(line)
    print(f"Report: {paths['html']} (also report.md, benefit.csv, configs.csv, figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
