"""VIME-self: value imputation and mask estimation (Yoon et al., NeurIPS 2020, Sec. 4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models.corruption import MaskedView, vime_corruption
from models.heads import MLPDecoder
from models.losses import VimeLoss, vime_loss
from models.methods.base import MethodParams, SSLMethod
from models.params import param


@dataclass
class VimeParams(MethodParams):
    """VIME-self settings; defaults follow Dradjat et al.'s use of VIME (see DESIGN.md).

    Attributes:
        hidden_dim: Encoder width (256).
        n_layers: Encoder blocks (4).
        dropout: Encoder dropout (0.2).
        corruption_rate: ``p_m``, probability that an entry is replaced, in [0, 1) (0.3).
        alpha: Weight of the feature-reconstruction term (2.0).
        decoder_hidden_dim: Hidden width of both decoders (256).
        decoder_layers: Hidden layers of both decoders, 0 = one linear layer (4).
        feature_output: ``"linear"`` (default: targets are z-scores, unbounded) or ``"sigmoid"`` (the
            released code's, meant for min-max scaled inputs).
        corruption: ``"per_batch"`` (default: redrawn for every batch) or ``"fixed"`` (the released
            code's: drawn once for the whole training set from the seed and reused every epoch).
        replacement: Where a replaced entry's value comes from: ``"other_row"`` (default: gene j's value in
            another row, drawn per entry) or ``"column_permutation"`` (the released code's: one random
            permutation of the rows per gene, so a row may keep its own value, with probability 1/N).
        lr: RMSprop learning rate (1e-3).
        batch_size: Mini-batch size (32).
        epochs: Training epochs (500).
        batchnorm_stats: ``"clean"`` (default: after pretraining, the encoder's BatchNorm running statistics
            are re-estimated on the clean pretraining matrix, the data it is then used on) or ``"training"``
            (the released code's: those accumulated during training, over corrupted views too).
    """

    hidden_dim: int = param(256, low=1)
    n_layers: int = param(4, low=1)
    dropout: float = param(0.2, low=0.0, high=1.0, high_open=True)
    corruption_rate: float = param(0.3, low=0.0, high=1.0, high_open=True)
    alpha: float = param(2.0, low=0.0)
    decoder_hidden_dim: int = param(256, low=1)
    decoder_layers: int = param(4, low=0)
    feature_output: str = param("linear", choices=("linear", "sigmoid"))
    corruption: str = param("per_batch", choices=("per_batch", "fixed"))
    replacement: str = param("other_row", choices=("other_row", "column_permutation"))
    lr: float = param(1e-3, low=0.0, low_open=True)
    batch_size: int = param(32, low=2)
    epochs: int = param(500, low=1)


class Vime(SSLMethod[VimeParams]):
    """VIME-self pretraining.

    For a batch x ``(B, G)``: ``m ~ Bernoulli(p_m)``, ``x~ = m * x_bar + (1 - m) * x`` (``x_bar_ij``:
    gene j's value in another sample of the batch, drawn per entry, or with ``replacement=
    "column_permutation"`` from one permutation of the batch's rows per gene), ``h = f(x~)``; the mask decoder
    ``s_m`` predicts m (logits) and the feature decoder ``s_r`` reconstructs x;
    ``loss = BCE(s_m(h), m) + alpha * MSE(s_r(h), x)`` (Yoon et al. 2020, Eq. 4); RMSprop. With
    ``corruption="fixed"`` the corrupted training set is drawn once in :meth:`setup` and each batch looks
    up its rows.
    """

    name: ClassVar[str] = "vime"
    params_class: ClassVar[type[VimeParams]] = VimeParams
    _fixed: MaskedView | None = None  # the fixed corruption of the training set, set by setup()

    def build_heads(self) -> dict[str, nn.Module]:
        """Mask and feature decoders: ``decoder_layers`` x ``decoder_hidden_dim``, then G outputs each."""
        p = self.params
        return {
            "mask_decoder": MLPDecoder(p.hidden_dim, p.decoder_hidden_dim, p.decoder_layers, self.n_genes),
            "feature_decoder": MLPDecoder(p.hidden_dim, p.decoder_hidden_dim, p.decoder_layers, self.n_genes),
        }

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """RMSprop as the paper's VIME code compiles it (Keras ``optimizer='rmsprop'``): squared-gradient
        average decay 0.9 and epsilon 1e-7, Keras' defaults (torch's are 0.99 and 1e-8)."""
        return torch.optim.RMSprop(parameters, lr=self.params.lr, alpha=0.9, eps=1e-7)

    def setup(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """With ``corruption="fixed"``, draw the corruption of the whole training set ``(N, G)`` once."""
        self._fixed = None
        if self.params.corruption == "fixed":
            self._fixed = self._draw_view(x, generator)

    def _draw_view(self, x: torch.Tensor, generator: torch.Generator | None) -> MaskedView:
        """VIME's corruption of ``x`` ``(N, G)`` at the configured rate and replacement."""
        p = self.params
        return vime_corruption(x, p.corruption_rate, generator=generator, replacement=p.replacement)

    def corrupt(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> MaskedView:
        """Return the corrupted view of ``batch`` ``(B, G)`` and its mask labels.

        Args:
            batch: Clean rows, shape ``(B, G)``.
            generator: Draws the per-batch corruption (unused when fixed).
            index: Rows of ``batch`` in the :meth:`setup` matrix, shape ``(B,)``; required when fixed.
        """
        if self.params.corruption == "per_batch":
            return self._draw_view(batch, generator)
        if self._fixed is None or index is None:
            raise RuntimeError("corruption='fixed' needs setup(x) first and the batch's row index")
        fixed = self._fixed
        return MaskedView(x_tilde=fixed.x_tilde[index], mask=fixed.mask[index], drawn=fixed.drawn[index])

    def losses(self, batch: torch.Tensor, view: MaskedView) -> VimeLoss:
        """VIME loss terms for clean rows ``batch`` ``(B, G)`` and their corrupted ``view``."""
        h = self.encoder(view.x_tilde)
        mask_logits = self.heads["mask_decoder"](h)
        features = self.heads["feature_decoder"](h)
        if self.params.feature_output == "sigmoid":
            features = torch.sigmoid(features)
        return vime_loss(mask_logits, view.mask, features, batch, alpha=self.params.alpha)

    def training_step(
        self, batch: torch.Tensor, generator: torch.Generator, *, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mask-estimation BCE plus ``alpha`` x feature-reconstruction MSE of one batch."""
        return self.losses(batch, self.corrupt(batch, generator, index=index)).total
