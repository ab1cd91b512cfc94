"""Custom Ray resources on the command line: ``--resources-per-task render=1 big_disk=0.5``.

Ray nodes advertise custom resources (``ray start --resources '{"render": 4}'``, or
``available_node_types.*.resources`` in cluster.yaml); asking each task or training worker for one
places the work on the nodes that have it.
"""

from __future__ import annotations


def parse_resources(items: list[str] | None) -> dict[str, float]:
    """["name=amount", ...] -> {name: amount}; raises ValueError naming the bad item."""
    resources: dict[str, float] = {}
    for item in items or []:
        name, separator, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not separator or not name.strip() or value < 0:
            raise ValueError(f"bad resource {item!r}: use NAME=AMOUNT with a non-negative amount, e.g. render=1")
        if name.strip() in ("CPU", "GPU", "memory"):
            raise ValueError(f"{name.strip()} has its own flag; custom resources are other names")
        resources[name.strip()] = value
    return resources
