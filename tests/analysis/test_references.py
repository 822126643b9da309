"""Published constants: one home, the old import paths still work."""

from __future__ import annotations

import subprocess
import sys

from compaudit import references


def test_celeba_joint_is_the_test_split_of_table_1():
    # Column sums # non-PIE + # PIE of Hooker et al. Table 1; the split has 19,962 images.
    assert sum(references.CELEBA_TEST_JOINT.values()) == 19962
    assert references.CELEBA_TEST_JOINT[(True, True, False)] == 57 + 5


def test_alexnet_reference_covers_the_15_mce_corruptions():
    assert len(references.ALEXNET_ERRORS) == 15
    assert all(references.ALEXNET_CLEAN_ERROR < e < 1 for e in references.ALEXNET_ERRORS.values())


def test_old_modules_re_export_the_same_objects():
    from compaudit import simulate
    from compaudit.analysis import robustness

    assert simulate.CELEBA_TEST_JOINT is references.CELEBA_TEST_JOINT
    assert robustness.ALEXNET_ERRORS is references.ALEXNET_ERRORS
    assert robustness.ALEXNET_CLEAN_ERROR == references.ALEXNET_CLEAN_ERROR


def test_references_do_not_import_torch():
    code = "import sys, compaudit.references; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_alexnet_per_severity_errors_average_to_the_published_means():
    by_sev = references.ALEXNET_ERRORS_BY_SEVERITY
    assert set(by_sev) == set(references.ALEXNET_ERRORS)
    for corruption, errors in by_sev.items():
        assert len(errors) == 5
        assert abs(sum(errors) / 5 - references.ALEXNET_ERRORS[corruption]) < 1e-6, corruption
