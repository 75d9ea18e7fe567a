"""Where the API process runs predictions: EXPRSSL_INFERENCE_DEVICE, checked when settings load."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from app.config import Settings
from app.predictions.service import get_cache


@pytest.mark.parametrize("value", ["gpu", "cuda:x"])
def test_an_unknown_device_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="inference_device"):
        Settings(inference_device=value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="CUDA is not available"):
        Settings(inference_device="cuda")


def test_the_predictor_cache_follows_the_setting(settings: Settings) -> None:
    auto = get_cache(settings)
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")

    pinned = get_cache(settings.model_copy(update={"inference_device": "cpu"}))

    assert pinned.device == torch.device("cpu")
