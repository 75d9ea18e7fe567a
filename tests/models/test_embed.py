from __future__ import annotations

import numpy as np
import pytest
import torch

from models.encoders import MLPEncoder, embed
from models.methods import Scarf, ScarfParams
from models.preprocessing import Preprocessor


def _scarf(n_genes: int = 30) -> Scarf:
    torch.manual_seed(0)
    return Scarf(n_genes, ScarfParams(hidden_dim=16, n_layers=2, epochs=1, batch_size=16), device="cpu")


def test_a_fresh_method_embeds_one_sample_in_eval_mode(tiny_x: np.ndarray) -> None:
    method = _scarf()
    assert method.encoder.training
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        method.encoder(torch.from_numpy(tiny_x[:1]))  # why embed exists: train-mode BatchNorm
    z = method.embed(tiny_x[:1])
    method.encoder.eval()
    with torch.no_grad():
        expected = method.encoder(torch.from_numpy(tiny_x[:1])).numpy()
    assert z.shape == (1, 16) and z.dtype == np.float32
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)


def test_embed_restores_the_mode_and_does_not_depend_on_batching(tiny_x: np.ndarray) -> None:
    method = _scarf()
    method.fit(tiny_x, seed=0)
    method.network.train()
    whole = method.embed(tiny_x)
    assert method.encoder.training  # restored: embedding between epochs leaves training as it was
    np.testing.assert_allclose(method.embed(tiny_x, batch_size=5), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(method.embed(tiny_x[7:8]), whole[7:8], rtol=1e-5, atol=1e-6)


def test_embed_with_a_preprocessor_matches_transform_then_embed() -> None:
    rng = np.random.default_rng(0)
    raw = rng.poisson(300.0, size=(20, 8)).astype(np.float64)
    pre = Preprocessor.fit(raw, [f"G{j}" for j in range(8)])
    torch.manual_seed(0)
    encoder = MLPEncoder(8, hidden_dim=4, n_layers=1, dropout=0.0)
    with_missing = raw.copy()
    with_missing[3, 2] = np.nan  # a missing gene: the training mean, as transform imputes it
    seen: list[tuple[int, int]] = []
    z = embed(encoder, with_missing, preprocessor=pre, batch_size=6,
              check_batch=lambda x, rows: seen.append((rows.start, x.shape[0])))
    np.testing.assert_allclose(z, embed(encoder, pre.transform(with_missing)), rtol=1e-6)
    assert seen == [(0, 6), (6, 6), (12, 6), (18, 2)]


def test_embed_refuses_wrong_widths_and_non_finite_values(tiny_x: np.ndarray) -> None:
    method = _scarf()
    with pytest.raises(ValueError, match=r"shape \(n_samples, 30\)"):
        method.embed(tiny_x[:, :29])
    bad = tiny_x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="row 5, column 3"):
        method.embed(bad, batch_size=4)
    assert method.embed(tiny_x[:0]).shape == (0, 16)
