"""Pure ML for exprssl: preprocessing, encoders, SSL methods, classifiers, evaluation, checkpoints.

This package imports nothing from ``app`` or ``worker``; numpy/torch in, arrays and state dicts out.
SSL methods are listed in :data:`models.methods.METHODS`; ``from models import scarf, vime, byol`` gives
their modules (``scarf.Scarf``, ``scarf.ScarfParams`` ...). A notebook session, from raw counts to a
fitted linear probe::

    import numpy as np
    from models import HeadParams, Preprocessor, fit_encoder_classifier, scarf

    rng = np.random.default_rng(0)
    counts = rng.poisson(200.0, size=(120, 40)).astype(np.float64)   # samples x genes
    genes = [f"GENE{j}" for j in range(40)]
    labels = rng.integers(0, 2, size=120)                            # class indices

    pre = Preprocessor.fit(counts, genes)            # log1p (counts detected), per-gene z-score
    x = pre.transform(counts)                        # float32 (120, 40)
    method = scarf.Scarf(len(genes), scarf.ScarfParams(epochs=3), device="cpu")
    losses = method.fit(x, seed=0)                   # one mean loss per epoch
    z = method.embed(x)                              # float32 (120, 256), eval mode, no gradients
    probe, _ = fit_encoder_classifier(
        method.encoder, x, labels, None, None, n_classes=2,
        freeze_encoder=True, params=HeadParams(max_epochs=5), device="cpu",
    )
    proba = probe.predict_proba(x)                   # float32 (120, 2), rows sum to 1

Names are loaded on first use, so ``import models.genes`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.classifiers import HeadParams, fit_encoder_classifier
    from models.encoders import MLPEncoder, embed
    from models.methods import METHODS, Byol, Scarf, Vime, byol, scarf, vime
    from models.preprocessing import Preprocessor

# name -> module holding it (a module itself where the name is the module's last part).
_EXPORTS = {
    "scarf": "models.methods.scarf",
    "vime": "models.methods.vime",
    "byol": "models.methods.byol",
    "METHODS": "models.methods",
    "Scarf": "models.methods",
    "Vime": "models.methods",
    "Byol": "models.methods",
    "MLPEncoder": "models.encoders",
    "embed": "models.encoders",
    "Preprocessor": "models.preprocessing",
    "HeadParams": "models.classifiers",
    "fit_encoder_classifier": "models.classifiers",
}

__all__ = [
    "METHODS",
    "Byol",
    "HeadParams",
    "MLPEncoder",
    "Preprocessor",
    "Scarf",
    "Vime",
    "byol",
    "embed",
    "fit_encoder_classifier",
    "scarf",
    "vime",
]


def __getattr__(name: str) -> Any:
    """Import an exported name on first access (PEP 562): ``app`` imports ``models`` submodules that need
    no torch, and a lazy package keeps them from loading the whole ML stack."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    module = importlib.import_module(target)
    value = module if target.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
