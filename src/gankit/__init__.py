"""gankit: train, evaluate and visualise GANs, from toy densities to image GANs."""

from gankit.version import __version__

__all__ = ["__version__", "Config", "load_config", "train", "load_generator", "sample"]


def __getattr__(name: str):  # lazy, so `import gankit` and `gankit --help` stay instant
    if name in ("Config", "load_config"):
        from gankit import config

        return getattr(config, name)
    if name == "train":
        from gankit.trainer import train

        return train
    if name == "load_generator":
        from gankit.factory import load_generator

        return load_generator
    if name == "sample":
        from gankit.sample import sample

        return sample
    raise AttributeError(f"module 'gankit' has no attribute {name!r}")
