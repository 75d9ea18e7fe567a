"""Training throughput of SCARF, VIME and BYOL beside a bare loop and a per-sample corruption loop.

For each method, on one synthetic float32 matrix (default 8,192 x 20,000, the paper's encoder, batch 256),
three loops run in the same process, timed the same way (samples per second over whole epochs, after one
warm-up epoch):

* ``exprssl``: the method's own ``fit`` (vectorised corruption, seeded, the real training loop);
* ``bare``: a plain PyTorch loop over the same modules and loss, on uncorrupted data, doing only forward,
  backward and the optimiser step (BYOL's EMA update included): the ceiling;
* ``per-sample`` (SCARF only): the released code's style of corruption, a Python loop over the samples
  of each batch drawing genes and replacement values with numpy, then the same step.

Usage: ``.venv/bin/python bench/train_throughput.py [--samples 8192 --genes 20000 --epochs 1]``.
Prints a markdown table; ratios are exprssl / bare and exprssl / per-sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.corruption import MaskedView  # noqa: E402
from models.device import autocast, batch_slices, resolve_device  # noqa: E402
from models.losses import byol_loss, nt_xent  # noqa: E402
from models.methods import METHODS  # noqa: E402
from models.methods.base import SSLMethod  # noqa: E402


def synthetic(n: int, g: int, seed: int = 0) -> np.ndarray:
    """z-scored log-expression-like matrix with a few latent programmes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8), dtype=np.float32) @ rng.standard_normal((8, g), dtype=np.float32)
    x += rng.standard_normal((n, g), dtype=np.float32)
    x -= x.mean(axis=0)
    x /= x.std(axis=0)
    return x


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fit_throughput(method: SSLMethod, x: np.ndarray, epochs: int) -> float:
    """Samples per second of the method's own fit, timed per epoch after the first (warm-up)."""
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(epoch: int, loss: float) -> None:
        sync(method.device)
        now = time.perf_counter()
        if epoch > 1:
            times.append(now - last[0])
        last[0] = now

    method.params.epochs = epochs + 1
    method.fit(x, seed=0, on_epoch_end=tick)
    return x.shape[0] / float(np.mean(times))


def bare_step(method: SSLMethod) -> Callable[[torch.Tensor], torch.Tensor]:
    """The method's forward and loss on clean data: no corruption at all."""
    name = method.name
    if name == "scarf":
        projector = method.heads["projector"]
        temperature = method.params.temperature
        return lambda b: nt_xent(projector(method.encoder(b)), projector(method.encoder(b)), temperature)
    if name == "vime":
        zeros = None

        def vime(b: torch.Tensor) -> torch.Tensor:
            nonlocal zeros
            if zeros is None or zeros.shape != b.shape:
                zeros = torch.zeros_like(b, dtype=torch.bool)
            return method.losses(b, MaskedView(b, zeros, zeros)).total  # type: ignore[attr-defined]

        return vime
    if name == "byol":
        projector, predictor, target = method.heads["projector"], method.heads["predictor"], method.heads["target"]

        def byol(b: torch.Tensor) -> torch.Tensor:
            p1 = predictor(projector(method.encoder(b)))
            p2 = predictor(projector(method.encoder(b)))
            with torch.no_grad():
                z1, z2 = target(b), target(b)
            return byol_loss(p1, z2, p2, z1)

        return byol
    raise ValueError(name)


def loop_throughput(
    method: SSLMethod, x: np.ndarray, epochs: int, prepare: Callable[[torch.Tensor, np.random.Generator], torch.Tensor]
) -> float:
    """Samples per second of a plain loop: shuffled batches, ``prepare`` each, forward/backward/step."""
    device = method.device
    data = torch.from_numpy(x).to(device)
    step = bare_step(method)
    rng = np.random.default_rng(0)
    method.network.train()
    times = []
    for epoch in range(epochs + 1):
        sync(device)
        started = time.perf_counter()
        perm = torch.randperm(data.shape[0], device=device)
        for start, stop in batch_slices(data.shape[0], method.params.batch_size):
            batch = prepare(data[perm[start:stop]], rng)
            method.optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = step(batch)
            method.scaler.scale(loss).backward()
            method.scaler.step(method.optimizer)
            method.scaler.update()
            method.after_step()
        sync(device)
        if epoch > 0:
            times.append(time.perf_counter() - started)
    return data.shape[0] / float(np.mean(times))


def per_sample_scarf(low: np.ndarray, high: np.ndarray, rate: float) -> Callable[[torch.Tensor, np.random.Generator],
                                                                                  torch.Tensor]:
    """The released code's corruption, a dataset ``__getitem__`` run once per sample and then collated.

    Per sample, as in the reference SCARF implementation the paper's code builds on: a permutation of the
    genes picks the corrupted ones, a full row of Uniform(min_j, max_j) values is drawn, and the two are
    merged; the batch is then stacked from the per-sample rows, as a DataLoader's collate does.
    """
    low_t, high_t = torch.from_numpy(low), torch.from_numpy(high)
    n_corrupt = int(rate * low.size)

    def item(row: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(row.shape[0], dtype=torch.bool)
        mask[torch.randperm(row.shape[0])[:n_corrupt]] = True
        random_row = low_t + (high_t - low_t) * torch.rand(row.shape[0])
        return torch.where(mask, random_row, row)

    def prepare(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        rows = batch.cpu()
        return torch.stack([item(rows[i]) for i in range(rows.shape[0])]).to(batch.device)

    return prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--genes", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs after one warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    x = synthetic(args.samples, args.genes)
    print(f"matrix {args.samples} x {args.genes} float32, batch {args.batch_size}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; samples/s over {args.epochs} epoch(s)\n")
    print("| method | exprssl (samples/s) | bare loop | exprssl / bare | per-sample loop | exprssl / per-sample |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        cls = METHODS[name]
        params = {"batch_size": args.batch_size}

        def fresh(cls: type[SSLMethod] = cls, params: dict[str, int] = params) -> SSLMethod:
            return cls(args.genes, cls.params_class.from_dict(params), device=str(device))

        ours = fit_throughput(fresh(), x, args.epochs)
        bare_method = fresh()
        bare_method.setup(torch.from_numpy(x).to(device), None)
        bare = loop_throughput(bare_method, x, args.epochs, lambda b, rng: b)
        per_sample_cell, ratio_cell = "-", "-"
        if name == "scarf":
            slow = fresh()
            slow.setup(torch.from_numpy(x).to(device), None)
            low, high = x.min(axis=0), x.max(axis=0)
            per_sample = loop_throughput(slow, x, args.epochs, per_sample_scarf(low, high, 0.3))
            per_sample_cell, ratio_cell = f"{per_sample:,.0f}", f"{ours / per_sample:.1f}x"
        print(f"| {name} | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f} | {per_sample_cell} | {ratio_cell} |",
              flush=True)


if __name__ == "__main__":
    main()
