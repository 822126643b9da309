"""Dissection against a brute-force reference, and on hand-built and untrained units."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from compaudit.compress.masks import apply_masks, magnitude_masks, prunable_parameters
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.dissection.concepts import ConceptDataset, SyntheticFaceConcepts
from compaudit.dissection.netdissect import DissectionConfig, dissect
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model


class ArrayConcepts(ConceptDataset):
    """Images and label maps held in memory (the brute-force case)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, concepts: pd.DataFrame) -> None:
        super().__init__()
        self.images, self.labels, self.concepts = images, labels, concepts

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index])

    def _labels(self, index: int) -> np.ndarray:
        return self.labels[index]


def bilinear(a: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of the last two axes (square), in numpy."""
    n = a.shape[-1]
    src = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = src - i0
    rows = a[..., i0, :] * (1 - w)[:, None] + a[..., i1, :] * w[:, None]
    return rows[..., i0] * (1 - w) + rows[..., i1] * w


def brute_force(acts: np.ndarray, labels: np.ndarray, categories: np.ndarray, q: float):
    """Thresholds and IoU with everything in memory: np.quantile and explicit set counts."""
    n, k = acts.shape[:2]
    thresholds = np.array([np.quantile(acts[:, u].astype(np.float64).ravel(), 1 - q)
                           for u in range(k)])
    up = bilinear(acts.astype(np.float64), labels.shape[-1])
    iou = np.zeros((k, len(categories)))
    for u in range(k):
        for c in range(len(categories)):
            inter = union = 0
            for i in range(n):
                if not np.isin(labels[i], np.flatnonzero(categories == categories[c])).any():
                    continue  # the image labels nothing of c's category
                active = up[i, u] > thresholds[u]
                mask = (labels[i] == c).any(axis=0)
                inter += np.sum(active & mask)
                union += np.sum(active | mask)
            iou[u, c] = inter / union if union else 0.0
    return thresholds, iou


@pytest.mark.parametrize("cache_bytes", [0, 3000, 2**28], ids=["recompute", "overflow", "cached"])
@pytest.mark.parametrize("q", [0.005, 0.07, 0.3])
def test_thresholds_and_iou_match_brute_force(q, cache_bytes):
    rng = np.random.default_rng(0)
    n, size = 37, 12
    images = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    categories = np.array(["a"] * 5 + ["b"] * 3)
    labels = np.stack([rng.integers(0, 5, (n, size, size)),
                       rng.integers(-1, 8, (n, size, size))], axis=1)
    labels[:, 1][labels[:, 1] < 5] = -1  # second map: category b only, often unlabelled
    labels[:10, 1] = -1  # some images label nothing of category b
    labels[20:, 0][labels[20:, 0] == 4] = 3  # concept 4 only in the first images
    concepts = pd.DataFrame({"concept": [f"c{i}" for i in range(8)], "category": categories})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())  # ties at 0
    ds = ArrayConcepts(images, labels.astype(np.int64), concepts)
    # 3000 bytes hold two batches of activations (5 x 4 x 4 x 4 floats): the cache
    # overflows midway and pass 2 runs the model again.
    result = dissect(model, ds, config=DissectionConfig(layers=("1",), quantile=q, batch_size=5,
                                                        cache_bytes=cache_bytes))

    with torch.no_grad():
        acts = model(torch.from_numpy(images)).numpy()
    thresholds, iou = brute_force(acts, labels, categories, q)
    np.testing.assert_allclose(result.units["threshold"], thresholds, rtol=1e-12)
    np.testing.assert_allclose(result.iou["1"], iou, rtol=1e-12, atol=0)
    assert (iou > 0).any()  # the comparison is not between zeros
    best = iou.argmax(axis=1)
    assert result.units["concept"].tolist() == [f"c{b}" for b in best]
    assert result.units["iou"].tolist() == pytest.approx(iou.max(axis=1).tolist(), rel=1e-12)
    # Exactness of the quantile: the share of positions above T_k is q up to one position.
    above = (acts > thresholds[None, :, None, None]).mean(axis=(0, 2, 3))
    assert np.all(np.abs(above - q) <= 1 / acts[:, 0].size + 1e-12)
    # Coverage: a concept's pixels over the pixels of images labelling its category.
    for c in range(len(categories)):
        members = np.flatnonzero(categories == categories[c])
        has = np.array([np.isin(labels[i], members).any() for i in range(n)])
        pixels = np.array([(labels[i] == c).any(axis=0).sum() for i in range(n)])
        coverage = pixels[has].sum() / (has.sum() * size * size)
        assert result.concepts["coverage"][c] == pytest.approx(coverage, rel=1e-12)
        assert result.concepts["iou_bound"][c] == pytest.approx(min(q / coverage, coverage / q))


def test_interpretable_flag_uses_the_configured_threshold():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 3, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 2, (6, 1, 4, 4))
    concepts = pd.DataFrame({"concept": ["x", "y"], "category": ["p", "p"]})
    model = nn.Sequential(nn.Conv2d(3, 3, 1))
    ds = ArrayConcepts(images, labels, concepts)
    res = dissect(model, ds, config=DissectionConfig(layers=("0",), quantile=0.2))
    cut = float(np.median(res.units["iou"]))
    flagged = dissect(model, ds, config=DissectionConfig(layers=("0",), quantile=0.2,
                                                         iou_threshold=cut))
    assert flagged.units["interpretable"].tolist() == (res.units["iou"] > cut).tolist()


HAIR = (0.94, 0.83, 0.52)  # the first blond shade of compaudit.data.synthetic


def hair_unit_net() -> nn.Sequential:
    """Unit 0 computes 1 - |rgb - HAIR|_1 by hand (ReLU splits the signs), pooled 2x2."""
    split, combine = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)
    with torch.no_grad():
        split.weight.zero_()
        combine.weight.zero_()
        for i in range(3):
            split.weight[i, i], split.weight[3 + i, i] = 1.0, -1.0
        split.bias.copy_(torch.tensor([-h for h in HAIR] + list(HAIR)))
        combine.weight[0, :, 0, 0] = -1.0
        combine.bias[0] = 1.0
        combine.weight[1, 2, 0, 0] = 1.0  # unit 1: blue above the hair's blue (a control)
    return nn.Sequential(split, nn.ReLU(), combine, nn.AvgPool2d(2))


@pytest.fixture(scope="module")
def blond_faces(tmp_path_factory):
    # Blond young women without ambiguous hair: the hair colour is one of four blond shades.
    root = generate_synthetic_faces(tmp_path_factory.mktemp("faces"), n=300, image_size=32,
                                    seed=0, joint={(True, False, True): 1.0}, ambiguous=0.0,
                                    spurious=0.0, label_noise=0.0, split_fractions=(0, 0, 1),
                                    workers=1)
    return SyntheticFaceConcepts(root, split="test")


def test_hand_set_hair_unit_is_interpretable_for_hair(blond_faces):
    # Hair covers ~15% of the pixels, so IoU <= q / 0.15: at q = 0.005 no unit can pass
    # 0.04 for hair; dissect the top 5% instead.
    config = DissectionConfig(layers=("3",), quantile=0.05)
    res = dissect(hair_unit_net(), blond_faces, config=config)
    unit = res.units.iloc[0]
    assert unit["concept"] == "hair" and unit["category"] == "part"
    assert bool(unit["interpretable"]) and unit["iou"] > 0.08
    others = np.delete(res.iou["3"][0], list(res.concepts["concept"]).index("hair"))
    assert unit["iou"] > 4 * others.max()
    assert res.units.iloc[1]["concept"] != "hair" or res.units.iloc[1]["iou"] < unit["iou"]


def test_untrained_network_has_nearly_no_interpretable_units(blond_faces):
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2)
    layers = ("features.2", "features.5", "features.8", "features.11")
    res = dissect(model, blond_faces, config=DissectionConfig(layers=layers))
    assert len(res.units) == 8 + 16 + 32 + 64
    assert res.units["interpretable"].mean() <= 0.05
    assert res.units["iou"].max() < 0.1


def test_zero_sparsity_pruned_copy_gives_identical_results(blond_faces):
    torch.manual_seed(1)
    dense = build_model("small_cnn", num_classes=2)
    pruned = copy.deepcopy(dense)
    masks = magnitude_masks(prunable_parameters(pruned), sparsity=0.0, scope="global")
    apply_masks(pruned, masks)
    config = DissectionConfig(layers=("features.5", "features.11"), quantile=0.05)
    a = dissect(dense, blond_faces, config=config)
    b = dissect(pruned, blond_faces, config=config)
    pd.testing.assert_frame_equal(a.units, b.units)
    for layer in config.layers:
        np.testing.assert_array_equal(a.iou[layer], b.iou[layer])
    # ...and a real pruning does change them (the comparison can fail).
    apply_masks(pruned, magnitude_masks(prunable_parameters(pruned), sparsity=0.9,
                                        scope="global"))
    c = dissect(pruned, blond_faces, config=config)
    assert not np.array_equal(a.iou["features.11"], c.iou["features.11"])


def test_bad_config_and_layers_are_reported():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten())
    concepts = pd.DataFrame({"concept": ["x"], "category": ["p"]})
    ds = ArrayConcepts(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 1, 4, 4), np.int64),
                       concepts)
    with pytest.raises(AuditInputError, match="quantile: got 1.5; expected a number in \\(0, 1\\)"):
        dissect(model, ds, config=DissectionConfig(layers=("0",), quantile=1.5))
    with pytest.raises(AuditInputError, match="layers: got '0'; expected a list of strings"):
        dissect(model, ds, config=DissectionConfig(layers="0"))
    with pytest.raises(AuditInputError, match="'conv9' are not modules of the model"):
        dissect(model, ds, config=DissectionConfig(layers=("conv9",)))
    with pytest.raises(AuditInputError, match="expected a \\(batch, units, height, width\\)"):
        dissect(model, ds, config=DissectionConfig(layers=("1",)))


def test_summary_counts(blond_faces):
    res = dissect(hair_unit_net(), blond_faces,
                  config=DissectionConfig(layers=("3",), quantile=0.05))
    summary = res.summary()
    assert summary["n_images"] == 300
    assert summary["all"]["interpretable_units"] == int(res.units["interpretable"].sum())
    assert summary["layers"]["3"]["units"] == 2
