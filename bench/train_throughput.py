"""Training throughput of SCARF, VIME and BYOL beside a bare loop and a per-sample corruption loop.

For each method, on one synthetic float32 matrix (default 8,192 x 20,000, the paper's encoder, batch 256
for every method), up to three loops run in the same process:

* ``exprssl``: the method's own ``fit`` (vectorised corruption, seeded, the real training loop);
* ``bare``: a plain PyTorch loop over the same modules and loss, on uncorrupted data, doing only forward,
  backward and the optimiser step (BYOL's EMA update included): the ceiling;
* ``per-sample`` (SCARF only): the released code's style of corruption, a Python loop over the samples
  of each batch drawing genes and replacement values, then the same step.

The loops take turns epoch by epoch (one ``fit`` epoch, then one epoch of each other loop, from
``fit``'s epoch callback), so a change in the machine's load hits all of them alike. The first round is
a warm-up; each figure is the number of samples over the median time of the ``--epochs`` timed epochs.

Usage: ``.venv/bin/python bench/train_throughput.py [--samples 8192 --genes 20000 --epochs 3]``.
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

from bench.service import allocate_as_the_service  # noqa: E402
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


def bare_step(method: SSLMethod) -> Callable[[torch.Tensor], torch.Tensor]:
    """The method's forward and loss on clean data: no corruption at all."""
    name = method.name
    if name == "scarf":
        projector = method.heads["projector"]
        temperature = method.params.temperature
        return lambda b: nt_xent(projector(method.encoder(b)), projector(method.encoder(b)), temperature)
    if name == "vime":
        # Fixed Bernoulli(0.3) labels drawn once: an all-zero target drives the mask logits' gradients
        # into denormal floats, which slow a CPU step several-fold and would understate the ceiling.
        labels = torch.rand((method.params.batch_size, method.n_genes), device=method.device) < 0.3

        def vime(b: torch.Tensor) -> torch.Tensor:
            mask = labels[: b.shape[0]]
            return method.losses(b, MaskedView(b, mask, mask)).total  # type: ignore[attr-defined]

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


EpochRunner = Callable[[], float]


def plain_loop(
    method: SSLMethod, x: np.ndarray, prepare: Callable[[torch.Tensor, np.random.Generator], torch.Tensor]
) -> EpochRunner:
    """One epoch per call of a plain loop: shuffled batches, ``prepare`` each, forward/backward/step.

    Returns:
        A function that runs one epoch and returns its wall time in seconds.
    """
    device = method.device
    data = torch.from_numpy(x).to(device)
    step = bare_step(method)
    rng = np.random.default_rng(0)

    def epoch() -> float:
        method.network.train()
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
        return time.perf_counter() - started

    return epoch


def interleaved(method: SSLMethod, x: np.ndarray, epochs: int, others: dict[str, EpochRunner]) -> dict[str, float]:
    """Samples per second of ``method.fit`` and of each loop in ``others``, taking turns epoch by epoch.

    ``fit`` runs ``epochs + 1`` epochs; after each, its callback runs one epoch of every other loop and
    restarts the clock, so each ``fit`` epoch is timed alone. Round 1 is a warm-up (it also holds ``fit``'s
    setup). Each figure is ``n / median(epoch time)`` over the timed rounds.
    """
    times: dict[str, list[float]] = {"exprssl": [], **{name: [] for name in others}}
    clock = [time.perf_counter()]

    def tick(epoch: int, loss: float) -> None:
        sync(method.device)
        ours = time.perf_counter() - clock[0]
        for name, run in others.items():
            took = run()
            if epoch > 1:
                times[name].append(took)
        if epoch > 1:
            times["exprssl"].append(ours)
        clock[0] = time.perf_counter()

    method.params.epochs = epochs + 1
    clock[0] = time.perf_counter()
    method.fit(x, seed=0, on_epoch_end=tick)
    return {name: x.shape[0] / float(np.median(t)) for name, t in times.items()}


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
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loop after one warm-up round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    allocate_as_the_service()
    device = resolve_device(args.device)
    x = synthetic(args.samples, args.genes)
    print(f"matrix {args.samples} x {args.genes} float32, batch {args.batch_size}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; samples/s over the median of "
          f"{args.epochs} interleaved epoch(s)\n")
    print("| method | exprssl (samples/s) | bare loop | exprssl / bare | per-sample loop | exprssl / per-sample |")
    print("|---|---|---|---|---|---|")
    for name in args.methods:
        row = measure(METHODS[name], x, args.epochs, args.batch_size, device)
        ours, bare = row["exprssl"], row["bare"]
        per_sample_cell, ratio_cell = "-", "-"
        if "per-sample" in row:
            per_sample_cell, ratio_cell = f"{row['per-sample']:,.0f}", f"{ours / row['per-sample']:.1f}x"
        print(f"| {name} | {ours:,.0f} | {bare:,.0f} | {ours / bare:.2f} | {per_sample_cell} | {ratio_cell} |",
              flush=True)


def measure(
    cls: type[SSLMethod], x: np.ndarray, epochs: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Samples/s of ``cls``'s fit, its bare loop and (SCARF) the per-sample loop, each on a fresh model."""

    def fresh() -> SSLMethod:
        method = cls(x.shape[1], cls.params_class.from_dict({"batch_size": batch_size}), device=str(device))
        method.setup(torch.from_numpy(x).to(device), None)
        return method

    others = {"bare": plain_loop(fresh(), x, lambda b, rng: b)}
    if cls.name == "scarf":
        low, high = x.min(axis=0), x.max(axis=0)
        others["per-sample"] = plain_loop(fresh(), x, per_sample_scarf(low, high, 0.3))
    return interleaved(fresh(), x, epochs, others)


if __name__ == "__main__":
    main()
