from __future__ import annotations

import pytest

from models.classifiers import HeadParams
from models.methods import METHODS, SSLMethod
from models.methods.scarf import ScarfParams


def test_scarf_defaults_follow_the_paper() -> None:
    p = ScarfParams()
    assert (p.hidden_dim, p.n_layers, p.dropout) == (256, 4, 0.2)
    assert (p.corruption_rate, p.replacement, p.temperature) == (0.3, "uniform", 1.0)
    assert (p.lr, p.batch_size, p.epochs) == (1e-4, 256, 1000)
    assert ScarfParams.from_dict(p.to_dict()) == p
    assert issubclass(METHODS["scarf"], SSLMethod) and METHODS["scarf"].name == "scarf"


def test_from_dict_coerces_json_numbers() -> None:
    p = ScarfParams.from_dict({"epochs": 5.0, "lr": 1})
    assert p.epochs == 5 and isinstance(p.epochs, int) and p.lr == 1.0


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"corruption_rate": 1.5}, r"corruption_rate must be in \[0, 1\), got 1.5"),
        ({"temperature": 0}, "temperature must be > 0, got 0"),
        ({"replacement": "gaussian"}, "replacement must be one of 'uniform', 'marginal'"),
        ({"batch_size": 1}, "batch_size must be >= 2, got 1"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"learning_rate": 0.1}, r"unknown parameter\(s\) for ScarfParams: \['learning_rate'\]"),
    ],
)
def test_scarf_params_reject(d: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScarfParams.from_dict(d)


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match="dropout"):
        ScarfParams(dropout=1.0)


def test_head_params_defaults_and_probe_lr() -> None:
    # Unset, the rate is the head's: construction and from_dict agree, and from_dict for a head records it.
    assert HeadParams().lr is None and HeadParams.from_dict({}).lr is None
    assert HeadParams().lr_for(linear_probe=True) == 1e-3 and HeadParams().lr_for(linear_probe=False) == 1e-4
    assert HeadParams.from_dict({}, linear_probe=True).lr == 1e-3
    assert HeadParams.from_dict({}, linear_probe=False).lr == 1e-4
    assert HeadParams.from_dict({"lr": 0.05}, linear_probe=True).lr == 0.05
    assert HeadParams(lr=0.05).lr_for(linear_probe=True) == 0.05
    with pytest.raises(ValueError, match="lr must be a number"):
        HeadParams.from_dict({"lr": "fast"})
    with pytest.raises(ValueError, match="lr must be > 0"):
        HeadParams(lr=0.0)
    assert HeadParams.from_dict({"patience": 3}, linear_probe=False).to_dict() == {
        "lr": 1e-4,
        "max_epochs": 200,
        "batch_size": 64,
        "patience": 3,
        "weight_decay": 0.0,
    }
    with pytest.raises(ValueError, match="patience must be >= 1, got 0"):
        HeadParams.from_dict({"patience": 0})
    with pytest.raises(ValueError, match="unknown parameter"):
        HeadParams.from_dict({"epochs": 3})
