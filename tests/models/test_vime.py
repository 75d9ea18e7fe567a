from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import dumps, loads
from models.corruption import MaskedView
from models.methods import METHODS, SSLMethod
from models.methods.vime import Vime, VimeParams


def _params(**kw: object) -> VimeParams:
    base = {"hidden_dim": 32, "n_layers": 2, "decoder_hidden_dim": 32, "decoder_layers": 2, "batch_size": 16}
    return VimeParams(**{**base, "epochs": 6, **kw})  # type: ignore[arg-type]


def test_defaults_follow_the_paper() -> None:
    p = VimeParams()
    assert (p.hidden_dim, p.n_layers, p.dropout) == (256, 4, 0.2)
    assert (p.corruption_rate, p.alpha, p.decoder_hidden_dim, p.decoder_layers) == (0.3, 2.0, 256, 4)
    assert (p.feature_output, p.corruption) == ("linear", "per_batch")
    assert (p.lr, p.batch_size, p.epochs) == (1e-3, 32, 500)
    assert VimeParams.from_dict(p.to_dict()) == p
    assert METHODS["vime"] is Vime and issubclass(Vime, SSLMethod) and Vime.name == "vime"


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"corruption_rate": 1.0}, r"corruption_rate must be in \[0, 1\), got 1.0"),
        ({"alpha": -0.5}, "alpha must be >= 0, got -0.5"),
        ({"decoder_layers": -1}, "decoder_layers must be >= 0, got -1"),
        ({"decoder_hidden_dim": 0}, "decoder_hidden_dim must be >= 1, got 0"),
        ({"feature_output": "tanh"}, "feature_output must be one of 'linear', 'sigmoid'"),
        ({"corruption": "once"}, "corruption must be one of 'per_batch', 'fixed'"),
        ({"lr": 0}, "lr must be > 0, got 0"),
        ({"p_m": 0.3}, r"unknown parameter\(s\) for VimeParams: \['p_m'\]"),
    ],
)
def test_params_reject(d: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VimeParams.from_dict(d)


def test_default_architecture_and_optimiser() -> None:
    method = Vime(30, device="cpu")
    for name in ("mask_decoder", "feature_decoder"):
        linears = [m for m in method.heads[name].modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(256, 256)] * 4 + [(256, 30)]
    assert isinstance(method.optimizer, torch.optim.RMSprop)
    group = method.optimizer.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"]) == (1e-3, 0.9, 1e-7)  # Keras' 'rmsprop', as the paper's code


def test_one_optimiser_step_lowers_the_loss(tiny_x: np.ndarray) -> None:
    method = Vime(30, _params(dropout=0.0, lr=1e-3), device="cpu")
    batch = torch.from_numpy(tiny_x[:32])
    method.network.train()
    torch.manual_seed(0)
    before = method.training_step(batch, torch.Generator().manual_seed(7))
    method.optimizer.zero_grad()
    before.backward()
    method.optimizer.step()
    after = method.training_step(batch, torch.Generator().manual_seed(7))  # same corruption
    assert after.item() < before.item() - 1e-2


@pytest.mark.parametrize("feature_output", ["linear", "sigmoid"])
def test_loss_terms_follow_the_decoders(tiny_x: np.ndarray, feature_output: str) -> None:
    method = Vime(30, _params(dropout=0.0, feature_output=feature_output, alpha=0.7), device="cpu")
    batch = torch.from_numpy(tiny_x[:16])
    view = method.corrupt(batch, torch.Generator().manual_seed(1))
    method.network.train()
    got = method.losses(batch, view)
    h = method.encoder(view.x_tilde)
    features = method.heads["feature_decoder"](h)
    if feature_output == "sigmoid":
        features = torch.sigmoid(features)
    bce = F.binary_cross_entropy_with_logits(method.heads["mask_decoder"](h), view.mask.float())
    mse = ((features - batch) ** 2).mean()
    torch.testing.assert_close(got.mask, bce)
    torch.testing.assert_close(got.feature, mse)
    torch.testing.assert_close(got.total, bce + 0.7 * mse)
    step = method.training_step(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(step, got.total)


class _Recording(Vime):
    """Records every batch's row index and mask labels as full (N, G) matrices per epoch."""

    seen: list[tuple[torch.Tensor, torch.Tensor, MaskedView]]

    def corrupt(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> MaskedView:
        view = super().corrupt(batch, generator, index=index)
        assert index is not None
        self.seen.append((index.clone(), batch.clone(), view))
        return view

    def epoch_masks(self, n: int, n_batches: int) -> list[torch.Tensor]:
        masks = []
        for e in range(len(self.seen) // n_batches):
            full = torch.zeros(n, self.n_genes, dtype=torch.bool)
            for index, _, view in self.seen[e * n_batches : (e + 1) * n_batches]:
                full[index] = view.drawn
            masks.append(full)
        return masks


@pytest.mark.parametrize("corruption", ["fixed", "per_batch"])
def test_fixed_corruption_is_reused_across_epochs_per_batch_is_not(tiny_x: np.ndarray, corruption: str) -> None:
    method = _Recording(30, _params(corruption=corruption, epochs=3), device="cpu")
    method.seen = []
    method.fit(tiny_x, seed=0)
    data = torch.from_numpy(tiny_x)
    for index, batch, view in method.seen:  # fit hands each batch its rows' positions
        assert torch.equal(batch, data[index])
        assert torch.equal(view.x_tilde[~view.mask], batch[~view.mask])
    e1, e2, e3 = method.epoch_masks(64, 4)
    assert abs(e1.float().mean().item() - 0.3) < 0.05
    if corruption == "fixed":
        assert torch.equal(e1, e2) and torch.equal(e2, e3)
    else:
        assert not torch.equal(e1, e2) and not torch.equal(e2, e3)


def test_fixed_corruption_is_drawn_from_the_seed(tiny_x: np.ndarray) -> None:
    x = torch.from_numpy(tiny_x)
    method = Vime(30, _params(corruption="fixed"), device="cpu")
    with pytest.raises(RuntimeError, match="setup"):
        method.corrupt(x[:4], torch.Generator(), index=torch.arange(4))
    index = torch.tensor([5, 0, 63])
    method.setup(x, torch.Generator().manual_seed(1))
    a = method.corrupt(x[index], torch.Generator().manual_seed(2), index=index)
    b = method.corrupt(x[index], torch.Generator().manual_seed(3), index=index)  # batch generator unused
    assert torch.equal(a.drawn, b.drawn) and torch.equal(a.x_tilde, b.x_tilde)
    method.setup(x, torch.Generator().manual_seed(1))
    assert torch.equal(method.corrupt(x[index], torch.Generator(), index=index).x_tilde, a.x_tilde)
    method.setup(x, torch.Generator().manual_seed(4))
    assert not torch.equal(method.corrupt(x[index], torch.Generator(), index=index).drawn, a.drawn)
    with pytest.raises(RuntimeError, match="index"):
        method.corrupt(x[index], torch.Generator())


def test_fit_on_a_tiny_matrix_lowers_the_loss(tiny_x: np.ndarray) -> None:
    method = Vime(30, _params(epochs=20), device="cpu")
    losses = method.fit(tiny_x, seed=0)
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert method.encoder(torch.from_numpy(tiny_x)).shape == (64, 32)
    assert not method.network.training


def test_fit_is_deterministic_for_a_seed(tiny_x: np.ndarray) -> None:
    a, b, c = (Vime(30, _params(epochs=3), device="cpu") for _ in range(3))
    la, lb, lc = a.fit(tiny_x, seed=3), b.fit(tiny_x, seed=3), c.fit(tiny_x, seed=4)
    assert la == lb and la != lc
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("corruption", ["per_batch", "fixed"])
def test_resume_from_training_state_matches_uninterrupted_run(tiny_x: np.ndarray, corruption: str) -> None:
    full = Vime(30, _params(corruption=corruption), device="cpu")
    full_losses = full.fit(tiny_x, seed=1)

    class Cancelled(Exception):
        pass

    saved: dict[str, bytes] = {}
    first = Vime(30, _params(corruption=corruption), device="cpu")

    def stop_after_two(epoch: int, loss: float) -> None:
        saved["state"] = dumps(first.training_state())
        if epoch == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        first.fit(tiny_x, seed=1, on_epoch_end=stop_after_two)
    state = loads(saved["state"])
    assert state["epoch"] == 2

    resumed = Vime(30, _params(corruption=corruption), device="cpu")
    rest = resumed.fit(tiny_x, seed=1, state=state)
    assert len(rest) == 4 and resumed.epoch == 6
    np.testing.assert_allclose(rest, full_losses[2:], rtol=1e-6)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[k], v, msg=k)


def test_resume_rejects_other_parameters(tiny_x: np.ndarray) -> None:
    method = Vime(30, _params(epochs=1), device="cpu")
    method.fit(tiny_x)
    other = Vime(30, _params(epochs=2, corruption="fixed"), device="cpu")
    with pytest.raises(ValueError, match="corruption"):
        other.fit(tiny_x, state=method.training_state())


def test_column_permutation_shuffles_each_gene_within_its_column() -> None:
    from models.corruption import column_permutation, vime_corruption

    x = torch.arange(64 * 30, dtype=torch.float32).reshape(64, 30)  # every entry distinct
    x_bar = column_permutation(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_bar.sort(dim=0).values, x)  # each column a permutation of its own values
    assert not torch.equal(x_bar, x) and not torch.equal(x_bar[:, 0].argsort(), x_bar[:, 1].argsort())
    view = vime_corruption(x, 0.9, generator=torch.Generator().manual_seed(1), replacement="column_permutation")
    for j in range(30):  # one permutation per column: no two rows take the same donor, as they do drawn per entry
        donated = view.x_tilde[view.drawn[:, j], j]
        assert donated.unique().numel() == donated.numel()
        assert ((donated % 30) == j).all()
    per_entry = vime_corruption(x, 0.9, generator=torch.Generator().manual_seed(1))
    assert any(
        per_entry.x_tilde[per_entry.drawn[:, j], j].unique().numel() < int(per_entry.drawn[:, j].sum())
        for j in range(30)
    )
    torch.testing.assert_close(view.mask, view.drawn & (view.x_tilde != x))
    with pytest.raises(ValueError, match="replacement must be one of"):
        vime_corruption(x, 0.3, replacement="rows")


@pytest.mark.parametrize("corruption", ["per_batch", "fixed"])
def test_column_permutation_trains(tiny_x: np.ndarray, corruption: str) -> None:
    assert VimeParams().replacement == "other_row"
    method = Vime(30, _params(epochs=3, replacement="column_permutation", corruption=corruption), device="cpu")
    losses = method.fit(tiny_x, seed=0)
    assert len(losses) == 3 and all(np.isfinite(losses))
    with pytest.raises(ValueError, match="replacement must be one of 'other_row', 'column_permutation'"):
        VimeParams.from_dict({"replacement": "per_column"})
