"""compaudit: audit compressed image classifiers for subgroup harm before they ship.

The top-level package re-exports the table contracts and the analysis, which need only
NumPy, pandas and SciPy; datasets and models live in ``compaudit.data`` and
``compaudit.models`` and import torch.
"""

__version__ = "0.1.0"

from compaudit.analysis import (  # noqa: E402
    AnalysisOptions,
    AnalysisResult,
    Population,
    analyze,
    analyze_files,
    build_population,
)
from compaudit.errors import AuditInputError  # noqa: E402
from compaudit.tables import (  # noqa: E402
    read_examples,
    read_predictions,
    validate_examples,
    validate_predictions,
    write_examples,
    write_predictions,
)

__all__ = [
    "AnalysisOptions",
    "AnalysisResult",
    "AuditInputError",
    "Population",
    "analyze",
    "analyze_files",
    "build_population",
    "read_examples",
    "read_predictions",
    "validate_examples",
    "validate_predictions",
    "write_examples",
    "write_predictions",
    "__version__",
]
