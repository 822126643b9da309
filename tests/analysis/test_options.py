"""The analysis options: their own cross-field check (bounds are config.py's)."""

from __future__ import annotations

import pytest

from compaudit.analysis.options import AnalysisOptions
from compaudit.config import ConfigError


def test_analysis_options_name_each_attribute_once():
    with pytest.raises(ConfigError) as info:
        AnalysisOptions(protected=("Male", "Young", "Male"))
    assert info.value.items == [("protected", "got ['Male', 'Young', 'Male']; expected "
                                              "each attribute once")]
