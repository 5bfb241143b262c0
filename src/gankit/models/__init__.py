"""Generator/discriminator pairs by name. Every pair uses the standard signatures
`G(z_dim, data_shape, num_classes=0, **g_kwargs)` and `D(data_shape, num_classes=0, **d_kwargs)`."""

from __future__ import annotations

from torch import nn

from gankit.models.mlp import MLPDiscriminator, MLPGenerator

MODELS = {
    "mlp": (MLPGenerator, MLPDiscriminator),
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
    from gankit.config import lookup

    G, D = lookup(MODELS, name, "model (model.name)")
    return (
        G(z_dim, data_shape, num_classes=num_classes, **(g or {})),
        D(data_shape, num_classes=num_classes, **(d or {})),
    )
