"""The largest models and longest runs this server trains: one request must not exhaust the memory of the
process that trains it, nor hold the job queue every lab shares for days."""

from __future__ import annotations

from collections.abc import Mapping

from app.config import get_settings
from app.errors import InvalidInput


def check_training_bounds(params: Mapping[str, object], *, where: str = "params") -> None:
    """Refuse hyper-parameters above the server's bounds (422 naming the parameter and the setting)."""
    settings = get_settings()
    bounds = (
        ("epochs", settings.max_epochs, "EXPRSSL_MAX_EPOCHS"),
        ("max_epochs", settings.max_epochs, "EXPRSSL_MAX_EPOCHS"),
        ("hidden_dim", settings.max_hidden_dim, "EXPRSSL_MAX_HIDDEN_DIM"),
        ("n_layers", settings.max_layers, "EXPRSSL_MAX_LAYERS"),
        ("batch_size", settings.max_batch_size, "EXPRSSL_MAX_BATCH_SIZE"),
    )
    for name, most, setting in bounds:
        value = params.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > most:
            raise InvalidInput(f"{where}: {name}={value:g} is above this server's most, {most:,} ({setting})")
