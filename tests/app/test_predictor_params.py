from __future__ import annotations

import pytest

from app.errors import InvalidInput
from app.predictors.schemas import Head
from app.predictors.service import validated_params


def test_stored_head_params_name_the_learning_rate_each_head_trains_with() -> None:
    assert validated_params(Head.LINEAR_PROBE, {})["lr"] == 1e-3
    assert validated_params(Head.FINETUNE, {})["lr"] == 1e-4
    assert validated_params(Head.LINEAR_PROBE, {"lr": 0.01, "patience": 3}) == {
        "lr": 0.01, "max_epochs": 200, "batch_size": 64, "patience": 3, "weight_decay": 0.0,
    }
    with pytest.raises(InvalidInput, match="lr must be > 0"):
        validated_params(Head.FINETUNE, {"lr": 0})
