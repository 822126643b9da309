"""The data stage built from a spec: a face dataset with its own options, preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from compaudit.errors import AuditInputError
from compaudit.pipeline.data import check_dataset, dataset_factory, eval_transform
from compaudit.spec import load_spec

VAL = "file,age,gender,race,service_test\n" + "".join(
    f"val/{i}.jpg,{age},{sex},{race},False\n" for i, (age, sex, race) in enumerate(
        [("3-9", "Male", "White"), ("20-29", "Female", "Black"),
         ("50-59", "Female", "Indian"), ("more than 70", "Male", "East Asian")]))


def _fairface(root: Path) -> Path:
    """A tiny copy of FairFace's official layout (label CSVs, image folders)."""
    (root / "val").mkdir(parents=True)
    (root / "fairface_label_val.csv").write_text(VAL)
    (root / "fairface_label_train.csv").write_text(VAL.splitlines()[0] + "\n")
    for i in range(4):
        Image.new("RGB", (40, 48), (40 * i, 90, 160)).save(root / "val" / f"{i}.jpg")
    return root


def _spec(folder: Path, data: str) -> Path:
    path = folder / "faces.toml"
    path.write_text(f'[data]\n{data}\n[model]\nnum_classes = 2\nreplicas = 1\n'
                    '[[variants]]\nname = "f16"\nmethod = "float16"\n')
    return path


def test_a_spec_builds_fairface_with_its_options_relative_to_the_spec(tmp_path):
    _fairface(tmp_path / "fairface")
    spec = load_spec(_spec(tmp_path, 'dataset = "fairface"\nroot = "fairface"\n'
                                     'target = "gender"\nprotected = ["age", "race"]\n'
                                     'options = { age_groups = "coarse" }\ncrop = 24\n'
                                     'resize = 30'))
    assert check_dataset(spec) == "fairface"
    dataset = dataset_factory(spec, Path(spec.data.root), "val", eval_transform(spec))()
    examples = dataset.examples()
    # gender: Female = 0, Male = 1; coarse age groups 0-19, 20-39, 40-59, 60+
    assert examples["label"].tolist() == [1, 0, 0, 1]
    assert examples["attr.age"].tolist() == ["0-19", "20-39", "40-59", "60+"]
    assert dataset[0][0].shape == (3, 24, 24)


def test_an_option_the_dataset_does_not_take_is_refused_naming_the_valid_ones(tmp_path):
    _fairface(tmp_path / "fairface")
    spec = load_spec(_spec(tmp_path, 'dataset = "fairface"\nroot = "fairface"\n'
                                     'options = { agegroups = "coarse" }'))
    with pytest.raises(AuditInputError, match=r"\[data\]\.options: agegroups not options of "
                                              r"'fairface'; expected age_groups"):
        check_dataset(spec)
