"""The data stage built from a spec: a face dataset with its own options, preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from compaudit.data.celeba import CelebA
from compaudit.errors import AuditInputError
from compaudit.pipeline.data import check_dataset, data_path, dataset_factory, eval_transform
from compaudit.rundir import RunFolder
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
    root = data_path(spec, RunFolder(tmp_path / "run"), spec.data.root)
    assert root == tmp_path / "fairface"  # the spec's folder, not the run folder
    dataset = dataset_factory(spec, root, "val", eval_transform(spec))()
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
    return _spec(folder, 'image_size = 16\n[data.options]\nn = 200\n'
                         f'split_fractions = [0.5, 0.0, 0.5]\njoint = {joint}')


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
    ("[[true, true, 5]]", "expected rows \\[Blond_Hair, Male, Young, weight\\]"),
    ("[[true, true, false, -1]]", "expected non-negative weights"),
    ("[[1, true, false, 2]]", "three booleans"),
    ("[[true, true, false, 1], [true, true, false, 2]]", "each group at most once"),
    ("[[true, true, false, 0]]", "with a positive sum"),
])
def test_a_bad_joint_is_refused_before_anything_runs(tmp_path, joint, why):
    spec = load_spec(_synthetic(tmp_path, joint))
    with pytest.raises(AuditInputError, match=r"faces.toml: \[data\]\.options: "
                                              r"generate_synthetic_faces: joint: .*" + why):
        check_dataset(spec)


@pytest.mark.parametrize("options, why", [
    ("spurious = 1.0", "spurious: expected a number in \\[0, 1\\), got 1.0"),
    ("split_fractions = [0.5, 0.5, 0.5]", "split_fractions: expected three non-negative"),
    ('n = "many"', "n: expected a positive integer, got 'many'"),
    ('spurious = "high"', "expected numbers for n, spurious"),
])
def test_generator_settings_the_generator_refuses_are_refused_before_it_runs(
        tmp_path, options, why):
    # The generator draws long hair with probability (1 - spurious) / 2 for men and
    # refuses spurious = 1: the preflight says so, naming the spec key.
    spec = load_spec(_spec(tmp_path, f"[data.options]\n{options}"))
    with pytest.raises(AuditInputError, match=r"\[data\]\.options: generate_synthetic_faces"
                                              r": .*" + why):
        check_dataset(spec)
    assert check_dataset(load_spec(_spec(tmp_path, "[data.options]\nspurious = 0.99"))) \
        == "synthetic-faces"


def test_generator_options_are_checked_against_its_signature(tmp_path):
    spec = load_spec(_spec(tmp_path, "[data.options]\nsplits = [0.5, 0.0, 0.5]\nseed = 3"))
    with pytest.raises(AuditInputError, match=r"\[data\]\.options: splits, seed not options "
                                              r"of 'synthetic-faces'; expected n, spurious, "
                                              r"ambiguous, label_noise, joint, split_fractions"):
        check_dataset(spec)


def test_joint_is_for_the_synthetic_faces_only(tmp_path):
    spec = load_spec(_spec(tmp_path, 'dataset = "fairface"\nroot = "x"\n'
                                     'options = { joint = [[true, true, false, 1]] }'))
    with pytest.raises(AuditInputError, match=r"\[data\]\.options: joint not options of "
                                              r"'fairface'"):
        check_dataset(spec)


def test_the_cache_budget_does_not_change_the_data_key(tmp_path):
    from compaudit.pipeline.data import prepare_data
    from compaudit.pipeline.stages import StageCache
    from compaudit.rundir import RunFolder
    from compaudit.spec import parse_spec

    base = ('[data]\nimage_size = 16\noptions = {{ n = 200 }}\n{extra}\n[model]\n'
            'replicas = 1\n[[variants]]\nname = "f"\nmethod = "float16"\n')
    keys = []
    for extra in ("", "cache_gib = 0.25", "max_eval = 50"):
        folder = RunFolder(tmp_path / "run")
        folder.create()
        spec = parse_spec(base.format(extra=extra), source="s.toml")
        keys.append(prepare_data(spec, folder, StageCache(folder.stages_json),
                                 log=lambda _: None).key)
    assert keys[0] == keys[1] != keys[2]  # a setting that changes the data does change it


def test_the_old_generator_keys_make_the_same_data_and_key_as_options(tmp_path):
    # One version of grace: the top-level keys of earlier specs move into options, so
    # the same faces are generated and the data stage's cache stays valid.
    from compaudit.pipeline.data import prepare_data
    from compaudit.pipeline.stages import StageCache
    from compaudit.rundir import RunFolder
    from compaudit.spec import parse_spec

    joint = "[[true, true, false, 3], [false, false, true, 1], [true, false, true, 2]]"
    tail = '[model]\nreplicas = 1\n[[variants]]\nname = "f"\nmethod = "float16"\n'
    old = (f"[data]\nimage_size = 16\nn = 120\nsplits = [0.5, 0.2, 0.3]\nspurious = 0.5\n"
           f"label_noise = 0.1\njoint = {joint}\n{tail}")
    new = (f"[data]\nimage_size = 16\n[data.options]\nn = 120\n"
           f"split_fractions = [0.5, 0.2, 0.3]\nspurious = 0.5\nlabel_noise = 0.1\n"
           f"joint = {joint}\n{tail}")
    roots, keys = [], []
    for i, text in enumerate((old, new)):
        folder = RunFolder(tmp_path / f"run{i}")
        folder.create()
        spec = parse_spec(text, source="s.toml")
        data = prepare_data(spec, folder, StageCache(folder.stages_json), log=lambda _: None)
        roots.append(data.root)
        keys.append(data.key)
    assert keys[0] == keys[1]
    files = [sorted(p.relative_to(r) for p in r.rglob("*") if p.is_file()) for r in roots]
    assert files[0] == files[1] and len(files[0]) > 240  # images, masks, tables
    for name in files[0]:
        assert (roots[0] / name).read_bytes() == (roots[1] / name).read_bytes(), name
