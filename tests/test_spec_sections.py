"""The sections of an audit spec: each one's keys, defaults, ranges and own rules, as
parse_spec reports them (file and key named)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from compaudit import _spec_sections
from compaudit.errors import AuditInputError
from compaudit.spec import demo_spec, parse_spec


def _with(section: str, lines: str) -> str:
    """The demo spec's text with ``lines`` added at the top of ``[section]``."""
    return demo_spec().text.replace(f"[{section}]", f"[{section}]\n{lines}", 1)


MODEL_ONLY = '[[variants]]\nname = "fp16"\nmethod = "float16"\n[model]\n'


def test_the_old_generator_keys_move_into_options_with_one_warning_each(monkeypatch):
    monkeypatch.setattr(_spec_sections, "_warned", set())
    old = ('[data]\nn = 300\nsplits = [0.5, 0.2, 0.3]\nspurious = 0.5\n'
           'options = { label_noise = 0.1 }\n' + MODEL_ONLY)
    new = ('[data]\noptions = { n = 300, split_fractions = [0.5, 0.2, 0.3], spurious = 0.5, '
           'label_noise = 0.1 }\n' + MODEL_ONLY)
    with pytest.warns(FutureWarning) as caught:
        moved = parse_spec(old, source="s.toml")
        parse_spec(old, source="s.toml")  # once per key and process
    assert [str(w.message) for w in caught] == [
        "s.toml: [data].n is deprecated and will be removed; write it as [data].options.n",
        "s.toml: [data].splits is deprecated and will be removed; write it as "
        "[data].options.split_fractions",
        "s.toml: [data].spurious is deprecated and will be removed; write it as "
        "[data].options.spurious"]
    assert moved.data == parse_spec(new, source="s.toml").data


def test_preprocessing_keys_build_the_transform_torchvision_would():
    from PIL import Image
    from torchvision import transforms as T

    from compaudit.pipeline.data import eval_transform

    spec = parse_spec(_with("data", "resize = 40\ncrop = 36\nmean = [0.4, 0.5, 0.6]\n"
                                    "std = [0.2, 0.3, 0.4]"))
    assert spec.data.input_size == 36
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8))
    reference = T.Compose([T.Resize(40), T.CenterCrop(36), T.ToTensor(),
                           T.Normalize([0.4, 0.5, 0.6], [0.2, 0.3, 0.4])])
    torch.testing.assert_close(eval_transform(spec)(image), reference(image))


@pytest.mark.parametrize("lines, key", [
    ("crop = 8", "[data].crop"), ("resize = 20\ncrop = 24", "[data].resize"),
    ("mean = [0.5, 0.5]", "[data].mean"), ("std = [0.2, 0.0, 0.2]", "[data].std"),
    ('manifest = "faces.csv"', "[data].manifest"),
])
def test_bad_preprocessing_names_the_key(lines, key):
    with pytest.raises(AuditInputError, match=re.escape(key)):
        parse_spec(_with("data", lines))


def test_pretrained_weights_bring_their_statistics_and_a_conflict_names_both():
    import torchvision

    from compaudit.pipeline.data import eval_transform

    text = _with("model", 'pretrained = "ResNet18_Weights.IMAGENET1K_V1"\nreplicas = 1')
    text = text.replace("replicas = 5", "")
    ref = torchvision.models.get_weight("ResNet18_Weights.IMAGENET1K_V1").transforms()
    normalize = eval_transform(parse_spec(text)).transforms[-1]
    assert list(normalize.mean) == list(ref.mean) and list(normalize.std) == list(ref.std)
    same = _with("data", f"mean = {list(ref.mean)}").replace(
        "[model]", '[model]\npretrained = "ResNet18_Weights.IMAGENET1K_V1"\nreplicas = 1', 1)
    eval_transform(parse_spec(same.replace("replicas = 5", "")))
    clash = text.replace("[data]", "[data]\nmean = [0.5, 0.5, 0.5]", 1)
    with pytest.raises(AuditInputError, match=r"\[data\]\.mean .*\[model\]\.pretrained"):
        eval_transform(parse_spec(clash))


@pytest.mark.parametrize("lines, key, message", [
    ('head = "sigmoid"\nnum_classes = 3', "[model].head",
     "got 'sigmoid' with num_classes = 3"),
    ('head = "tanh"', "[model].head", "expected one of 'softmax', 'sigmoid'"),
    ("outputs = 40", "[model].outputs", "a softmax head has one logit per class"),
    ('head = "sigmoid"\noutputs = 40', "[model].output", "missing"),
    ('head = "sigmoid"\noutputs = 40\noutput = 40', "[model].output", "0 <= output < outputs (40)"),
    ('head = "sigmoid"\noutput = 0', "[model].output", "only with head = \"sigmoid\" and outputs > 1"),
    ("output = 1", "[model].output", "only with head = \"sigmoid\" and outputs > 1"),
])
def test_heads_are_checked_against_num_classes_and_outputs_by_key(lines, key, message):
    with pytest.raises(AuditInputError) as info:
        parse_spec(MODEL_ONLY + lines, source="h.toml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"h.toml: {key}: ")
    assert message in info.value.problems[0]


def test_a_head_sets_the_models_output_width():
    softmax = parse_spec(MODEL_ONLY + "num_classes = 10", source="h.toml").model
    single = parse_spec(MODEL_ONLY + 'head = "sigmoid"', source="h.toml").model
    multi = parse_spec(MODEL_ONLY + 'head = "sigmoid"\noutputs = 40\noutput = 9',
                       source="h.toml").model
    assert [m.n_outputs for m in (softmax, single, multi)] == [10, 1, 40]
    assert (multi.task_head().output, multi.task_head().sigmoid) == (9, True)
    assert not softmax.task_head().sigmoid


def test_predict_batch_size_and_cache_budget_are_settings_with_ranges():
    base = '[[variants]]\nname = "f"\nmethod = "float16"\n'
    spec = parse_spec(base, source="s.toml")
    assert spec.predict.batch_size == 0 and spec.data.cache_gib == 8.0  # 0: chosen
    spec = parse_spec(base + "[predict]\nbatch_size = 16\n[data]\ncache_gib = 0.5\n",
                      source="s.toml")
    assert spec.predict.batch_size == 16 and spec.data.cache_gib == 0.5
    with pytest.raises(AuditInputError) as exc:
        parse_spec(base + "[predict]\nbatch_size = -1\nbatch = 3\n[data]\ncache_gib = -2\n",
                   source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "s.toml: [predict].batch_size: got -1; expected an integer >= 0" in joined
    assert "s.toml: [predict].batch" in joined and "unknown" in joined.lower()
    assert "s.toml: [data].cache_gib: got -2" in joined
