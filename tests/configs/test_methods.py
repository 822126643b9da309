"""The method registry: complete whichever configs module a program imports first."""

from __future__ import annotations

import subprocess
import sys

import pytest

EVERY = ["bfloat16", "constrained_finetune", "float16", "gradual_magnitude", "int8_static",
         "int8_weight_only", "load", "lottery", "one_shot_magnitude", "random", "unit"]


@pytest.mark.parametrize("module", ["methods", "pruning", "quantization", "compress"])
def test_importing_any_configs_module_registers_every_method(module):
    code = (f"import compaudit.configs.{module}\n"
            "from compaudit.configs.methods import METHODS\n"
            "print(sorted(METHODS.names()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(EVERY)
