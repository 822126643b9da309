"""Checkpoint files: RNG states round-trip, foreign or corrupt files are refused clearly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from compaudit.errors import AuditInputError
from compaudit.models._checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


def _draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), random.random())


def test_restored_rngs_repeat_the_same_draws_after_a_weights_only_round_trip(tmp_path):
    np.random.randn()  # leaves a cached Gaussian in NumPy's state, which must survive too
    save_checkpoint(tmp_path / "c.pt", {"rng": capture_rng()})
    first = _draws()
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == first


def test_the_file_is_written_atomically_and_tagged(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"epoch": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw == {"format": "compaudit-train-checkpoint", "version": 1, "epoch": 3}


def test_foreign_and_corrupt_files_are_refused_with_the_fix(tmp_path):
    torch.save({"epoch": 1}, tmp_path / "foreign.pt")
    with pytest.raises(AuditInputError, match="not a compaudit training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(AuditInputError, match="corrupt.pt: cannot read .* delete it"):
        load_checkpoint(tmp_path / "corrupt.pt")
    save_checkpoint(tmp_path / "old.pt", {"version": 0})
    with pytest.raises(AuditInputError, match="checkpoint version 0, expected 1"):
        load_checkpoint(tmp_path / "old.pt")
