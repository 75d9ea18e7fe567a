"""SSL methods, looked up by name: ``METHODS["scarf"](n_genes, params)``."""

from __future__ import annotations

from models.methods.base import EpochCallback, MethodParams, SSLMethod
from models.methods.byol import Byol, ByolParams
from models.methods.scarf import Scarf, ScarfParams
from models.methods.vime import Vime, VimeParams

METHODS: dict[str, type[SSLMethod]] = {"scarf": Scarf, "vime": Vime, "byol": Byol}

__all__ = [
    "METHODS",
    "Byol",
    "ByolParams",
    "EpochCallback",
    "MethodParams",
    "SSLMethod",
    "Scarf",
    "ScarfParams",
    "Vime",
    "VimeParams",
]
