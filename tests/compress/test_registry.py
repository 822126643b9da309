"""compress(): the method entry names the handler, and its flags say what the handler does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compaudit.compress.registry import CompressionContext, compress
from compaudit.configs.compress import (
    METHODS,
    BFloat16Config,
    ConstrainedFinetuneConfig,
    Float16Config,
    GradualMagnitudeConfig,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
    LoadConfig,
    LotteryTicketConfig,
    Method,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
    UnitPruningConfig,
    method_of,
)
from compaudit.models.architectures import build_model
from compaudit.models.training import TrainConfig, train

SIZE = 16


class _Counted(torch.utils.data.Dataset):
    """Training images that count how often they are read."""

    def __init__(self, n: int = 16) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, SIZE, SIZE, generator=gen)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], i % 2, f"ex/{i}"

    def examples(self):
        import pandas as pd

        return pd.DataFrame({"example_id": [f"ex/{i}" for i in range(len(self))],
                             "label": [i % 2 for i in range(len(self))]})


def _configs(tmp_path) -> dict[str, object]:
    """A small config of every registered method (a new method must be added here)."""
    dense_file = tmp_path / "pruned.pt"
    torch.save(_dense().state_dict(), dense_file)
    return {
        "gradual_magnitude": GradualMagnitudeConfig(sparsity=0.5, begin=0.0, end=0.5,
                                                    frequency=1),
        "one_shot_magnitude": OneShotMagnitudeConfig(sparsity=0.5, penalty_batches=1,
                                                     batch_size=4),
        "random": RandomPruningConfig(sparsity=0.5, penalty_batches=1, batch_size=4),
        "unit": UnitPruningConfig(fraction=0.5, n_batches=1, batch_size=4),
        "lottery": LotteryTicketConfig(sparsity=0.5, rounds=1),
        "float16": Float16Config(),
        "bfloat16": BFloat16Config(),
        "int8_weight_only": Int8WeightOnlyConfig(),
        "int8_static": Int8StaticConfig(calibration_images=4, calibration_batch_size=2),
        "load": LoadConfig(files=(str(dense_file),)),
        "constrained_finetune": ConstrainedFinetuneConfig(base="gmp", epochs=1, batch_size=8),
    }


def _base_of(config: object) -> nn.Module | None:
    """For a method deriving from another variant: that variant's replica (pruned)."""
    if method_of(config).derives_from is None:
        return None
    return compress(_dense(), OneShotMagnitudeConfig(sparsity=0.5, fine_tune=False,
                                                     penalty_batches=0)).model


def _dense() -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=2).eval()


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Conv and linear weights of a compressed model, as float (masks folded in)."""
    return [m.weight.detach().float() for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(m.weight, torch.Tensor)]


def test_every_method_is_one_entry_keyed_by_its_config():
    assert len({entry.config for _, entry in METHODS.items()}) == len(METHODS.names())
    for name, entry in METHODS.items():
        assert entry.name == name and method_of(entry.config.__new__(entry.config)) is entry
    with pytest.raises(TypeError, match="no compression method for object; valid: "
                                        "GradualMagnitudeConfig"):
        compress(nn.Linear(2, 2), object())


def test_every_methods_flags_agree_with_what_its_handler_does(tmp_path):
    configs = _configs(tmp_path)
    assert set(configs) == set(METHODS.names())
    for name, config in configs.items():
        entry = METHODS.get(name)
        data, tuned = _Counted(), []
        settings = TrainConfig(epochs=1, batch_size=8, lr=0.01, num_threads=1,
                               schedule="constant")

        def fine_tune(model, callbacks, data=data, tuned=tuned):
            tuned.append(True)
            train(model, data, settings, step_callbacks=callbacks, progress=False)

        context = CompressionContext(train_dataset=data, calibration_dataset=data,
                                     fine_tune=fine_tune, fine_tune_steps=2, replicas=1,
                                     base_model=_base_of(config))
        out = compress(_dense(), config, context=context)
        assert out.info["method"] == name, name
        # A derived method trains with its own loop (a Lagrangian): several passes over
        # the training set, not context.fine_tune.
        trained = bool(tuned) if entry.derives_from is None else data.reads > 2 * len(data)
        assert entry.trains == trained, name
        assert entry.reads_training_set == (data.reads > 0), name
        weights = _weights(out.model)
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        if entry.prunes:
            assert zeros > 0.1 and out.info["sparsity"] > 0.1, name
            assert entry.axis == "sparsity" and "bits" not in out.info, name
        else:
            assert zeros < 0.01, name
        if entry.quantizes:
            assert entry.axis == "bits", name
            dtype = {16: config.__class__ is BFloat16Config and torch.bfloat16 or torch.float16,
                     8: None}[out.info["bits"]]
            for w in weights:
                if dtype is not None:  # every weight is a value of that float type
                    assert torch.equal(w, w.to(dtype).float()), name
                else:  # at most 256 levels per output channel
                    assert max(len(torch.unique(row)) for row in w.flatten(1)) <= 256, name
        else:
            assert "bits" not in out.info, name
        assert entry.compresses_weights == (entry.files(config) == ()), name
        # A method compaudit does not run itself puts each variant in its own family.
        assert (entry.family_of("v") == "v") == (not entry.compresses_weights), name


def test_a_method_reading_no_training_set_runs_without_one(tmp_path):
    for name, config in _configs(tmp_path).items():
        if not METHODS.get(name).reads_training_set:
            compress(_dense(), config, context=CompressionContext(replicas=1))


def test_an_entry_refuses_contradictory_flags():
    with pytest.raises(ValueError, match="trains, so it reads the training set"):
        Method(name="x", config=object, handler="m:f", trains=True)
    with pytest.raises(ValueError, match="axis 'width' is not one of"):
        Method(name="x", config=object, handler="m:f", axis="width")  # type: ignore[arg-type]


def test_a_load_of_the_wrong_file_count_is_refused_before_loading(tmp_path):
    config = _configs(tmp_path)["load"]
    from compaudit.errors import AuditInputError

    with pytest.raises(AuditInputError, match="files lists 1 file\\(s\\) for 2 dense replica"):
        compress(_dense(), config, context=CompressionContext(replicas=2))
