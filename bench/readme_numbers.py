"""Regenerate the README's "What the default sweep answers" block from a named run.

    python bench/readme_numbers.py RUN_DIR [CONFIRM_DIR]

Prints, ready to paste: the command that produced the run (sweep.json), the machine it ran on
(host, CPU count, platform, from trials.parquet and this interpreter), when (sweep.json's
creation time), how long the trials took, and the analysis' headline (the answer first) exactly
as ``python -m orchestrator.analyze`` prints it. Nothing in the README's answer section should be
typed by hand: paste this output, and name the machine as shared if it was.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from orchestrator.analysis import analyze, headline, load_runs


def describe(run_dir: Path) -> list[str]:
    record = json.loads((run_dir / "sweep.json").read_text())
    data = load_runs([run_dir], "fid")
    trials = data.trials
    created = record.get("created")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created)) if created else "unknown date"
    hosts = sorted(set(trials["hostname"].dropna().astype(str))) if "hostname" in trials else []
    devices = sorted(set(trials["device"].dropna().astype(str))) if "device" in trials else []
    span = ""
    if "time_s" in trials and trials["time_s"].notna().any():
        timed = trials[trials["time_s"].notna()]
        if "group_id" in timed:  # the arms of a group carry the group's time: count it once
            timed = timed[~(timed["group_id"].notna() & timed["group_id"].duplicated())]
        span = f"; trial time {timed['time_s'].sum() / 60:.1f} CPU-min in all ({len(timed)} Tune trials)"
    return [f"run: {run_dir} ({len(trials)} trials, statuses "
            f"{ {k: int(v) for k, v in trials['status'].astype(str).value_counts().items()} })",
            f"command: {record.get('command', '?')}",
            f"when: {when}; machine: {', '.join(hosts) or '?'} ({', '.join(devices) or '?'}), this interpreter on "
            f"{platform.node()} with {os.cpu_count()} CPUs, {platform.platform()}{span}"]


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs = [Path(a) for a in argv]
    for run in runs:
        print("\n".join(describe(run)))
    print("```")
    print("\n".join(headline(analyze(load_runs(runs, "fid")))))
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
