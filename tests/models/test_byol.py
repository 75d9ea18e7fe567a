from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.checkpoint import dumps, loads
from models.methods import METHODS, SSLMethod
from models.methods.byol import Byol, ByolParams, TargetNetwork, ema_decay


def _params(**kw: object) -> ByolParams:
    base = {"hidden_dim": 32, "n_layers": 2, "projector_hidden_dim": 64, "projection_dim": 16, "lr": 0.05}
    return ByolParams(**{**base, "batch_size": 16, "epochs": 6, **kw})  # type: ignore[arg-type]


def _online_target_pairs(method: Byol) -> list[tuple[torch.Tensor, torch.Tensor]]:
    online = [*method.encoder.parameters(), *method.heads["projector"].parameters()]
    target = [*method.target.encoder.parameters(), *method.target.projector.parameters()]
    return list(zip(online, target, strict=True))


def test_defaults_follow_the_paper() -> None:
    p = ByolParams()
    assert (p.hidden_dim, p.n_layers, p.dropout, p.corruption_rate) == (256, 4, 0.2, 0.3)
    assert (p.projector_hidden_dim, p.projection_dim, p.tau, p.ema_schedule) == (4096, 256, 0.9, "constant")
    assert (p.lr, p.momentum, p.batch_size, p.epochs) == (1e-4, 0.9, 32, 50)
    assert ByolParams.from_dict(p.to_dict()) == p
    assert METHODS["byol"] is Byol and issubclass(Byol, SSLMethod) and Byol.name == "byol"


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"tau": 1.5}, r"tau must be in \[0, 1\], got 1.5"),
        ({"ema_schedule": "linear"}, "ema_schedule must be one of 'constant', 'cosine'"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"projector_hidden_dim": 0}, "projector_hidden_dim must be >= 1, got 0"),
        ({"corruption_rate": -0.1}, r"corruption_rate must be in \[0, 1\)"),
        ({"batch_size": 1}, "batch_size must be >= 2, got 1"),
        ({"decay": 0.99}, r"unknown parameter\(s\) for ByolParams: \['decay'\]"),
    ],
)
def test_params_reject(d: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ByolParams.from_dict(d)


def test_default_architecture_target_and_optimiser() -> None:
    method = Byol(30, device="cpu")
    for name, in_dim in (("projector", 256), ("predictor", 256)):
        layers = list(method.heads[name].modules())
        linears = [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)]
        assert linears == [(in_dim, 4096), (4096, 256)]
        assert any(isinstance(m, nn.BatchNorm1d) and m.num_features == 4096 for m in layers)
    assert isinstance(method.target, TargetNetwork)
    assert all(not t.requires_grad for t in method.target.parameters())
    for online, target in _online_target_pairs(method):  # the target starts as a copy of the online network
        assert torch.equal(online, target) and online is not target
    opt = method.optimizer
    assert isinstance(opt, torch.optim.SGD)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]) == (1e-4, 0.9)
    in_opt = {id(t) for g in opt.param_groups for t in g["params"]}
    assert not in_opt & {id(t) for t in method.target.parameters()}
    online_ids = {id(t) for name, t in method.network.named_parameters() if not name.startswith("heads.target.")}
    assert in_opt == online_ids
    assert method.encoder is method.network["encoder"]  # the downstream representation is the online encoder


def test_one_optimiser_step_lowers_the_loss(tiny_x: np.ndarray) -> None:
    method = Byol(30, _params(dropout=0.0), device="cpu")
    batch = torch.from_numpy(tiny_x[:32])
    method.network.train()
    before = method.training_step(batch, torch.Generator().manual_seed(7))
    method.optimizer.zero_grad()
    before.backward()
    method.optimizer.step()
    method.after_step()
    after = method.training_step(batch, torch.Generator().manual_seed(7))  # same corruption
    assert after.item() < before.item() - 1e-2


def test_target_moves_only_by_ema(tiny_x: np.ndarray) -> None:
    method = Byol(30, _params(tau=0.9), device="cpu")
    batch = torch.from_numpy(tiny_x[:32])
    # Let online and target differ first, so that the EMA is distinguishable from a copy.
    method.fit(tiny_x, seed=0)
    method.network.train()
    old_target = [t.detach().clone() for _, t in _online_target_pairs(method)]
    assert method.current_tau() == 0.9
    loss = method.training_step(batch, torch.Generator().manual_seed(1))
    method.optimizer.zero_grad()
    loss.backward()
    assert all(t.grad is None for t in method.target.parameters())
    method.optimizer.step()
    unchanged = [t.detach().clone() for _, t in _online_target_pairs(method)]
    for before, now in zip(old_target, unchanged, strict=True):
        assert torch.equal(before, now)  # the optimiser step did not touch the target
    method.after_step()
    moved = 0
    for (online, target), old in zip(_online_target_pairs(method), old_target, strict=True):
        torch.testing.assert_close(target, 0.9 * old + 0.1 * online, rtol=1e-6, atol=1e-7)
        moved += int(not torch.equal(target, old))
    assert moved > 0


def test_ema_decay_schedule_values() -> None:
    assert ema_decay(0.9, 17, None, "constant") == 0.9
    assert ema_decay(0.9, 0, 100, "cosine") == pytest.approx(0.9)
    assert ema_decay(0.9, 50, 100, "cosine") == pytest.approx(0.95)
    assert ema_decay(0.9, 25, 100, "cosine") == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    assert ema_decay(0.9, 100, 100, "cosine") == pytest.approx(1.0)
    assert ema_decay(0.9, 150, 100, "cosine") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total_steps"):
        ema_decay(0.9, 0, None, "cosine")


def test_cosine_schedule_raises_tau_over_training(tiny_x: np.ndarray) -> None:
    method = Byol(30, _params(ema_schedule="cosine", epochs=5), device="cpu")
    taus: list[float] = []
    method.fit(tiny_x, seed=0, on_epoch_end=lambda e, loss: taus.append(method.current_tau()))
    assert int(method.target.updates) == 5 * 4  # 64 rows, batch 16: K = 20 steps
    expected = [1 - 0.1 * (math.cos(math.pi * 4 * e / 20) + 1) / 2 for e in range(1, 6)]
    np.testing.assert_allclose(taus, expected, rtol=1e-12)
    assert all(a < b for a, b in zip(taus, taus[1:], strict=False)) and taus[-1] == pytest.approx(1.0)
    constant = Byol(30, _params(epochs=2), device="cpu")
    constant.fit(tiny_x, seed=0)
    assert constant.current_tau() == 0.9


def test_cosine_ema_uses_the_step_decay(tiny_x: np.ndarray) -> None:
    method = Byol(30, _params(ema_schedule="cosine", epochs=2), device="cpu")
    method.setup(torch.from_numpy(tiny_x))  # K = 2 epochs x 4 batches
    method.target.updates.fill_(2)
    tau = 1 - 0.1 * (math.cos(math.pi * 2 / 8) + 1) / 2
    assert method.current_tau() == pytest.approx(tau)
    with torch.no_grad():
        for t in method.encoder.parameters():
            t.add_(1.0)
    old = copy.deepcopy([t for _, t in _online_target_pairs(method)])
    method.after_step()
    for (online, target), before in zip(_online_target_pairs(method), old, strict=True):
        torch.testing.assert_close(target, tau * before + (1 - tau) * online)
    assert int(method.target.updates) == 3


def test_fit_on_a_tiny_matrix_lowers_the_loss(tiny_x: np.ndarray) -> None:
    method = Byol(30, _params(epochs=20), device="cpu")
    losses = method.fit(tiny_x, seed=0)
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert all(0.0 <= v <= 8.0 for v in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    assert method.encoder(torch.from_numpy(tiny_x)).shape == (64, 32)
    assert not method.network.training


def test_fit_is_deterministic_for_a_seed(tiny_x: np.ndarray) -> None:
    a, b, c = (Byol(30, _params(epochs=3), device="cpu") for _ in range(3))
    la, lb, lc = a.fit(tiny_x, seed=3), b.fit(tiny_x, seed=3), c.fit(tiny_x, seed=4)
    assert la == lb and la != lc
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_from_training_state_matches_uninterrupted_run(tiny_x: np.ndarray, schedule: str) -> None:
    full = Byol(30, _params(ema_schedule=schedule), device="cpu")
    full_losses = full.fit(tiny_x, seed=1)

    class Cancelled(Exception):
        pass

    saved: dict[str, bytes] = {}
    first = Byol(30, _params(ema_schedule=schedule), device="cpu")

    def stop_after_two(epoch: int, loss: float) -> None:
        saved["state"] = dumps(first.training_state())
        if epoch == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        first.fit(tiny_x, seed=1, on_epoch_end=stop_after_two)
    state = loads(saved["state"])
    assert state["epoch"] == 2
    assert any(k.startswith("heads.target.") for k in state["model"])  # the target is checkpointed
    assert int(state["model"]["heads.target.updates"]) == 2 * 4

    resumed = Byol(30, _params(ema_schedule=schedule), device="cpu")
    rest = resumed.fit(tiny_x, seed=1, state=state)
    assert len(rest) == 4 and resumed.epoch == 6
    np.testing.assert_allclose(rest, full_losses[2:], rtol=1e-6)
    for k, v in full.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[k], v, msg=k)


def _batch_rows(method: Byol, x: np.ndarray) -> list[list[int]]:
    """Rows of each batch ``fit`` trains on, in order."""
    seen: list[list[int]] = []
    step = method.training_step

    def spy(batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None) -> torch.Tensor:
        assert index is not None
        seen.append(index.tolist())
        return step(batch, generator, index=index)

    method.training_step = spy  # type: ignore[method-assign]
    method.fit(x, seed=0)
    return seen


def test_shuffle_false_visits_rows_in_stored_order_every_epoch(tiny_x: np.ndarray) -> None:
    ordered = _batch_rows(Byol(30, _params(epochs=2, shuffle=False), device="cpu"), tiny_x)
    assert ordered == [list(range(s, s + 16)) for s in range(0, 64, 16)] * 2
    shuffled = _batch_rows(Byol(30, _params(epochs=2), device="cpu"), tiny_x)
    assert ByolParams().shuffle is True
    assert sorted(r for b in shuffled[:4] for r in b) == list(range(64)) and shuffled[:4] != ordered[:4]
    assert shuffled[:4] != shuffled[4:]  # a fresh order each epoch
    with pytest.raises(ValueError, match="shuffle must be a boolean"):
        ByolParams.from_dict({"shuffle": "no"})


@pytest.mark.parametrize("method", ["scarf", "vime", "byol"])
def test_every_params_docstring_documents_every_field(method: str) -> None:
    import dataclasses

    params_class = METHODS[method].params_class
    doc = params_class.__doc__ or ""
    undocumented = [f.name for f in dataclasses.fields(params_class) if f"    {f.name}: " not in doc]
    assert undocumented == []
