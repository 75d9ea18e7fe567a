from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import dumps, loads
from models.methods.scarf import Scarf, ScarfParams


def _params(**kw: object) -> ScarfParams:
    base = {"hidden_dim": 32, "n_layers": 2, "batch_size": 32, "lr": 3e-3, "temperature": 0.5, "epochs": 6}
    return ScarfParams(**{**base, **kw})  # type: ignore[arg-type]


def test_one_optimiser_step_lowers_the_loss(tiny_x: np.ndarray) -> None:
    method = Scarf(30, _params(dropout=0.0), device="cpu")
    method.setup(torch.from_numpy(tiny_x))
    batch = torch.from_numpy(tiny_x[:32])
    method.network.train()
    torch.manual_seed(0)
    before = method.training_step(batch, torch.Generator().manual_seed(7))
    method.optimizer.zero_grad()
    before.backward()
    method.optimizer.step()
    after = method.training_step(batch, torch.Generator().manual_seed(7))  # same corruption
    assert after.item() < before.item() - 1e-3


def test_fit_on_a_tiny_matrix_lowers_the_loss(tiny_x: np.ndarray) -> None:
    seen: list[tuple[int, float]] = []
    method = Scarf(30, _params(epochs=30), device="cpu")
    losses = method.fit(tiny_x, seed=0, on_epoch_end=lambda e, loss: seen.append((e, loss)))
    assert len(losses) == 30 and np.isfinite(losses).all()
    assert [e for e, _ in seen] == list(range(1, 31))
    assert [loss for _, loss in seen] == losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert method.encoder(torch.from_numpy(tiny_x)).shape == (64, 32)
    assert not method.network.training  # left in eval mode


def test_fit_is_deterministic_for_a_seed(tiny_x: np.ndarray) -> None:
    a, b, c = (Scarf(30, _params(), device="cpu") for _ in range(3))
    la, lb, lc = a.fit(tiny_x, seed=3), b.fit(tiny_x, seed=3), c.fit(tiny_x, seed=4)
    assert la == lb and la != lc
    for (k, va), vb in zip(a.encoder.state_dict().items(), b.encoder.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_resume_from_training_state_matches_uninterrupted_run(tiny_x: np.ndarray) -> None:
    full = Scarf(30, _params(), device="cpu")
    full_losses = full.fit(tiny_x, seed=1)

    class Cancelled(Exception):
        pass

    saved: dict[str, bytes] = {}
    first = Scarf(30, _params(), device="cpu")

    def stop_after_two(epoch: int, loss: float) -> None:
        saved["state"] = dumps(first.training_state())  # torch.save; loads uses weights_only=True
        if epoch == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        first.fit(tiny_x, seed=1, on_epoch_end=stop_after_two)
    state = loads(saved["state"])
    assert state["epoch"] == 2

    resumed = Scarf(30, _params(), device="cpu")
    rest = resumed.fit(tiny_x, seed=1, state=state)
    assert len(rest) == 4 and resumed.epoch == 6
    np.testing.assert_allclose(rest, full_losses[2:], rtol=1e-6)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[k], v, msg=k)


def test_resume_rejects_other_parameters(tiny_x: np.ndarray) -> None:
    method = Scarf(30, _params(epochs=1), device="cpu")
    method.fit(tiny_x)
    other = Scarf(30, _params(epochs=3, corruption_rate=0.5), device="cpu")
    with pytest.raises(ValueError, match="corruption_rate"):
        other.fit(tiny_x, state=method.training_state())
    longer = Scarf(30, _params(epochs=3), device="cpu")  # a bigger epoch budget is fine
    assert len(longer.fit(tiny_x, state=method.training_state())) == 2


def test_marginal_replacement_and_singleton_last_batch(tiny_x: np.ndarray) -> None:
    # 33 rows with batch 16 leaves a batch of 1, which BatchNorm cannot train on: it is dropped.
    method = Scarf(30, _params(replacement="marginal", batch_size=16, epochs=2), device="cpu")
    losses = method.fit(tiny_x[:33], seed=0)
    assert len(losses) == 2 and np.isfinite(losses).all()


def test_fit_validates_input(tiny_x: np.ndarray) -> None:
    method = Scarf(30, _params(), device="cpu")
    with pytest.raises(ValueError, match=r"shape \(n_samples, 30\)"):
        method.fit(tiny_x[:, :10])
    bad = tiny_x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        method.fit(bad)
    with pytest.raises(TypeError):
        Scarf(30, object(), device="cpu")  # type: ignore[arg-type]


def test_device_auto_resolves() -> None:
    method = Scarf(5, _params())
    assert method.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_batchnorm_statistics_are_those_of_clean_data_after_pretraining(tiny_x: np.ndarray) -> None:
    x = torch.from_numpy(tiny_x)
    stats = {}
    for choice in ("clean", "training"):
        method = Scarf(30, _params(batch_size=x.shape[0], epochs=3, batchnorm_stats=choice), device="cpu")
        method.fit(tiny_x, seed=0)
        first_linear, first_norm = method.encoder.net[0], method.encoder.net[1]
        with torch.no_grad():
            h = first_linear(x)  # what the first BatchNorm sees on clean data
        stats[choice] = (first_norm.running_mean.clone(), first_norm.running_var.clone(), h.mean(0), h.var(0))
    mean, var, clean_mean, clean_var = stats["clean"]
    torch.testing.assert_close(mean, clean_mean, rtol=0, atol=1e-5)  # one batch: exactly the clean statistics
    torch.testing.assert_close(var, clean_var, rtol=1e-4, atol=1e-5)
    # The released code's statistics also average SCARF's corrupted view: further from the clean data's.
    mean, var, clean_mean, clean_var = stats["training"]
    assert (var / clean_var).median() > 1.2


def test_batchnorm_statistics_cover_rows_stored_in_order() -> None:
    # 8 groups of 640 rows, stored group after group, each group shifted: chunks in stored order would each
    # see one or two groups, and their mean within-chunk variance would leave out the spread between groups.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5120, 30)) + np.repeat(rng.normal(scale=2.0, size=(8, 30)), 640, axis=0)
    x = x.astype(np.float32)
    method = Scarf(30, _params(batch_size=256, epochs=1), device="cpu")
    method.fit(x, seed=0)
    first_linear, first_norm = method.encoder.net[0], method.encoder.net[1]
    with torch.no_grad():
        clean_var = first_linear(torch.from_numpy(x)).var(0)
    ratio = (first_norm.running_var / clean_var).median().item()
    assert 0.9 < ratio < 1.1, ratio  # chunks in stored order: well below 1
