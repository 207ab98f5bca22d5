"""Wall time of the default problem run until every task is decided (or the seed cap), one command.

    python bench/until_decisive.py [--first 32] [--max-seeds 128] [--gpus-per-trial 1]
                                   [--arms-per-trial 256] [--space default]

Runs ``python -m orchestrator.sweep --space default --until-decisive --seeds 0..first-1
--max-seeds CAP`` in-process on an embedded local Ray (start-up of every block included) and
prints, per look, the seconds since the start, then the decisions from ``NAME.sequential.json``
and the total wall time (issue 9's GPU goal: ≤ 10 minutes on one H200). Check the script on a CPU
with a small space: ``--space smoke --first 2 --max-seeds 4 --gpus-per-trial 0``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.sweep import main as sweep  # noqa: E402


class Timestamped(io.TextIOBase):
    """stdout that prefixes each line with the seconds since ``start`` (so each look is timed)."""

    def __init__(self, out, start: float) -> None:
        self.out, self.start, self.fresh = out, start, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            if self.fresh:
                self.out.write(f"[{time.perf_counter() - self.start:7.1f}s] ")
            self.out.write(piece)
            self.fresh = piece.endswith("\n")
        self.out.flush()
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="default")
    parser.add_argument("--first", type=int, default=32, help="seeds in the first block (and each block)")
    parser.add_argument("--max-seeds", type=int, default=128, help="the sequential cap")
    parser.add_argument("--gpus-per-trial", default="1")
    parser.add_argument("--arms-per-trial", default="auto")
    parser.add_argument("--storage", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        storage = args.storage or stack.enter_context(tempfile.TemporaryDirectory(prefix="until-decisive-"))
        flags = ["--space", args.space, "--until-decisive", "--seeds", ",".join(map(str, range(args.first))),
                 "--max-seeds", str(args.max_seeds), "--storage", storage, "--name", "decisive",
                 "--gpus-per-trial", args.gpus_per_trial, "--arms-per-trial", args.arms_per_trial]
        start = time.perf_counter()
        with contextlib.redirect_stdout(Timestamped(sys.stdout, start)):
            code = sweep(flags)
        wall = time.perf_counter() - start
        record = json.loads((Path(storage) / "decisive.sequential.json").read_text())
        last = record["blocks"][-1]
        print(f"\nexit {code}; {len(record['blocks'])} look(s), {last['seeds']} seeds of a cap of "
              f"{record['max_seeds']}; wall time {wall:,.0f} s ({wall / 60:.1f} min), Ray start-up of every "
              f"block included")
        for task, verdict in last["verdicts"].items():
            decided = record["decided"].get(task)
            print(f"  {task}: {decided['verdict'] + ' at look ' + str(decided['look']) if decided else verdict}")


if __name__ == "__main__":
    main()
