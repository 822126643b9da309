"""The embeddings file slice discovery reads: every format round-trips, and every
problem names the file and the column (npz never unpickled)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compaudit.embeddings_file import read_embeddings, write_embeddings
from compaudit.errors import AuditInputError


def test_embeddings_round_trip_in_every_format(tmp_path):
    ids = np.array(["a", "b/2", "00003"])
    feats = np.arange(6, dtype=np.float64).reshape(3, 2) / 7
    write_embeddings(ids, feats, tmp_path / "e.npz")
    frame = pd.DataFrame({"example_id": ids, "f0": feats[:, 0], "f1": feats[:, 1]})
    frame.to_csv(tmp_path / "e.csv", index=False)
    frame.to_parquet(tmp_path / "e.parquet")
    for name in ("e.npz", "e.csv", "e.parquet"):
        emb = read_embeddings(tmp_path / name)
        assert emb.example_ids.tolist() == ["a", "b/2", "00003"], name  # ids stay text
        assert emb.features.dtype == np.float32
        np.testing.assert_allclose(emb.features, feats, rtol=1e-6)
        np.testing.assert_allclose(emb.rows_for(np.array(["00003", "a"])),
                                   feats[[2, 0]], rtol=1e-6)
        assert emb.source == str(tmp_path / name)


def test_embeddings_missing_an_analysed_example_are_named(tmp_path):
    write_embeddings(np.array(["a", "b"]), np.ones((2, 3)), tmp_path / "e.npz")
    emb = read_embeddings(tmp_path / "e.npz")
    with pytest.raises(AuditInputError, match=r"e\.npz: column 'example_id': no row for 2 of "
                                              r"the 3 analysed examples \(e\.g\. 'c', 'd'\)"):
        emb.rows_for(np.array(["a", "c", "d"]))


def test_bad_embeddings_tables_name_the_file_and_column(tmp_path):
    bad = pd.DataFrame({"example_id": ["a", "a", "b"], "f0": [1.0, np.nan, 2.0],
                        "colour": ["red", "blue", "red"]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(AuditInputError) as err:
        read_embeddings(tmp_path / "bad.csv")
    assert err.value.problems == [
        f"{tmp_path / 'bad.csv'}: column 'colour' is not numeric; expected numbers (every "
        "column but example_id is a dimension)"]
    bad.drop(columns="colour").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(AuditInputError) as err:
        read_embeddings(tmp_path / "bad.parquet")
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [
        "column 'example_id': 2 row(s) (rows 1, 2) repeat an id (e.g. 'a'); expected unique ids",
        "'features': 1 row(s) (rows 2) hold missing, NaN or infinite values; expected finite "
        "numbers"]
    pd.DataFrame({"example_id": ["a"]}).to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(AuditInputError, match=r"ids\.csv: no feature column; expected an \.npz"):
        read_embeddings(tmp_path / "ids.csv")
    pd.DataFrame({"id": ["a"], "f": [1.0]}).to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(AuditInputError, match=r"noid\.csv: missing required column\(s\) "
                                              r"'example_id'"):
        read_embeddings(tmp_path / "noid.csv")


def test_bad_npz_embeddings_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "keys.npz", ids=np.array(["a"]), features=np.ones((1, 2)))
    with pytest.raises(AuditInputError, match=r"no array\(s\) 'example_id' \(found ids, "
                                              r"features\)"):
        read_embeddings(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", example_id=np.array(["a", 1], dtype=object),
             features=np.ones((2, 2)))
    with pytest.raises(AuditInputError, match=r"obj\.npz: cannot read the embeddings .*"
                                              r"allow_pickle"):
        read_embeddings(tmp_path / "obj.npz")
    np.savez(tmp_path / "shape.npz", example_id=np.array(["a", "b"]), features=np.ones(2))
    with pytest.raises(AuditInputError, match=r"array 'features' is float64 with shape "
                                              r"\(2,\); expected a 2-D array"):
        read_embeddings(tmp_path / "shape.npz")
    np.savez(tmp_path / "rows.npz", example_id=np.array(["a", "b"]), features=np.ones((3, 2)))
    with pytest.raises(AuditInputError, match=r"2 example ids but 3 rows of 'features'"):
        read_embeddings(tmp_path / "rows.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AuditInputError, match=r"junk\.npz: cannot read the embeddings"):
        read_embeddings(tmp_path / "junk.npz")
    with pytest.raises(AuditInputError, match=r"gone\.npz: embeddings file not found"):
        read_embeddings(tmp_path / "gone.npz")
    # Nothing half-written: a refused array leaves no file behind.
    with pytest.raises(AuditInputError):
        write_embeddings(np.array(["a", "a"]), np.ones((2, 2)), tmp_path / "out.npz")
    assert not list(tmp_path.glob("*out.npz*"))
