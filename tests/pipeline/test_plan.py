"""The one validation entry (``preflight``): ``compaudit check`` OK means the run raises
no input error, for every shipped spec in ``audits/`` on tiny copies of its layouts; and
the input mistakes ``run`` used to find late are refused by ``check``, naming the key."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from compaudit.cli import main
from compaudit.data.celeba import CELEBA_ATTRIBUTES
from compaudit.data.corruptions import CORRUPTIONS
from compaudit.data.imagenet_a import ImageNetA
from compaudit.data.imagenet_classes import imagenet_wnids
from compaudit.models.architectures import build_model
from compaudit.spec import load_spec

AUDITS = Path(__file__).resolve().parents[2] / "audits"
SHIPPED = sorted(p.name for p in AUDITS.glob("*.toml"))


def _image(path: Path, side: tuple[int, int] = (40, 36), color: int = 0, fmt: str = "JPEG"
           ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", side, (color % 256, 90, 160)).save(path, fmt)


def _celeba(root: Path) -> Path:
    """The released CelebA layout: images, attribute and partition files."""
    rows = [(f"{i:06d}.jpg", i % 3) for i in range(1, 13)]
    lines = [name + "".join(f" {1 if (i + j) % 3 == 0 else -1:2d}" for j in range(40))
             for i, (name, _) in enumerate(rows)]
    root.mkdir(parents=True)
    (root / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\n{' '.join(CELEBA_ATTRIBUTES)} \n" + "\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in rows))
    for k, (name, _) in enumerate(rows):
        _image(root / "img_align_celeba" / name, (40, 48), 20 * k)
    return root


def _cifar10(root: Path) -> Path:
    """CIFAR-10's python format: five training batches, a test batch, the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": list(range(10)) * 2,
                         b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                         b"filenames": [b"f%d.png" % k for k in range(20)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % k for k in range(10)],
                     b"num_cases_per_batch": 20}, f)
    return root


def _imagenet(root: Path) -> dict[str, Path]:
    """ImageNet val and train (a folder per wnid), ImageNet-C as released (15
    corruptions x 5 severities), ImageNet-A, and a Broden folder."""
    wnids = imagenet_wnids()
    for k in range(2):
        _image(root / "val" / wnids[k] / f"ILSVRC2012_val_0000000{k + 1}.JPEG", color=k)
        for j in range(2):
            _image(root / "train" / wnids[k] / f"{wnids[k]}_{j}.JPEG", color=10 * j)
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            _image(root / "imagenet-c" / name / str(severity) / wnids[0]
                   / "ILSVRC2012_val_00000001.JPEG")
    _image(root / "imagenet-a" / wnids[ImageNetA.class_mask[0]] / "a.jpg")
    _broden(root / "broden")
    return {"val": root / "val", "train": root / "train", "imagenet-c": root / "imagenet-c",
            "imagenet-a": root / "imagenet-a", "broden1_224": root / "broden"}


def _broden(root: Path) -> None:
    """Broden's layout: index.csv, label.csv, images and their concept masks."""
    rows = []
    for i in range(2):
        _image(root / f"images/ade/{i}.jpg", (8, 8), 40 * i)
        for kind in ("object", "part"):
            mask = np.zeros((4, 4, 3), np.uint8)
            mask[:2, :, 0] = 2 if kind == "object" else 3
            Image.fromarray(mask).save(root / f"images/ade/{i}_{kind}.png")
        rows.append({"image": f"ade/{i}.jpg", "split": "train", "ih": 8, "iw": 8, "sh": 4,
                     "sw": 4, "color": "", "object": f"ade/{i}_object.png",
                     "part": f"ade/{i}_part.png", "material": "", "scene": "", "texture": ""})
    pd.DataFrame(rows).to_csv(root / "index.csv", index=False)
    pd.DataFrame({"number": [0, 1, 2, 3], "name": ["-", "red-c", "dog", "dog-head"],
                  "category": ["", "color(5)", "object(9);part(1)", "part(3)"],
                  "frequency": [0, 5, 9, 3], "coverage": [0] * 4, "syns": [""] * 4}
                 ).to_csv(root / "label.csv", index=False)


def _own_model(folder: Path) -> None:
    """The files audits/own_model.toml names, next to it: images with a manifest, a
    dense mobilenet_v3_small state dict, a pruned checkpoint and an ONNX model."""
    images = folder / "own_model" / "images"
    rows = []
    for i in range(12):
        _image(images / f"{i}.png", (36, 36), 20 * i, "PNG")
        rows.append(f"{i}.png,{i % 2},{'train' if i < 6 else 'test'},{'ab'[i % 3 == 0]}")
    (images / "manifest.csv").write_text("path,label,split,attr.group\n" + "\n".join(rows))
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", num_classes=2).eval()
    torch.save(model.state_dict(), folder / "own_model" / "dense.pt")
    pruned = {k: v for k, v in model.state_dict().items()}
    weight = pruned.pop("classifier.0.weight")
    pruned["classifier.0.weight_orig"] = weight
    pruned["classifier.0.weight_mask"] = (weight.abs() > weight.abs().median()).float()
    torch.save(pruned, folder / "own_model" / "pruned.pt")
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), folder / "own_model" / "int8.onnx",
                      dynamo=False)


def _fake_hub(monkeypatch, tmp_path: Path) -> None:
    """A torch hub cache holding a ResNet-50 state dict under the IMAGENET1K_V2 name."""
    import torchvision

    from compaudit.models.weights import torchvision_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = torchvision_weights_path("ResNet50_Weights.IMAGENET1K_V2")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet50().state_dict(), path)


def _shipped(name: str, tmp_path: Path, monkeypatch) -> Path:
    """The shipped spec pointed at tiny copies of its layouts. Overrides are sizes only
    (and the device, where the spec asks for a GPU this machine may lack): schedules in
    optimizer steps end within the tiny fine-tuning run, fewer generated faces."""
    text = (AUDITS / name).read_text()
    folder = tmp_path / "audit"
    folder.mkdir()
    subs = {'device = "cuda"': 'device = "cpu"', "end_step = 1500": "end_step = 2",
            "end_step = 200": "end_step = 2", "frequency = 100": "frequency = 1",
            "frequency = 20": "frequency = 1", "n = 40000": "n = 300"}
    if name == "celeba_blond_hair.toml":
        subs['"/data/celeba"'] = repr(str(_celeba(tmp_path / "celeba"))).replace("'", '"')
    elif name == "cifar10_pie.toml":
        subs['"/data/cifar10"'] = f'"{_cifar10(tmp_path / "cifar10")}"'
    elif name == "imagenet_resnet50.toml":
        for key, path in _imagenet(tmp_path / "imagenet").items():
            subs[f'"/data/imagenet/{key}"' if key in ("val", "train") else f'"/data/{key}"'] = \
                f'"{path}"'
        _fake_hub(monkeypatch, tmp_path)
    elif name == "own_model.toml":
        _own_model(folder)
    for old, new in subs.items():
        text = text.replace(old, new)
    assert "/data/" not in text, "every dataset root points at a tiny copy"
    (folder / name).write_text(text)
    return folder / name


def _run_inputs(spec, out: Path) -> None:
    """What a run reads and checks before its jobs train, compress and predict: the
    preflight, the data stage (generating synthetic faces, corrupted copies, the
    examples table), the dissection plan and schedules, one image of every dataset the
    jobs read (the training split when one is read), and every model file loaded as the
    jobs load it (dense replicas into the architecture, loaded variants paired)."""
    from compaudit.executors import SerialExecutor
    from compaudit.models.artifacts import load_artifact
    from compaudit.pipeline.data import (
        prepare_data,
        prepare_shifts,
        write_class_names,
        write_examples,
    )
    from compaudit.pipeline.jobs import dense_models
    from compaudit.pipeline.plan import needs_training_set, preflight
    from compaudit.pipeline.stages import StageCache
    from compaudit.pipeline.train import dense_paths, model_search_path
    from compaudit.pipeline.variants import check_schedules, dissection_plan
    from compaudit.rundir import RunFolder

    preflight(spec, out)
    folder = RunFolder(out)
    folder.create()
    cache = StageCache(folder.stages_json)
    data = prepare_data(spec, folder, cache, log=lambda _: None)
    shifts = prepare_shifts(spec, folder, cache, data, progress=False, log=lambda _: None,
                            pool=SerialExecutor(progress=False))
    write_class_names(spec, folder, data)
    write_examples(folder, cache, data, shifts)
    dissection_plan(spec, folder, transform=data.transform)
    check_schedules(spec, lambda: len(data.train()))
    for factory in (data.eval, *shifts.factories) + ((data.train,) if needs_training_set(spec)
                                                     else ()):
        factory()[0]
    m = spec.model
    if m.weights or m.pretrained:
        dense = dense_models(m.arch, m.num_classes, m.small_input, dense_paths(spec),
                             options=m.options, search_path=model_search_path(spec))
        for v in spec.variants:
            for k, path in enumerate(getattr(v.config, "files", ())):
                load_artifact(path, structure=dense[k])


@pytest.mark.parametrize("name", SHIPPED)
def test_check_ok_means_the_run_raises_no_input_error(name, tmp_path, monkeypatch, capsys):
    path = _shipped(name, tmp_path, monkeypatch)
    out = tmp_path / "run"
    code = main(["check", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "spec OK" in captured.out and not out.exists()
    _run_inputs(load_spec(path), out)


def test_shipped_specs_are_all_tested():
    assert set(SHIPPED) == {"celeba_blond_hair.toml", "cifar10_pie.toml", "demo.toml",
                            "imagenet_resnet50.toml", "own_model.toml"}


def _check(path: Path, capsys, *options: str) -> tuple[int, list[str]]:
    code = main(["check", str(path), "--out", str(path.parent / "run"), *options])
    return code, capsys.readouterr().err.splitlines()


def test_a_split_the_dataset_lacks_names_the_key_and_its_splits(tmp_path, monkeypatch,
                                                                capsys):
    path = _shipped("imagenet_resnet50.toml", tmp_path, monkeypatch)
    path.write_text(path.read_text().replace("max_train = 50000", 'max_train = 50000\n'
                                             'eval_split = "test"'))
    code, err = _check(path, capsys)
    assert code == 2 and err == [
        f"compaudit: error: {path}: [data].eval_split: got 'test'; the imagenet dataset has "
        "the splits 'val', 'train'"]


def test_a_device_this_machine_lacks_is_refused_by_check(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available() and torch.cuda.device_count() > 7:  # pragma: no cover
        pytest.skip("this machine has a cuda:7")
    path = _shipped("cifar10_pie.toml", tmp_path, monkeypatch)
    path.write_text(path.read_text().replace("fine_tune_lr = 0.01",
                                             'fine_tune_lr = 0.01\ndevice = "cuda:7"'))
    code, err = _check(path, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"compaudit: error: {path}: [train].device: got 'cuda:7'; this "
                             "machine has ")


def test_contradictory_options_come_first_before_data(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text('[data]\ndataset = "manifest"\nroot = "nowhere"\n'
                    '[[variants]]\nname = "f16"\nmethod = "float16"\n')
    options = [str(path), "--executor", "serial", "--ray-address", "10.0.0.1:6379"]
    for argv in (["run", "--dry-run", *options], ["run", *options]):
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines() == [
            "compaudit: error: --ray-address 10.0.0.1:6379: the executor is 'serial'; "
            "expected --executor ray (or [executor].kind = \"ray\"), or no --ray-address"]
    assert not (Path("reports") / "spec").exists()


def test_imagenets_training_split_needs_its_own_folder(tmp_path, monkeypatch, capsys):
    path = _shipped("imagenet_resnet50.toml", tmp_path, monkeypatch)
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith("train_root"))
    path.write_text(text)
    code, err = _check(path, capsys)
    assert code == 2 and err == [
        f"compaudit: error: {path}: [data].train_root: missing; the imagenet training split "
        "('train') is a folder of its own, needed to fine-tune or calibrate; expected the "
        "folder of training images"]


def test_a_derived_variants_base_must_be_another_pruned_variant(tmp_path, capsys):
    # Refused first, before any data is looked at (the root does not exist), each with
    # its [[variants]] key.
    path = tmp_path / "spec.toml"
    repair = '[[variants]]\nname = "{}"\nmethod = "constrained_finetune"\nbase = "{}"\n'
    path.write_text('[data]\ndataset = "manifest"\nroot = "nowhere"\n'
                    '[[variants]]\nname = "f16"\nmethod = "float16"\n'
                    '[[variants]]\nname = "gmp"\nmethod = "one_shot_magnitude"\nsparsity = 0.5\n'
                    + repair.format("self", "self") + repair.format("typo", "gmq")
                    + repair.format("of-f16", "f16") + repair.format("a", "b")
                    + repair.format("b", "a") + repair.format("ok", "gmp")
                    + repair.format("ok-again", "ok"))
    for argv in (["check", str(path)], ["run", "--dry-run", str(path)]):
        assert main(argv) == 2
        pruning = "gradual_magnitude, one_shot_magnitude, random, unit, lottery, " \
                  "constrained_finetune"
        assert capsys.readouterr().err.splitlines() == [
            f"compaudit: error: {path}: [[variants]] #3.base: got 'self', the variant itself; "
            "expected another variant's name",
            f"compaudit: error: {path}: [[variants]] #4.base: got 'gmq', which names no "
            "variant; expected one of f16, gmp, self, of-f16, a, b, ok, ok-again",
            f"compaudit: error: {path}: [[variants]] #5.base: got 'f16', made by 'float16', "
            "which does not prune; constrained_finetune keeps the zeros of a pruned "
            f"variant: expected a variant of a pruning method ({pruning})",
            f"compaudit: error: {path}: [[variants]] #6.base: got 'b'; the bases form a cycle "
            "(a -> b -> a); expected a chain that ends at a variant made from the dense "
            "replicas",
            f"compaudit: error: {path}: [[variants]] #7.base: got 'a'; the bases form a cycle "
            "(b -> a -> b); expected a chain that ends at a variant made from the dense "
            "replicas"]


def test_the_plan_says_a_repair_starts_from_its_base(capsys):
    demo = Path(__file__).resolve().parents[2] / "compaudit" / "demo.toml"
    assert main(["check", str(demo)]) == 0
    assert ("  gmp-90-repaired: constrained_finetune (base = 'gmp-90', max_increase = 0.02, "
            "epochs = 2); starts from gmp-90's replicas, after them") in capsys.readouterr().out
