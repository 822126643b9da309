"""Population embeddings: the input of each replica's final layer, averaged over replicas,
checked against the same features computed directly with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from compaudit.errors import AuditInputError
from compaudit.predict.embeddings import classifier_layer, embed_population
from tests.predict.test_population import make_models, random_dataset


def _direct_small_cnn(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """small_cnn's penultimate features by hand: features -> pool -> flatten."""
    with torch.no_grad():
        return model.pool(model.features(images)).flatten(1).numpy()


def _direct_resnet(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """torchvision ResNet's forward up to (not through) ``fc``, written out."""
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return torch.flatten(model.avgpool(x), 1).numpy()


def test_small_cnn_replicas_average_of_direct_features():
    ds = random_dataset(37, num_classes=2, size=16, seed=3)
    models = make_models("small_cnn", 3, num_classes=2, seed=10)
    ids, feats = embed_population(models, ds, batch_size=8, progress=False)
    expected = np.mean([_direct_small_cnn(m.eval(), ds.images) for m in models], axis=0)
    assert ids.tolist() == [f"t/{i}" for i in range(37)]
    assert feats.dtype == np.float32 and feats.shape == (37, 64)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    # Not the logits, and each replica's own features differ from the mean.
    assert not np.allclose(feats, _direct_small_cnn(models[0], ds.images), atol=1e-3)


def test_torchvision_resnet18_features_and_modes_restored():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    model.train()  # embedding runs in eval mode, then gives the mode back
    ds = random_dataset(6, num_classes=5, size=32, seed=1)
    ids, feats = embed_population([model], ds, batch_size=4, progress=False)
    assert model.training
    expected = _direct_resnet(model.eval(), ds.images)
    assert feats.shape == (6, 512)
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


def test_final_layer_is_the_innermost_module_returning_the_logits():
    image = torch.randn(3, 32, 32)
    torch.manual_seed(0)
    mobile = torchvision.models.mobilenet_v3_small(num_classes=3)
    assert classifier_layer(mobile.eval(), image) == "classifier.3"  # not "classifier"
    assert classifier_layer(make_models("small_cnn", 1, num_classes=2, seed=0)[0].eval(),
                            image) == "fc"


class _Squeezed(nn.Module):
    """A sigmoid-head model that squeezes its last layer's output (not the same tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.ReLU())
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return self.head(self.body(x)).squeeze(1)


def test_transformed_output_falls_back_to_the_layer_of_that_size():
    torch.manual_seed(0)
    model = _Squeezed().eval()
    images = torch.randn(5, 3, 4, 4)
    assert classifier_layer(model, images[0]) == "head"
    ds = random_dataset(5, num_classes=2, size=4, seed=0)
    _, feats = embed_population([model], ds, batch_size=2, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(feats, model.body(ds.images).numpy(), rtol=1e-5,
                                   atol=1e-6)


class _Tuple(nn.Module):
    def forward(self, x):
        return (x.mean(), x.std())


def test_model_without_logits_is_refused():
    with pytest.raises(AuditInputError, match="returns tuple; expected a tensor of logits"):
        classifier_layer(_Tuple(), torch.randn(3, 4, 4))
    with pytest.raises(AuditInputError, match="no models"):
        embed_population([], random_dataset(2, num_classes=2, size=4), progress=False)
