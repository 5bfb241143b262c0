"""Looking names up in gankit's registries (a leaf module: the registries' packages import it).

Each family is a plain dict (`DATASETS`, `MODELS`, `LOSSES`, `METRICS`, ...) in its own module;
`lookup` is the one place that turns a wrong name into the error listing the valid ones.
"""

from __future__ import annotations

from typing import Any

from gankit.errors import ConfigError


def lookup(table: dict[str, Any], name: str, what: str) -> Any:
    """`table[name]` or a ConfigError listing the valid names."""
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; choose from: {', '.join(table)}")
    return table[name]
