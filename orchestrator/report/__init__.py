"""The report of ``python -m orchestrator.analyze``: a pure renderer of a finished Analysis.

figures.py draws, tables.py lays out rows of text, render.py writes report.html, report.md,
benefit.csv, configs.csv and the PNG figures. Nothing here computes a statistic, and nothing in
the analysis imports the report.
"""
from orchestrator.report.render import write_report

__all__ = ["write_report"]
