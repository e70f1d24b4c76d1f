"""Datasets for the evaluation tasks: nothing is downloaded, everything is cached in memory.

* digits: scikit-learn's bundled 8x8 digits (1797 images), standardized per pixel,
  split 80/20 with a fixed permutation.
* MNIST-1D style: ten smooth class templates placed at a random offset in a length-40
  signal, randomly scaled, with correlated and white noise (after Greydanus, 2020).
* text: the help topics that ship with Python (``pydoc_data.topics``), as character ids;
  the last 10% of the characters are the validation text.
* adding problem: sequences of (value, marker) pairs whose target is the sum of the two
  marked values.
* noisy tabular: Gaussian, log-normal and binary columns labelled by a random teacher,
  with 20% of the training labels replaced at random.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

DATA_SEED = 1234  # the data are fixed; seeds vary initialization, batch order and noise


@dataclass(frozen=True)
class Split:
    """Train and validation arrays of a supervised dataset."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@functools.lru_cache(maxsize=None)
def digits() -> Split:
    """The 8x8 digits: x (n, 64) float32 standardized per pixel, y (n,) int64; 80/20 split."""
    # optional (the search extra); only this path needs it
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(DATA_SEED))
    x, y = x[perm], y[perm]
    n_train = int(0.8 * len(x))
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1.0
    x = (x - mu) / sd
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@functools.lru_cache(maxsize=None)
def mnist1d(n_train: int = 3000, n_val: int = 1000, length: int = 40) -> Split:
    """MNIST-1D-style sequences: x (n, length) float32, y (n,) int64 in 0..9.

    Each class has a smooth template of 12 points (cumulative sums of random steps); a
    sample is the template scaled by U(0.7, 1.3), linearly stretched to 10..16 points,
    placed at a random offset, plus correlated noise (a random-walk drift of std 0.02 per
    point) and white noise of std 0.1.
    """
    gen = torch.Generator().manual_seed(DATA_SEED + 1)
    templates = torch.cumsum(torch.randn(10, 12, generator=gen), dim=1)
    templates = templates - templates.mean(1, keepdim=True)
    templates = templates / templates.abs().amax(1, keepdim=True)
    n = n_train + n_val
    y = torch.randint(0, 10, (n,), generator=gen)
    x = torch.zeros(n, length)
    widths = torch.randint(10, 17, (n,), generator=gen)
    scales = 0.7 + 0.6 * torch.rand(n, generator=gen)
    for i in range(n):
        wdt = int(widths[i])
        t = templates[y[i]].view(1, 1, -1)
        stretched = torch.nn.functional.interpolate(t, size=wdt, mode="linear", align_corners=True).view(-1)
        off = int(torch.randint(0, length - wdt + 1, (1,), generator=gen))
        x[i, off:off + wdt] = scales[i] * stretched
    x = x + 0.02 * torch.cumsum(torch.randn(n, length, generator=gen), dim=1)
    x = x + 0.1 * torch.randn(n, length, generator=gen)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@functools.lru_cache(maxsize=None)
def text() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Python's help topics as character ids: (train ids, validation ids, vocabulary size).

    Characters outside printable ASCII map to one "unknown" id; newline and tab are kept.
    """
    from pydoc_data.topics import topics
    s = "\n".join(topics[k] for k in sorted(topics))
    vocab = ["\n", "\t"] + [chr(c) for c in range(32, 127)] + ["?unk"]
    index = {c: i for i, c in enumerate(vocab)}
    unk = len(vocab) - 1
    ids = torch.tensor([index.get(c, unk) for c in s], dtype=torch.int64)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(vocab)


@functools.lru_cache(maxsize=4)
def patterns(side: int = 8, n_train: int = 1000, n_val: int = 200) -> Split:
    """Generated colour images of oriented gratings: x (n, 3*side*side) float32, y (n,) in 0..9.

    Class c has orientation (c mod 5) * 36 degrees and frequency 1.5 or 3 cycles per image
    (c < 5 or not). A sample is cos(2 pi f <r, (cos a, sin a)> + phase) under a Gaussian
    envelope (random centre within 0.2 side of the middle, width U(0.25, 0.45) side), with
    a jitter of +-8 degrees and +-10% frequency, mixed into 3 channels by a random unit
    colour vector, plus white noise of std 0.3; then standardized per channel.
    """
    gen = torch.Generator().manual_seed(DATA_SEED + 5 + side)
    n = n_train + n_val
    y = torch.randint(0, 10, (n,), generator=gen)
    angle = torch.pi * ((y % 5).float() * 36.0 + 16.0 * (torch.rand(n, generator=gen) - 0.5)) / 180.0
    freq = torch.where(y < 5, 1.5, 3.0) * (0.9 + 0.2 * torch.rand(n, generator=gen))
    phase = 2 * torch.pi * torch.rand(n, generator=gen)
    centre = 0.5 + 0.4 * (torch.rand(n, 2, generator=gen) - 0.5)
    width = 0.25 + 0.2 * torch.rand(n, generator=gen)
    colour = torch.randn(n, 3, generator=gen)
    colour = colour / colour.norm(dim=1, keepdim=True)
    grid = (torch.arange(side) + 0.5) / side
    gy, gx = grid.view(1, side, 1), grid.view(1, 1, side)
    c, s = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    wave = torch.cos(2 * torch.pi * freq.view(n, 1, 1) * (gx * c + gy * s) + phase.view(n, 1, 1))
    r2 = (gx - centre[:, 0].view(n, 1, 1)) ** 2 + (gy - centre[:, 1].view(n, 1, 1)) ** 2
    img = wave * torch.exp(-r2 / (2 * width.view(n, 1, 1) ** 2))
    x = colour.view(n, 3, 1, 1) * img.unsqueeze(1) + 0.3 * torch.randn(n, 3, side, side, generator=gen)
    mu = x[:n_train].mean((0, 2, 3), keepdim=True)
    sd = x[:n_train].std((0, 2, 3), keepdim=True)
    x = ((x - mu) / sd).reshape(n, -1)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@functools.lru_cache(maxsize=4)
def adding(length: int = 16, n_train: int = 2000, n_val: int = 500, stream: int = 0) -> Split:
    """The adding problem (Hochreiter & Schmidhuber, 1997): x (n, length, 2) float32, y (n,).

    Channel 0 holds values v_t ~ U(0, 1); channel 1 marks two positions, one in each half
    of the sequence; the target is the sum of the two marked values, y = v_i + v_j. A
    constant prediction of 1 scores MSE 1/6. ``stream`` picks an independent dataset (the
    proxy and held-out tasks use different ones).
    """
    gen = torch.Generator().manual_seed(DATA_SEED + 11 + 101 * stream)
    n = n_train + n_val
    values = torch.rand(n, length, generator=gen)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=gen)
    second = half + torch.randint(0, length - half, (n,), generator=gen)
    marks = torch.zeros(n, length)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = torch.stack([values, marks], dim=-1)
    y = values[rows, first] + values[rows, second]
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@functools.lru_cache(maxsize=4)
def noisy_tabular(features: int = 16, classes: int = 3, n_train: int = 2000, n_val: int = 1000,
                  flip: float = 0.2, stream: int = 0) -> Split:
    """Synthetic tabular classification with label noise: x (n, features) float32, y (n,) int64.

    Columns are of three kinds, as in tabular data: Gaussian with scales log-uniform in
    [0.3, 3], log-normal (skewed, heavy right tail) and binary 0/1, in equal thirds. Labels
    are the argmax of a fixed random teacher, a relu MLP features-32-classes on the
    standardized columns; each training label is replaced by a uniformly drawn class with
    probability ``flip``, and validation labels stay clean, so fitting the noise is punished.
    """
    gen = torch.Generator().manual_seed(DATA_SEED + 13 + 101 * stream)
    n = n_train + n_val
    kind = torch.arange(features) % 3
    gauss = torch.randn(n, features, generator=gen) * torch.exp(
        math.log(0.3) + (math.log(3.0) - math.log(0.3)) * torch.rand(features, generator=gen))
    lognormal = torch.exp(0.8 * torch.randn(n, features, generator=gen))
    binary = (torch.rand(n, features, generator=gen) < 0.3).float()
    x = torch.where(kind == 0, gauss, torch.where(kind == 1, lognormal, binary))
    z = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    w1 = torch.randn(32, features, generator=gen) / math.sqrt(features)
    w2 = torch.randn(classes, 32, generator=gen) / math.sqrt(32)
    y = (torch.relu(z @ w1.T) @ w2.T).argmax(1)
    flipped = torch.rand(n_train, generator=gen) < flip
    y_train = torch.where(flipped, torch.randint(0, classes, (n_train,), generator=gen), y[:n_train])
    return Split(x[:n_train], y_train, x[n_train:], y[n_train:])
