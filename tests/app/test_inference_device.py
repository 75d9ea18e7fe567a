"""Where the API process runs predictions: EXPRSSL_INFERENCE_DEVICE, checked when settings load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app import lru
from app.config import Settings
from app.encoders.embeddings import get_encoder_cache
from app.lru import ArtifactCache
from app.predictions.service import get_cache, load_predictor
from app.storage import LocalArtifactStore
from models import checkpoint
from models.classifiers import EncoderClassifier
from models.device import resolve_device
from models.encoders import MLPEncoder
from models.heads import LinearHead
from models.preprocessing import Preprocessor


@pytest.mark.parametrize("value", ["gpu", "cuda:x"])
def test_an_unknown_device_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="inference_device"):
        Settings(inference_device=value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="CUDA is not available"):
        Settings(inference_device="cuda")


def test_a_cuda_index_beyond_the_devices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a one-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_the_caches_follow_the_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # "auto" stands for a GPU here: the meta device, so that the test means the same on any machine.
    monkeypatch.setattr(lru, "resolve_device", lambda value: torch.device("meta" if value == "auto" else value))
    predictors, encoders = get_cache(settings), get_encoder_cache(settings)
    assert predictors.device.type == encoders.device.type == "meta"
    assert get_cache(settings) is predictors  # kept between requests

    pinned = settings.model_copy(update={"inference_device": "cpu", "predictor_cache_size": 3})

    assert get_cache(pinned) is not predictors and get_cache(pinned).device == torch.device("cpu")
    assert get_cache(pinned).size == get_encoder_cache(pinned).size == 3


def test_an_encoder_predictor_is_loaded_onto_the_cache_device(tmp_path: Path) -> None:
    genes = [f"g{i}" for i in range(6)]
    preprocessor = Preprocessor(genes=genes, log1p=False, mean=np.zeros(6, np.float32), std=np.ones(6, np.float32))
    classifier = EncoderClassifier(MLPEncoder(6, 8, 1, 0.0), LinearHead(8, 2))
    payload = checkpoint.classifier_payload(classifier, preprocessor, ["a", "b"], head_kind="linear_probe")
    store = LocalArtifactStore(tmp_path)
    sha256 = store.put_bytes("p.pt", checkpoint.dumps(payload))

    # The meta device stands in for a GPU here: the model must land on whatever device the cache was given.
    loaded = ArtifactCache(2, load_predictor, torch.device("meta")).get(store, "p.pt", sha256)

    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
    on_cpu = ArtifactCache(2, load_predictor).get(store, "p.pt", sha256)
    assert {p.device.type for p in on_cpu.model.parameters()} == {"cpu"}
