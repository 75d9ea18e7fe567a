"""Argument checks that name the problem: VIME mask labels, float labels in metrics, seeds, device names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.classifiers import HeadParams, fit_encoder_classifier
from models.device import resolve_device
from models.encoders import MLPEncoder
from models.evaluation import classification_metrics
from models.losses import vime_loss
from models.methods import Scarf, ScarfParams


def test_vime_loss_takes_only_0_1_mask_labels() -> None:
    logits, x = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="mask must hold 0/1 labels"):
        vime_loss(logits, torch.full((2, 3), 2.0), x, x)
    with pytest.raises(ValueError, match="got nan"):
        vime_loss(logits, torch.tensor([[0.0, 1.0, float("nan")], [0.0, 0.0, 0.0]]), x, x)
    zero_one = vime_loss(logits, torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]), x, x)
    as_bool = vime_loss(logits, torch.tensor([[False, True, True], [False, False, True]]), x, x)
    assert float(zero_one.mask) == pytest.approx(float(np.log(2.0))) and torch.equal(zero_one.total, as_bool.total)


def test_metrics_take_whole_number_float_labels() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    as_float = classification_metrics(y.astype(float), proba, ["0", "1"])
    assert as_float == classification_metrics(y, proba, ["0", "1"])
    assert as_float["accuracy"] == 0.75
    with pytest.raises(ValueError, match="labels not in classes"):
        classification_metrics(y + 0.5, proba, ["0", "1"])


def test_a_seed_must_be_an_integer(tiny_x: np.ndarray) -> None:
    method = Scarf(30, ScarfParams(hidden_dim=8, n_layers=1, epochs=1, batch_size=32), device="cpu")
    with pytest.raises(TypeError, match="seed must be an integer, got None"):
        method.fit(tiny_x, seed=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an integer, got 1.5"):
        method.fit(tiny_x, seed=1.5)  # type: ignore[arg-type]
    assert len(method.fit(tiny_x, seed=np.int64(3))) == 1
    y = np.arange(64) % 2
    with pytest.raises(TypeError, match="seed must be an integer, got None"):
        fit_encoder_classifier(MLPEncoder(30, 8, 1), tiny_x, y, None, None, 2, freeze_encoder=True,
                               params=HeadParams(max_epochs=1), seed=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta", "CUDA", ""])
def test_an_unknown_device_names_the_accepted_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, cuda:N(, mps)?; got "):
        resolve_device(name)


def test_known_devices_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, cuda:N; got 'mps'"):
            resolve_device("mps")
