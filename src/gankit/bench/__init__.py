"""Speed benchmarks by name: each times gankit against a textbook reference loop in the same run."""

from __future__ import annotations

from gankit.bench import dcgan, parzen, per_class, toy

BENCHES = {
    "toy": toy.run,
    "dcgan": dcgan.run,
    "per_class": per_class.run,
    "parzen": parzen.run,
}
