"""SSL methods, looked up by name: ``METHODS["scarf"](n_genes, params)``."""

from __future__ import annotations

from models.methods.base import EpochCallback, MethodParams, SSLMethod
from models.methods.scarf import Scarf, ScarfParams

METHODS: dict[str, type[SSLMethod]] = {"scarf": Scarf}

__all__ = ["METHODS", "EpochCallback", "MethodParams", "SSLMethod", "Scarf", "ScarfParams"]
