"""The DCGAN family (Radford et al. 2016) for square images of 7·2^k or 4·2^k pixels (28, 32, 64, ...).

The depth follows from the image size: G projects z to a `base` x `base` map (7 for 28 px, 4 otherwise),
then doubles the resolution until it reaches the image size; D mirrors it. At 64 px that is five
transposed convolutions in G and five convolutions in D, as in the paper.

Variants are constructor arguments, not subclasses:
- `upsample="bilinear"`: G upsamples by bilinear interpolation + 3x3 "same" convolution instead of
  4x4 stride-2 transposed convolutions (avoids checkerboard artefacts; Odena et al. 2016).
- `project="linear"`: z is projected by a linear layer to the first (base x base) feature map.
- `head="linear"` (D): the final convolution is replaced by a linear layer on the flattened features.
- `num_classes > 0`: conditional (Mirza & Osindero 2014): a one-hot label is concatenated to z and,
  as K constant channels, to D's input; or, with `cond="projection"` in D, the label enters D's
  output as the inner product of a class embedding with the spatially summed last features
  (projection discriminator, Miyato & Koyama 2018).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gankit.models.layers import (
    MinibatchStd,
    apply_spectral_norm,
    check_stabilisers,
    pack_samples,
)
from gankit.models.mlp import CONDITIONING, _check_labels

UPSAMPLE = ("transposed", "bilinear")
PROJECT = ("conv", "linear")
HEADS = ("conv", "linear")


def _layout(data_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, base, number of 2x stages) of a (C, H, W) image, or a ValueError."""
    if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
        raise ValueError(
            f"DCGAN models need square (C, H, W) images, got shape {tuple(data_shape)}"
        )
    c, h = data_shape[0], data_shape[1]
    for base in (7, 4):
        stages = math.log2(h / base) if h >= 2 * base else 0
        if stages >= 1 and stages.is_integer():
            return c, base, int(stages)
    raise ValueError(
        f"DCGAN models need an image size of 7 or 4 times a power of two "
        f"(e.g. data.img_size 28, 32, 64), got {h}"
    )


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights for conv/linear/embedding layers, N(1, 0.02) BatchNorm scales, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Embedding):  # projection discriminator's class embedding
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (B, z_dim) [+ labels (B,)] -> images (B, C, H, W) in [-1, 1] (tanh)."""

    def __init__(
        self,
        z_dim: int,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        ngf: int = 64,
        upsample: str = "transposed",
        project: str = "conv",
        batchnorm: bool = True,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        for name, value, valid in (("upsample", upsample, UPSAMPLE), ("project", project, PROJECT)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(valid)}")
        self.z_dim, self.data_shape, self.num_classes = z_dim, tuple(data_shape), num_classes
        c, base, stages = _layout(self.data_shape)
        top = ngf * 2 ** (stages - 1)  # 8 * ngf at 64 px: 64 -> 512 ... 128 -> 1024 filters
        widths = [top // 2**k for k in range(stages)] + [c]  # channels at base, 2*base, ..., H
        n_in = z_dim + num_classes

        def norm_act(n: int) -> list[nn.Module]:
            return [nn.BatchNorm2d(n), nn.ReLU(True)] if batchnorm else [nn.ReLU(True)]

        if project == "conv":  # (B, n_in, 1, 1) -> (B, top, base, base)
            self.project = nn.Sequential(
                nn.Unflatten(1, (n_in, 1, 1)),
                nn.ConvTranspose2d(n_in, top, base, 1, 0, bias=not batchnorm),
                *norm_act(top),
            )
        else:
            self.project = nn.Sequential(
                nn.Linear(n_in, top * base * base, bias=not batchnorm),
                nn.Unflatten(1, (top, base, base)),
                *norm_act(top),
            )
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = k == stages - 1
            if upsample == "transposed":
                layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1, bias=last or not batchnorm))
            else:
                layers += [
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(a, b, 3, 1, 1, bias=last or not batchnorm),
                ]
            layers += [nn.Tanh()] if last else norm_act(b)
        self.net = nn.Sequential(*layers)
        dcgan_init(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        onehot = _check_labels(labels, self.num_classes, z.shape[0])
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)  # (B, z_dim + K)
        return self.net(self.project(z))  # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """images (B, C, H, W) [+ labels (B,)] -> logits (B / pack,).

    Stabilisers (see gankit.models.layers): `spectral_norm`, `pack` (PacGAN), `minibatch_std`
    (group size before the head; 0 = off).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        num_classes: int = 0,
        ndf: int = 64,
        slope: float = 0.2,
        batchnorm: bool = True,
        head: str = "conv",
        dropout: float = 0.0,
        cond: str = "concat",
        spectral_norm: bool = False,
        pack: int = 1,
        minibatch_std: int = 0,
    ) -> None:
        super().__init__()
        for name, value, valid in (("head", head, HEADS), ("cond", cond, CONDITIONING)):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; choose from: {', '.join(valid)}")
        check_stabilisers(pack, minibatch_std, cond, num_classes)
        self.data_shape, self.num_classes, self.pack = tuple(data_shape), num_classes, pack
        self.project = cond == "projection" and num_classes > 0
        c, base, stages = _layout(self.data_shape)
        widths = [pack * (c + (num_classes if not self.project else 0))] + [
            ndf * 2**k for k in range(stages)
        ]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            bn = batchnorm and k > 0  # no BatchNorm on D's input layer (DCGAN paper)
            layers.append(nn.Conv2d(a, b, 4, 2, 1, bias=not bn))
            layers += [nn.BatchNorm2d(b)] if bn else []
            layers.append(nn.LeakyReLU(slope, True))
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
        self.net = nn.Sequential(*layers)  # (B, C+K, H, W) -> (B, top, base, base)
        top = widths[-1]
        std = [MinibatchStd(minibatch_std)] if minibatch_std else []
        n_head = top + (1 if minibatch_std else 0)  # the std plane is one more channel
        if head == "conv":
            self.head = nn.Sequential(*std, nn.Conv2d(n_head, 1, base, 1, 0), nn.Flatten(0))
        else:
            self.head = nn.Sequential(
                *std, nn.Flatten(1), nn.Linear(n_head * base * base, 1), nn.Flatten(0)
            )
        if self.project:
            self.embed = nn.Embedding(num_classes, top)
        dcgan_init(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        onehot = _check_labels(labels, self.num_classes, x.shape[0])
        if self.project:
            h = self.net(x)  # (B, top, base, base)
            return self.head(h) + (self.embed(labels) * h.sum((2, 3))).sum(1)  # (B,)
        if onehot is not None:  # K constant label planes beside the image channels
            planes = onehot[:, :, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)
            x = torch.cat([x, planes], dim=1)  # (B, C + K, H, W)
        if self.pack > 1:
            x = pack_samples(x, self.pack)  # (B / pack, pack * (C + K), H, W)
        return self.head(self.net(x))  # (B / pack,)
