"""The data stage built from a spec: a face dataset with its own options, preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from compaudit.data.celeba import CelebA
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


def _synthetic(folder: Path, joint: str) -> Path:
    return _spec(folder, f'n = 200\nimage_size = 16\nsplits = [0.5, 0.0, 0.5]\njoint = {joint}')


def test_joint_sets_the_generated_group_sizes(tmp_path):
    from compaudit.pipeline.data import prepare_data
    from compaudit.pipeline.stages import StageCache
    from compaudit.rundir import RunFolder

    spec = load_spec(_synthetic(tmp_path, "[[true, true, false, 3], [false, false, true, 1]]"))
    folder = RunFolder(tmp_path / "run")
    folder.create()
    data = prepare_data(spec, folder, StageCache(folder.stages_json), log=lambda _: None)
    examples = CelebA(data.root, split="all", protected=("Male", "Young")).examples()
    counts = examples.groupby(["label", "attr.Male", "attr.Young"]).size().to_dict()
    assert counts == {(0, False, True): 50, (1, True, False): 150}  # 200 faces, 3 : 1


@pytest.mark.parametrize("joint, why", [
    ("[[true, true, 5]]", "expected \\[Blond_Hair, Male, Young, weight\\]"),
    ("[[true, true, false, -1]]", "a non-negative number"),
    ("[[1, true, false, 2]]", "three booleans"),
    ("[[true, true, false, 1], [true, true, false, 2]]", "each .* group at most once"),
    ("[[true, true, false, 0]]", "a positive total weight"),
])
def test_a_bad_joint_is_refused_at_parse_time(tmp_path, joint, why):
    with pytest.raises(AuditInputError, match=r"\[data\]\.joint.*" + why):
        load_spec(_synthetic(tmp_path, joint))


def test_joint_is_for_the_synthetic_faces_only(tmp_path):
    with pytest.raises(AuditInputError, match=r"\[data\]\.joint: is set but dataset is "
                                              r"'fairface'"):
        load_spec(_spec(tmp_path, 'dataset = "fairface"\nroot = "x"\njoint = '
                                  '[[true, true, false, 1]]'))


def test_the_cache_budget_does_not_change_the_data_key(tmp_path):
    from compaudit.pipeline.data import prepare_data
    from compaudit.pipeline.stages import StageCache
    from compaudit.rundir import RunFolder
    from compaudit.spec import parse_spec

    base = ('[data]\nn = 200\nimage_size = 16\n{extra}\n[model]\nreplicas = 1\n'
            '[[variants]]\nname = "f"\nmethod = "float16"\n')
    keys = []
    for extra in ("", "cache_gib = 0.25", "max_eval = 50"):
        folder = RunFolder(tmp_path / "run")
        folder.create()
        spec = parse_spec(base.format(extra=extra), source="s.toml")
        keys.append(prepare_data(spec, folder, StageCache(folder.stages_json),
                                 log=lambda _: None).key)
    assert keys[0] == keys[1] != keys[2]  # a setting that changes the data does change it
