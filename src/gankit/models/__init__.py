"""Generator/discriminator pairs by name. Every pair uses the standard signatures
`G(z_dim, data_shape, num_classes=0, **g_kwargs)` and `D(data_shape, num_classes=0, **d_kwargs)`.

A table line is `(G class, D class, defaults)`: variants of a family are the same classes with other
default keyword arguments (`defaults["g"]`, `defaults["d"]`), which `model.g` / `model.d` override.
"""

from __future__ import annotations

from torch import nn

from gankit.models.dcgan import DCGANDiscriminator, DCGANGenerator
from gankit.models.mlp import MLPDiscriminator, MLPGenerator

MODELS = {
    "mlp": (MLPGenerator, MLPDiscriminator, {}),
    "dcgan": (DCGANGenerator, DCGANDiscriminator, {}),
    "dcgan_upsample": (DCGANGenerator, DCGANDiscriminator, {"g": {"upsample": "bilinear"}}),
    "dcgan_linear": (DCGANGenerator, DCGANDiscriminator, {"g": {"project": "linear"}}),
}


def build_models(
    name: str,
    z_dim: int,
    data_shape: tuple[int, ...],
    num_classes: int = 0,
    g: dict | None = None,
    d: dict | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Instantiate the (G, D) pair `name` for data of `data_shape`."""
    from gankit.registry import lookup

    G, D, defaults = lookup(MODELS, name, "model (model.name)")
    g = {**defaults.get("g", {}), **(g or {})}
    d = {**defaults.get("d", {}), **(d or {})}
    return (
        G(z_dim, data_shape, num_classes=num_classes, **g),
        D(data_shape, num_classes=num_classes, **d),
    )
