"""compaudit: audit compressed image classifiers for subgroup harm before they ship."""

__version__ = "0.1.0"
