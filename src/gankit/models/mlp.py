"""Multilayer-perceptron generator and discriminator, for toy densities and flattened images.

Conditioning (Mirza & Osindero 2014): with `num_classes > 0` a one-hot label is concatenated to the
generator's noise and to the discriminator's input; or, with `cond="projection"` in D, the label
enters D's output as an inner product of a class embedding with the last hidden features
(projection discriminator, Miyato & Koyama 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankit.models.layers import (
    MinibatchStd,
    apply_spectral_norm,
    check_stabilisers,
    pack_samples,
)

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "maxout")
CONDITIONING = ("concat", "projection")
OUTPUTS = ("none", "tanh", "sigmoid", "pixel_sigmoid")
OUTPUT_BIASES = ("zero", "data")


class Maxout(nn.Module):
    """(B, units * pieces) -> (B, units): the max over each unit's `pieces` linear pieces
    (Goodfellow et al. 2013, "Maxout Networks"; the 2014 GAN's discriminator)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], -1, self.pieces).amax(dim=2)


class PixelSigmoid(nn.Module):
    """2 sigmoid(a) - 1: a sigmoid unit per pixel, the 2014 GAN code's [0, 1] output, written in
    gankit's [-1, 1] pixels (the same function of a as the sigmoid: no rescaled gradients)."""

    def forward(self, a: Tensor) -> Tensor:
        return 2 * torch.sigmoid(a) - 1


def inverse_output(mean: Tensor, output: str) -> Tensor:
    """The output layer's pre-activation whose output is `mean`: logit / atanh / identity,
    clipped 1e-7 from the ends like pylearn2's init_sigmoid_bias_from_marginals."""
    eps = 1e-7
    if output in ("sigmoid", "pixel_sigmoid"):
        u = (mean + 1) / 2 if output == "pixel_sigmoid" else mean
        return torch.logit(u.clamp(eps, 1 - eps))
    if output == "tanh":
        return torch.atanh(mean.clamp(-1 + 2 * eps, 1 - 2 * eps))
    return mean


def activation(name: str, slope: float = 0.2, pieces: int = 5) -> nn.Module:
    """The activation module called `name` (one of ACTIVATIONS)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from: {', '.join(ACTIVATIONS)}")
    if name == "maxout":
        return Maxout(pieces)
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    return {
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }[name]()


def mlp(
    sizes: list[int],
    act: str,
    slope: float,
    dropout: float,
    batchnorm: bool,
    pieces: int = 5,
) -> list[nn.Module]:
    """Hidden layers Linear -> [BatchNorm1d] -> act -> [Dropout] for consecutive pairs of `sizes`
    (a maxout layer of n units is Linear(in, n * pieces) -> Maxout)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        width = n_out * pieces if act == "maxout" else n_out
        layers.append(nn.Linear(n_in, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(act, slope, pieces))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


def uniform_init(module: nn.Module, init_range: float) -> None:
    """Linear weights ~ U(-r, r) and zero biases (pylearn2's `irange`, used by the 2014 GAN code);
    r = 0 keeps PyTorch's default initialisation."""
    if init_range <= 0:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -init_range, init_range)
            nn.init.zeros_(m.bias)


def _check_labels(labels: Tensor | None, num_classes: int, batch: int) -> Tensor | None:
    if num_classes == 0:
        if labels is not None:
            raise ValueError("labels given to an unconditional model (num_classes=0)")
        return None
    if labels is None or labels.shape != (batch,):
        raise ValueError(f"conditional model needs labels of shape ({batch},), got {labels!r}")
    return F.one_hot(labels.long(), num_classes).float()  # (B, K)


class MLPGenerator(nn.Module):
    """z (B, z_dim) [+ labels (B,)] -> samples (B, *data_shape)."""

    def __init__(
        self,
        z_dim: int,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        hidden: tuple[int, ...] = (128, 128),
        activation: str = "relu",
        slope: float = 0.2,
        dropout: float = 0.0,
        batchnorm: bool = False,
        output: str = "none",
        spectral_norm: bool = False,
        init_range: float = 0.0,
        pieces: int = 5,
        output_bias: str = "zero",
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose from: {', '.join(OUTPUTS)}")
        if output_bias not in OUTPUT_BIASES:
            raise ValueError(
                f"unknown output_bias {output_bias!r}; choose from: {', '.join(OUTPUT_BIASES)}"
            )
        self.z_dim, self.data_shape, self.num_classes = z_dim, tuple(data_shape), num_classes
        self.output, self.output_bias = output, output_bias
        sizes = [z_dim + num_classes, *hidden]
        layers = mlp(sizes, activation, slope, dropout, batchnorm, pieces)
        layers.append(nn.Linear(sizes[-1], math.prod(self.data_shape)))
        self.n_out = len(layers) - 1  # index of the output Linear in self.net
        if output != "none":
            layers.append(
                {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "pixel_sigmoid": PixelSigmoid}[output]()
            )
        self.net = nn.Sequential(*layers)
        uniform_init(self, init_range)
        if spectral_norm:
            apply_spectral_norm(self)

    @torch.no_grad()
    def init_output_bias(self, mean: Tensor) -> None:
        """Start the output layer's bias where G's output is the data's `mean` sample for zero
        weights (`output_bias: data`; the 2014 GAN code's init_sigmoid_bias_from_marginals)."""
        self.net[self.n_out].bias.copy_(inverse_output(mean.reshape(-1), self.output))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        onehot = _check_labels(labels, self.num_classes, z.shape[0])
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)  # (B, z_dim + K)
        return self.net(z).view(z.shape[0], *self.data_shape)


class MLPDiscriminator(nn.Module):
    """samples (B, *data_shape) [+ labels (B,)] -> logits (B / pack,).

    Stabilisers (see gankit.models.layers): `spectral_norm`, `pack` (PacGAN: consecutive samples
    scored jointly), `minibatch_std` (group size; 0 = off). `unit_input` scores (x + 1) / 2, the
    [0, 1] pixels of the 2014 GAN code, so its SGD steps are that code's.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        hidden: tuple[int, ...] = (128, 128),
        activation: str = "leaky_relu",
        slope: float = 0.2,
        dropout: float = 0.0,
        batchnorm: bool = False,
        cond: str = "concat",
        spectral_norm: bool = False,
        pack: int = 1,
        minibatch_std: int = 0,
        pieces: int = 5,
        input_dropout: float = 0.0,
        init_range: float = 0.0,
        unit_input: bool = False,
    ) -> None:
        super().__init__()
        if cond not in CONDITIONING:
            raise ValueError(f"unknown cond {cond!r}; choose from: {', '.join(CONDITIONING)}")
        check_stabilisers(pack, minibatch_std, cond, num_classes)
        self.data_shape, self.num_classes, self.pack = tuple(data_shape), num_classes, pack
        self.project = cond == "projection" and num_classes > 0
        n_in = pack * (math.prod(self.data_shape) + (num_classes if not self.project else 0))
        sizes = [n_in, *hidden]
        std = [MinibatchStd(minibatch_std)] if minibatch_std else []
        n_last = sizes[-1] + (1 if minibatch_std else 0)
        drop_in = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
        self.unit_input = unit_input
        self.net = nn.Sequential(
            *drop_in, *mlp(sizes, activation, slope, dropout, batchnorm, pieces), *std,
            nn.Linear(n_last, 1),
        )  # fmt: skip
        if self.project:
            self.embed = nn.Embedding(num_classes, n_last)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # start near the unconditional D
        uniform_init(self.net, init_range)
        if spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        x = x.reshape(x.shape[0], -1)  # (B, D)
        if self.unit_input:  # the [0, 1] pixels the 2014 GAN code's D scored
            x = (x + 1) / 2
        onehot = _check_labels(labels, self.num_classes, x.shape[0])
        if self.project:
            h = self.net[:-1](x)  # (B, H) last hidden features
            return self.net[-1](h).squeeze(1) + (self.embed(labels) * h).sum(1)  # (B,)
        if onehot is not None:
            x = torch.cat([x, onehot], dim=1)  # (B, D + K)
        if self.pack > 1:
            x = pack_samples(x, self.pack)  # (B / pack, pack * (D + K))
        return self.net(x).squeeze(1)  # (B / pack,)
