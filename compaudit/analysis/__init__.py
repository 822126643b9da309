"""Analyses of a population's predictions: NumPy and pandas only, never torch."""

from compaudit.analysis.audit import AnalysisResult, analyze, analyze_files
from compaudit.analysis.options import AnalysisOptions
from compaudit.analysis.population import Population, build_population

__all__ = [
    "AnalysisOptions",
    "AnalysisResult",
    "Population",
    "analyze",
    "analyze_files",
    "build_population",
]
