"""Continued pretraining in the models layer: ``fit(init_encoder=...)`` and statistics kept from a parent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.methods import METHODS
from models.methods.byol import Byol
from models.preprocessing import Preprocessor


def weight_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference between two modules' parameters."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


def _parent(name: str, x: np.ndarray) -> torch.nn.Module:
    cls = METHODS[name]
    method = cls(x.shape[1], cls.params_class.from_dict({"epochs": 2, "batch_size": 32, "hidden_dim": 16}))
    method.fit(x, seed=3)
    return method.encoder


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_continued_fit_starts_from_the_given_encoder(name: str, tiny_x: np.ndarray) -> None:
    parent = _parent(name, tiny_x)
    cls = METHODS[name]
    # An almost zero learning rate: after one epoch the encoder's weights are still the parent's.
    params = cls.params_class.from_dict({"epochs": 1, "batch_size": 32, "hidden_dim": 16, "lr": 1e-12})
    child = cls(tiny_x.shape[1], params)
    child.fit(tiny_x, seed=0, init_encoder=parent.state_dict())
    scratch = cls(tiny_x.shape[1], params)
    scratch.fit(tiny_x, seed=0)

    assert weight_gap(child.encoder, parent) < 1e-6
    assert weight_gap(scratch.encoder, parent) > 0.05  # from scratch the same run ends elsewhere


def test_byol_target_starts_as_the_loaded_encoder(tiny_x: np.ndarray) -> None:
    parent = _parent("byol", tiny_x)
    child = Byol(tiny_x.shape[1], Byol.params_class.from_dict({"hidden_dim": 16}))
    child.load_encoder_weights(parent.state_dict())

    for got, want in zip(child.target.encoder.parameters(), parent.parameters(), strict=True):
        assert torch.equal(got, want)


def test_weights_of_another_architecture_are_refused(tiny_x: np.ndarray) -> None:
    parent = _parent("scarf", tiny_x)
    cls = METHODS["scarf"]
    wider = cls(tiny_x.shape[1], cls.params_class.from_dict({"hidden_dim": 32}))

    with pytest.raises(ValueError, match="do not fit this scarf encoder"):
        wider.load_encoder_weights(parent.state_dict())


def test_genes_without_values_keep_the_fallback_statistics() -> None:
    genes = ["a", "b", "c"]
    parent = Preprocessor(genes=genes, log1p=False, mean=np.array([1.0, 2.0, 3.0], np.float32),
                          std=np.array([0.5, 0.5, 4.0], np.float32))
    x = np.array([[10.0, 0.0, np.nan], [14.0, 2.0, np.nan]])

    fitted = Preprocessor.fit(x, genes, log1p=False, fallback=parent)

    np.testing.assert_allclose(fitted.mean, [12.0, 1.0, 3.0])
    np.testing.assert_allclose(fitted.std, [2.0, 1.0, 4.0])
    # The gene without values is imputed with the mean, 0 after standardising; later inputs that have it
    # are standardised with the parent's statistics.
    np.testing.assert_allclose(fitted.transform(x)[:, 2], [0.0, 0.0])
    np.testing.assert_allclose(fitted.transform(np.array([[12.0, 1.0, 11.0]])), [[0.0, 0.0, 2.0]])


def test_fallback_of_other_genes_is_refused() -> None:
    parent = Preprocessor(genes=["a", "b"], log1p=False, mean=np.zeros(2, np.float32), std=np.ones(2, np.float32))

    with pytest.raises(ValueError, match="same genes"):
        Preprocessor.fit(np.ones((2, 2)), ["a", "x"], log1p=False, fallback=parent)
