"""Does sharing help? The analysis of a sweep's Parquet results, without Ray.

load (run directories -> RunData) → pairing (shared trial ↔ independent trial, at which
iteration) → estimates (per configuration, pooled, per mode, α, budget) and verdicts (gain /
negative transfer without selection) → result (``analyze``: the frozen Analysis) → headline.
Statistics in ``stats``; conventions in CONVENTIONS.md; rendering in orchestrator.report.
"""
from orchestrator.analysis.headline import fmt_ci, headline
from orchestrator.analysis.load import AnalysisError, RunData, load_runs
from orchestrator.analysis.result import Analysis, analyze
from orchestrator.analysis.verdicts import NO_VERDICT_PBT

__all__ = ["NO_VERDICT_PBT", "Analysis", "AnalysisError", "RunData", "analyze", "fmt_ci", "headline", "load_runs"]
