"""The pruning facade: registration, dispatch, and the methods inside the real training loop."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from compaudit.compress import pruning
from compaudit.compress.registry import CompressedModel, CompressionContext, compress
from compaudit.configs.compress import (
    ConstrainedFinetuneConfig,
    GradualMagnitudeConfig,
    LotteryTicketConfig,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
    UnitPruningConfig,
)
from compaudit.models.architectures import build_model
from compaudit.models.training import TrainConfig, train


def test_every_pruning_config_is_registered():
    # The repair keeps its base's zeros, so its variants are pruned ones too.
    assert set(pruning.PRUNING_CONFIGS) == {
        GradualMagnitudeConfig, OneShotMagnitudeConfig, RandomPruningConfig,
        UnitPruningConfig, LotteryTicketConfig, ConstrainedFinetuneConfig}
    assert set(pruning.__all__) <= set(dir(pruning))


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(TypeError, match="GradualMagnitudeConfig"):
        compress(torch.nn.Linear(2, 2), object())


def _real_fine_tune(data, *, epochs=1, seed=0, checkpoint_dir=None):
    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, seed=seed, num_threads=1,
                         schedule="constant", weight_decay=0.0)

    def fine_tune(model, callbacks):
        train(model, data, config, step_callbacks=callbacks, progress=False,
              checkpoint_dir=checkpoint_dir)

    return fine_tune


@pytest.mark.parametrize(
    "config",
    [
        pruning.GradualMagnitudeConfig(sparsity=0.8, begin_step=2, end_step=6, frequency=2),
        pruning.OneShotMagnitudeConfig(sparsity=0.5, scope="global"),
        pruning.RandomPruningConfig(sparsity=0.5),
        pruning.UnitPruningConfig(fraction=0.25, n_batches=2),
        pruning.LotteryTicketConfig(sparsity=0.36, rewind_step=2),
    ],
    ids=lambda c: type(c).__name__,
)
def test_methods_on_small_cnn_with_the_real_training_loop(tiny, config):
    torch.manual_seed(0)
    data = tiny.make_images(256, size=16, classes=3)
    model = build_model("small_cnn", num_classes=3)
    _real_fine_tune(data, seed=1)(model, [])  # the "dense trained" model
    out = compress(model, config, context=CompressionContext(
        train_dataset=data, fine_tune=_real_fine_tune(data, seed=2), seed=3))
    assert isinstance(out, CompressedModel) and out.model is model
    json.dumps(out.info)  # the info goes to variants.json as is
    for name, mask in out.masks.items():
        assert torch.all(model.get_parameter(name)[~mask] == 0)
    assert out.info["pruned"] == sum(int((~m).sum()) for m in out.masks.values())
    target = getattr(config, "sparsity", None)
    if target is not None:
        if config.scope == "global":
            assert out.info["pruned"] == round(target * out.info["prunable"])
        else:
            assert out.info["pruned"] == sum(round(target * m.numel()) for m in out.masks.values())
        assert "features.0.weight" not in out.masks  # first conv excluded by default


def test_gmp_resumes_inside_train_to_the_same_weights(tiny, tmp_path):
    """A run killed after epoch 1 and resumed ends exactly like an uninterrupted one."""
    data = tiny.make_images(128, size=16, classes=3)
    cfg = pruning.GradualMagnitudeConfig(sparsity=0.7, begin_step=2, end_step=10, frequency=2)
    tconf = TrainConfig(epochs=3, batch_size=32, lr=0.05, seed=0, num_threads=1)
    torch.manual_seed(0)
    start = build_model("small_cnn", num_classes=3)

    full = copy.deepcopy(start)
    cb_full = pruning.GradualPruningCallback(cfg)
    train(full, data, tconf, step_callbacks=[cb_full], progress=False)

    class Stop(Exception):
        pass

    def stop_at_2(epoch, model):
        if epoch == 2:
            raise Stop

    killed = copy.deepcopy(start)
    with pytest.raises(Stop):
        train(killed, data, tconf, step_callbacks=[pruning.GradualPruningCallback(cfg)],
              epoch_callbacks=[stop_at_2], checkpoint_dir=tmp_path, progress=False)
    resumed = copy.deepcopy(start)
    cb_resumed = pruning.GradualPruningCallback(cfg)
    train(resumed, data, tconf, step_callbacks=[cb_resumed], checkpoint_dir=tmp_path,
          progress=False)
    assert cb_resumed.updates == cb_full.updates and cb_full.finished
    assert all(torch.equal(cb_resumed.masks[n], cb_full.masks[n]) for n in cb_full.masks)
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
