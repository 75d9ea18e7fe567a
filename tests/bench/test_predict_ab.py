"""bench/predict_ab.py's settings of each side."""

from __future__ import annotations

import pytest

from bench.predict_ab import settings_of


def test_each_sides_settings_are_read_as_name_value_pairs() -> None:
    assert settings_of("") == {}
    assert settings_of("EXPRSSL_TORCH_THREADS=1, EXPRSSL_X=a=b") == {"EXPRSSL_TORCH_THREADS": "1", "EXPRSSL_X": "a=b"}
    with pytest.raises(ValueError, match="'EXPRSSL_TORCH_THREADS': give settings as NAME=value"):
        settings_of("EXPRSSL_TORCH_THREADS")
