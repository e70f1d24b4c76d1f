"""Training tasks as pure functions of stacked parameters, and the registry of suites.

A :class:`Task` owns its data and a model written with the hand-batched layers of
:mod:`.layers`: ``train_loss(params, batch)`` and ``val_loss(params)`` take a list of
parameter tensors shaped ``(P, *shape)`` (P independent problems) and return one loss per
problem, ``(P,)``. ``sample(gen, steps)`` draws one seed's minibatches for a whole run
(indices, noise, ...) as a tensor with a leading ``steps`` dimension; the trainer gives
every problem the minibatches of its seed, so runs that differ only in rule or learning
rate see identical data (common random numbers).

Scores are validation losses at the end of a fully decayed schedule; ``loss_floor`` keeps
log-ratios finite on tasks whose optimum is exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import UserError
from . import data as D
from .layers import (causal_attention, conv1d, conv2d, cross_entropy, fan_in_normal, gru, layer_norm,
                     linear, mse)

Params = list[torch.Tensor]
Shapes = list[tuple[str, tuple[int, ...]]]


@dataclass
class Task:
    """A training problem: parameter shapes, an initializer, minibatches and two losses."""

    name: str
    description: str
    steps: int                  # default number of updates at budget 1.0
    batch_size: int
    shapes: Shapes
    loss_floor: float = 1e-6
    suite: str = "proxy"
    version: int = 3            # bump when data, model, sizes or numerics change (invalidates caches);
                                # 2: im2col convolutions and one-thread training (batch-independent losses)
                                # 3: cross-entropy's log-sum-exp written out for few classes
    examples_per_step: int = 0  # data per update (for data-equivalent speedups); batch_size if 0
    device: str = "cpu"         # where data live and training runs (init and sampling stay on CPU)
    gradients: str = "backprop"  # or a zeroth-order estimator (optdisco.training.GradientSpec text)
    batch_schedule: str = "fixed"  # or the norm test growing batches (optdisco.training.BatchSizeSpec text)
    #: whether ``sample`` draws ``(steps, batch_size)`` example indices, so that a batch can be any
    #: size (what the norm test needs); noise-driven problems have no examples to add
    example_batches = False

    def on_device(self, x):
        """``x`` (a tensor or a Split) on the task's device, cached per object."""
        if self.device == "cpu":
            return x
        cache = self.__dict__.setdefault("_device_cache", {})
        if id(x) not in cache:
            if isinstance(x, D.Split):
                cache[id(x)] = (x, D.Split(*(t.to(self.device) for t in (x.x_train, x.y_train, x.x_val, x.y_val))))
            else:
                cache[id(x)] = (x, x.to(self.device))
        return cache[id(x)][1]

    @property
    def n_params(self) -> int:
        """Number of trainable scalars of one problem."""
        return sum(math.prod(s) for _, s in self.shapes)

    @property
    def key(self) -> str:
        """Identity for caches: name, version, sizes, and the gradient source when not backprop
        and the batch-size control when not fixed."""
        key = f"{self.name}-v{self.version}-p{self.n_params}-b{self.batch_size}"
        key = key if self.gradients == "backprop" else f"{key}-{self.gradients}"
        return key if self.batch_schedule == "fixed" else f"{key}-{self.batch_schedule}"

    def init(self, gen: torch.Generator) -> Params:
        """One problem's initial parameters, drawn from ``gen``."""
        raise NotImplementedError

    def sample(self, gen: torch.Generator, steps: int) -> torch.Tensor:
        """One seed's minibatch descriptors for ``steps`` updates: a tensor ``(steps, ...)``."""
        raise NotImplementedError

    def train_loss(self, params: Params, batch: torch.Tensor) -> torch.Tensor:
        """Training loss per problem ``(P,)`` on ``batch`` (the step's descriptors, ``(P, ...)``)."""
        raise NotImplementedError

    def val_loss(self, params: Params) -> torch.Tensor:
        """Validation loss per problem ``(P,)``."""
        raise NotImplementedError


# -- synthetic problems -------------------------------------------------------------

@dataclass
class NoisyQuadratic(Task):
    """f(w) = 1/2 (w - w*)^T A (w - w*) with A = Q diag(h) Q^T, h log-spaced over [1/cond, 1].

    Training sees f at a shifted optimum w* + xi, xi ~ N(0, noise^2 I) fresh each step
    (gradient noise A xi); validation is the noiseless f.
    """

    dim: int = 100
    cond: float = 1e3
    noise: float = 0.3

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(D.DATA_SEED + 7)
        q, _ = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=gen))
        h = torch.logspace(0, -math.log10(self.cond), self.dim)
        self.A = (q * h) @ q.T
        self.w_star = torch.randn(self.dim, generator=gen)

    def init(self, gen):
        return [torch.randn(self.dim, generator=gen)]

    def sample(self, gen, steps):
        return self.noise * torch.randn(steps, self.dim, generator=gen)

    def _f(self, w, shift=0.0):
        d = w - self.on_device(self.w_star) - shift
        return 0.5 * ((d @ self.on_device(self.A)) * d).sum(-1)

    def train_loss(self, params, batch):
        return self._f(params[0], batch)

    def val_loss(self, params):
        return self._f(params[0])


@dataclass
class Rosenbrock(Task):
    """Mean over i of 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2, from x ~ -1 + 0.1 N(0, 1).

    Training adds a random linear term <xi, x>, xi ~ N(0, noise^2) (pure gradient noise).
    """

    dim: int = 10
    noise: float = 0.1

    def init(self, gen):
        return [-1.0 + 0.1 * torch.randn(self.dim, generator=gen)]

    def sample(self, gen, steps):
        return self.noise * torch.randn(steps, self.dim, generator=gen)

    @staticmethod
    def _f(x):
        return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).mean(-1)

    def train_loss(self, params, batch):
        return self._f(params[0]) + (params[0] * batch).sum(-1)

    def val_loss(self, params):
        return self._f(params[0])


# -- supervised problems on fixed datasets -----------------------------------------

def mlp_shapes(sizes: list[int], prefix: str = "") -> Shapes:
    """Weight (out, in) and bias (out,) shapes of an MLP with layer widths ``sizes``."""
    out = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out += [(f"{prefix}w{i}", (b, a)), (f"{prefix}b{i}", (b,))]
    return out


def mlp(params: Params, x: torch.Tensor, act: Callable = torch.relu) -> torch.Tensor:
    """Alternating linear layers (weights, biases in ``params``) with ``act`` between them."""
    n = len(params) // 2
    for i in range(n):
        x = linear(x, params[2 * i], params[2 * i + 1])
        if i < n - 1:
            x = act(x)
    return x


def default_init(gen: torch.Generator, shapes: Shapes) -> Params:
    """N(0, 1/fan_in) for weights (names not starting with b/g), zeros for biases, ones for gains."""
    out = []
    for name, shape in shapes:
        if name.startswith("g") or name.endswith("gain"):
            out.append(torch.ones(shape))
        elif name.split(".")[-1].startswith("b"):
            out.append(torch.zeros(shape))
        else:
            out.append(fan_in_normal(gen, shape))
    return out


@dataclass
class Supervised(Task):
    """A model on a fixed (x, y) dataset; minibatches are example indices drawn with replacement.

    ``loss`` is "ce" (classification) or "mse" (regression; "ae" reconstructs x).
    """

    dataset: Callable[[], D.Split] | None = None
    model: Callable[[Params, torch.Tensor], torch.Tensor] | None = None
    loss: str = "ce"
    example_batches = True

    def init(self, gen):
        return default_init(gen, self.shapes)

    def sample(self, gen, steps):
        n = len(self.dataset().x_train)
        return torch.randint(0, n, (steps, self.batch_size), generator=gen)

    def _loss(self, params, x, y):
        out = self.model(params, x)
        if self.loss == "ce":
            return cross_entropy(out, y)
        if self.loss == "ae":
            return mse(out, x)
        return mse(out.squeeze(-1), y)

    def train_loss(self, params, batch):
        d = self.on_device(self.dataset())
        return self._loss(params, d.x_train[batch], d.y_train[batch])

    def val_loss(self, params):
        d = self.on_device(self.dataset())
        return self._loss(params, d.x_val, d.y_val)


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of a batch of ``P`` programs' activations, shape ``(P, N, C, H, W)``."""
    P, N = x.shape[:2]
    y = F.avg_pool2d(x.reshape(P * N, *x.shape[2:]), 2)
    return y.view(P, N, *y.shape[1:])


def cnn_shapes(channels: list[int], side: int, classes: int = 10, k: int = 3) -> Shapes:
    """Shapes of a CNN: 3x3 convs with ``channels`` (input first), one 2x2 average pool, a linear head."""
    shapes: Shapes = []
    for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
        shapes += [(f"conv{i}", (b, a, k, k)), (f"b_conv{i}", (b,))]
    feat = channels[-1] * (side // 2) ** 2
    return shapes + [("head", (classes, feat)), ("b_head", (classes,))]


def cnn(params: Params, x: torch.Tensor, side: int = 8) -> torch.Tensor:
    """Image CNN: (conv3x3 + relu) per conv layer, one 2x2 average pool, linear head."""
    lead = x.shape[:-1]
    h = x.reshape(*lead, 1, side, side)
    n_conv = (len(params) - 2) // 2
    for i in range(n_conv):
        h = torch.relu(conv2d(h, params[2 * i], params[2 * i + 1]))
    h = pool2(h)
    return linear(h.flatten(2), params[-2], params[-1])


def conv1d_shapes(channels: int, length: int = 40, classes: int = 10, k: int = 5) -> Shapes:
    """Shapes of :func:`conv1d_net` with ``channels`` channels on sequences of ``length``."""
    return [("conv0", (channels, 1, k)), ("b_conv0", (channels,)), ("conv1", (channels, channels, k)),
            ("b_conv1", (channels,)), ("head", (classes, channels * (length // 4))), ("b_head", (classes,))]


def conv1d_net(params: Params, x: torch.Tensor) -> torch.Tensor:
    """1-D CNN: two (conv k=5 + relu), average pool 4, linear head; x (P, N, L) or (N, L)."""
    h = x.unsqueeze(-2)
    h = torch.relu(conv1d(h, params[0], params[1], padding=2))
    h = torch.relu(conv1d(h, params[2], params[3], padding=2))
    P, N = h.shape[:2]
    h = F.avg_pool1d(h.reshape(P * N, *h.shape[2:]), 4).reshape(P, N, -1)
    return linear(h, params[4], params[5])


def gru_shapes(inputs: int, hidden: int, outputs: int = 1) -> Shapes:
    """Shapes of :func:`gru_net`: GRU input/recurrent weights and bias, then a linear head."""
    return [("w_ih", (3 * hidden, inputs)), ("w_hh", (3 * hidden, hidden)), ("b_rnn", (3 * hidden,)),
            ("head", (outputs, hidden)), ("b_head", (outputs,))]


def gru_net(params: Params, x: torch.Tensor) -> torch.Tensor:
    """A GRU over the sequence x (P, N, T, in) or (N, T, in), then a linear head on h_T."""
    return linear(gru(x, params[0], params[1], params[2]), params[3], params[4])


@dataclass
class TeacherStudentData:
    """Regression targets from a fixed random tanh teacher, with heavy-tailed noise and outliers."""

    dim: int = 16
    hidden: int = 32
    n_train: int = 2000
    n_val: int = 500

    def __call__(self) -> D.Split:
        return _teacher_student(self.dim, self.hidden, self.n_train, self.n_val)


_TS_CACHE: dict = {}


def _teacher_student(dim: int, hidden: int, n_train: int, n_val: int) -> D.Split:
    key = (dim, hidden, n_train, n_val)
    if key not in _TS_CACHE:
        gen = torch.Generator().manual_seed(D.DATA_SEED + 3)
        w1 = torch.randn(hidden, dim, generator=gen) / math.sqrt(dim)
        w2 = torch.randn(1, hidden, generator=gen) / math.sqrt(hidden) * 2
        x = torch.randn(n_train + n_val, dim, generator=gen)
        y = (torch.tanh(x @ w1.T) @ w2.T).squeeze(-1)
        # Student-t noise with 3 degrees of freedom (heavy tails), then 5% gross outliers.
        z = torch.randn(n_train, generator=gen)
        chi = torch.randn(n_train, 3, generator=gen).square().sum(1) / 3.0
        noise = 0.1 * z / chi.sqrt()
        outlier = torch.rand(n_train, generator=gen) < 0.05
        noise = torch.where(outlier, 5.0 * torch.randn(n_train, generator=gen), noise)
        y_train = y[:n_train] + noise
        _TS_CACHE[key] = D.Split(x[:n_train], y_train, x[n_train:], y[n_train:])
    return _TS_CACHE[key]


@dataclass
class CharLM(Task):
    """A pre-norm transformer language model over characters of Python's help text.

    Loss: mean next-character cross-entropy (nats). Minibatches are random windows of
    ``context + 1`` characters; validation uses ``n_val`` fixed windows of the held-out text.
    """

    context: int = 32
    width: int = 32
    layers: int = 1
    heads: int = 2
    n_val: int = 32
    example_batches = True

    def __post_init__(self) -> None:
        _, _, vocab = D.text()
        self.vocab = vocab
        d = self.width
        shapes: Shapes = [("emb", (vocab, d)), ("pos", (self.context, d))]
        for i in range(self.layers):
            shapes += [(f"g_ln1.{i}", (d,)), (f"qkv.{i}", (3 * d, d)), (f"out.{i}", (d, d)),
                       (f"g_ln2.{i}", (d,)), (f"fc.{i}", (4 * d, d)), (f"proj.{i}", (d, 4 * d))]
        self.shapes = shapes + [("g_lnf", (d,)), ("unembed", (vocab, d))]
        self.examples_per_step = self.batch_size * self.context

    def init(self, gen):
        out = default_init(gen, self.shapes)
        out[1] = 0.1 * out[1] * math.sqrt(self.width)  # small position embeddings
        return out

    def sample(self, gen, steps):
        train, _, _ = D.text()
        return torch.randint(0, len(train) - self.context - 1, (steps, self.batch_size), generator=gen)

    def _loss(self, params, windows):
        P = params[0].shape[0]
        tokens, targets = windows[..., :-1], windows[..., 1:]
        if tokens.dim() == 2:
            tokens = tokens.expand(P, *tokens.shape)
        emb = params[0][torch.arange(P, device=tokens.device).view(P, 1, 1), tokens]  # (P, N, T, d)
        h = emb + params[1].unsqueeze(1)
        i = 2
        for _ in range(self.layers):
            g1, qkv, out, g2, fc, proj = params[i:i + 6]
            h = h + causal_attention(layer_norm(h, g1), qkv, out, self.heads)
            h = h + linear(F.gelu(linear(layer_norm(h, g2), fc)), proj)
            i += 6
        logits = linear(layer_norm(h, params[i]), params[i + 1])
        return cross_entropy(logits, targets)

    def _windows(self, ids, starts):
        ids = self.on_device(ids)
        return ids[starts.to(ids.device).unsqueeze(-1) + torch.arange(self.context + 1, device=ids.device)]

    def train_loss(self, params, batch):
        train, _, _ = D.text()
        return self._loss(params, self._windows(train, batch))

    def val_loss(self, params):
        _, val, _ = D.text()
        starts = torch.linspace(0, len(val) - self.context - 2, self.n_val).long()
        return self._loss(params, self._windows(val, starts))


# -- the registry ----------------------------------------------------------------------

#: name -> factory(scale) building the task; "cpu" sizes run in seconds, "gpu" sizes for validation.
FACTORIES: dict[str, Callable[[str], Task]] = {}
#: "validate": held-out tasks that only ``optdisco validate`` runs (see :mod:`.heldout_scale`).
SUITES: dict[str, list[str]] = {"proxy": [], "heldout": [], "validate": []}


def register(name: str, suite: str) -> Callable:
    """Decorator adding a task factory to the registry and to ``suite``."""
    def wrap(factory: Callable[[str], Task]) -> Callable[[str], Task]:
        FACTORIES[name] = factory
        SUITES[suite].append(name)
        return factory
    return wrap


_BUILT: dict[tuple[str, str, str], Task] = {}


class UnknownTask(KeyError, UserError):
    """A task name that is not a task; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def get_task(name: str, scale: str = "cpu", device: str = "cpu") -> Task:
    """The task called ``name`` at ``scale`` ("cpu" or "gpu"), training on ``device``.

    Raises KeyError with the valid names for an unknown task.
    """
    if name not in FACTORIES:
        raise UnknownTask(f"unknown task '{name}'; tasks: {', '.join(FACTORIES)}")
    if scale not in ("cpu", "gpu"):
        raise ValueError(f"scale must be 'cpu' or 'gpu', not {scale!r}")
    key = (name, scale, str(device))
    if key not in _BUILT:
        task = FACTORIES[name](scale)
        task.examples_per_step = task.examples_per_step or task.batch_size
        task.device = str(device)
        _BUILT[key] = task
    return _BUILT[key]


def suite_tasks(suite: str) -> list[str]:
    """The task names of ``suite`` ("proxy", "heldout" or "validate")."""
    if suite not in SUITES:
        raise KeyError(f"unknown suite '{suite}'; suites: {', '.join(SUITES)}")
    return list(SUITES[suite])


@register("quadratic", "proxy")
def _quadratic(scale: str) -> Task:
    return NoisyQuadratic("quadratic", "rotated ill-conditioned noisy quadratic, d=100, cond 1e3",
                          steps=200, batch_size=1, shapes=[("w", (100,))])


@register("rosenbrock", "proxy")
def _rosenbrock(scale: str) -> Task:
    # The optimum is exactly 0, so log-ratios below "solved" are unbounded: a rule reaching
    # 2e-4 where tuned AdamW reaches 3e-2 scored +4.9 here and outweighed the other eight
    # proxy tasks together in a campaign. A loss of 1e-2 counts as solved.
    return Rosenbrock("rosenbrock", "10-d Rosenbrock chain with gradient noise",
                      steps=200, batch_size=1, shapes=[("x", (10,))], loss_floor=1e-2)


@register("logreg", "proxy")
def _logreg(scale: str) -> Task:
    return Supervised("logreg", "softmax regression on 8x8 digits", steps=100, batch_size=64,
                      shapes=mlp_shapes([64, 10]), dataset=D.digits, model=mlp)


@register("digits_mlp", "proxy")
def _digits_mlp(scale: str) -> Task:
    return Supervised("digits_mlp", "MLP 64-64-10 (relu) on 8x8 digits", steps=150, batch_size=64,
                      shapes=mlp_shapes([64, 64, 10]), dataset=D.digits, model=mlp)


@register("digits_cnn", "proxy")
def _digits_cnn(scale: str) -> Task:
    return Supervised("digits_cnn", "CNN conv3x3(8)-pool-linear on 8x8 digits", steps=100,
                      batch_size=32, shapes=cnn_shapes([1, 8], 8), dataset=D.digits, model=cnn)


@register("mnist1d", "proxy")
def _mnist1d(scale: str) -> Task:
    return Supervised("mnist1d", "MLP 40-64-10 on generated MNIST-1D-style sequences", steps=150,
                      batch_size=64, shapes=mlp_shapes([40, 64, 10]), dataset=D.mnist1d, model=mlp)


@register("char_lm", "proxy")
def _char_lm(scale: str) -> Task:
    return CharLM("char_lm", "1-layer transformer (d=32, ctx 32) on Python's help text",
                  steps=80, batch_size=8, shapes=[], context=32, width=32, layers=1, heads=2)


@register("teacher_student", "proxy")
def _teacher_student_task(scale: str) -> Task:
    return Supervised("teacher_student", "tanh MLP 16-32-1 fit to a teacher; Student-t noise, 5% outliers",
                      steps=150, batch_size=32, shapes=mlp_shapes([16, 32, 1]),
                      dataset=TeacherStudentData(), model=lambda p, x: mlp(p, x, torch.tanh), loss="mse")


@register("autoencoder", "proxy")
def _autoencoder(scale: str) -> Task:
    return Supervised("autoencoder", "tanh autoencoder 64-32-8-32-64 on 8x8 digits", steps=150,
                      batch_size=64, shapes=mlp_shapes([64, 32, 8, 32, 64]), dataset=D.digits,
                      model=lambda p, x: mlp(p, x, torch.tanh), loss="ae")


@register("adding", "proxy")
def _adding(scale: str) -> Task:
    return Supervised("adding", "GRU (8 units) on the adding problem, 6 steps", steps=80, batch_size=32,
                      shapes=gru_shapes(2, 8), dataset=lambda: D.adding(6, 1000, 300, stream=1),
                      model=gru_net, loss="mse")


@register("tabular", "proxy")
def _tabular(scale: str) -> Task:
    return Supervised("tabular", "MLP 12-32-3 on mixed tabular columns, 20% flipped labels", steps=150,
                      batch_size=64, shapes=mlp_shapes([12, 32, 3]),
                      dataset=lambda: D.noisy_tabular(12, 3, 1500, 500, 0.2, stream=1), model=mlp)
