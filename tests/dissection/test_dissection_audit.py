"""Dissection inside a run: per-replica files, the metrics block, the in-memory copy."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.dissection.audit import (
    DissectionPlan,
    concept_dataset,
    dissect_population,
    dissection_block,
    read_population,
)
from compaudit.dissection.netdissect import DissectionConfig, dissect
from compaudit.models.architectures import build_model

LAYERS = ("features.5", "features.11")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return generate_synthetic_faces(tmp_path_factory.mktemp("faces"), n=120, image_size=32,
                                    seed=1, split_fractions=(0.5, 0.0, 0.5))


def _models(seeds):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(build_model("small_cnn", num_classes=2, small_input=True).eval())
    return out


def test_population_files_round_trip_and_match_direct_dissection(faces, tmp_path):
    factory = partial(concept_dataset, "synthetic-faces", faces, split="test", transform=None,
                      max_images=40, seed=0)
    config = DissectionConfig(layers=LAYERS, quantile=0.05)
    plan = DissectionPlan(dataset=factory, config=config)
    models = _models([0, 1])
    for name in ("dense", "pruned"):
        dissect_population(models, plan, variant=name, out_dir=tmp_path / name)
    units, concepts = read_population({n: tmp_path / n for n in ("dense", "pruned")})
    assert len(units) == 2 * 2 * (16 + 64) and concepts["n_images"].iloc[0] == 40
    # The in-memory copy changes nothing: replica 1 equals a direct, streamed dissection.
    direct = dissect(models[1], factory(), config=config).units
    mine = units[(units["variant"] == "dense") & (units["replica"] == 1)]
    np.testing.assert_array_equal(mine["threshold"], direct["threshold"])
    np.testing.assert_array_equal(mine["iou"], direct["iou"])
    assert mine["concept"].tolist() == direct["concept"].tolist()
    assert not list(tmp_path.rglob("*.tmp*"))  # written atomically, no leftovers


def test_block_counts_layers_and_unreachable_concepts():
    rows = []
    for replica, hits in ((0, [True, True, False, True]), (1, [False, True, False, False])):
        for unit, hit in enumerate(hits):
            rows.append({"variant": "dense", "replica": replica,
                         "layer": "a" if unit < 2 else "b", "unit": unit % 2, "threshold": 0.0,
                         "concept": ["hair", "eyes", "hair", "mouth"][unit], "category": "part",
                         "iou": 0.1, "interpretable": hit})
    units = pd.DataFrame(rows)
    units = pd.concat([units, units.assign(variant="gmp", interpretable=False)],
                      ignore_index=True)
    concepts = pd.DataFrame({"concept": ["hair", "eyes", "background"],
                             "category": ["part", "part", "background"],
                             "coverage": [0.15, 0.005, 0.7], "iou_bound": [0.133, 0.25, 0.029],
                             "n_images": 10})
    block, tables = dissection_block(units, concepts, {"quantile": 0.02, "iou_threshold": 0.04})
    assert block["unreachable"] == ["background"] and block["n_images"] == 10
    dense = block["variants"]["dense"]
    assert dense["by_layer"] == {"a": {"interpretable_units": 1.5},
                                 "b": {"interpretable_units": 0.5}}
    assert dense["interpretable_units"]["mean"] == 2.0
    assert block["variants"]["gmp"]["interpretable_drop"]["mean"] == 1.0
    assert set(tables) == {"dissection_units", "dissection_replicas"}
    assert len(block["replicas"]) == 4
