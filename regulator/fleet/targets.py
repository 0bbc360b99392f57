"""Prometheus file-based service discovery for a fleet: one target per device.

Prometheus reads the file with a ``file_sd_configs`` entry (``honor_labels: true``, as
in ``deploy/prometheus/prometheus.yml``, since each device labels its own series) and
re-reads it when it changes; the file is replaced atomically.

>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "targets.json"
>>> write_targets(p, {"chip1": "127.0.0.1:9101", "chip0": "127.0.0.1:9100"})
>>> json.loads(p.read_text())[0]  # keys sorted
{'labels': {'device': 'chip0'}, 'targets': ['127.0.0.1:9100']}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from regulator import atomic

__all__ = ["write_targets"]


def write_targets(path: Path, targets: Mapping[str, str]) -> None:
    """Write ``{device: "host:port"}`` as a ``file_sd`` JSON list, sorted by device."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        path,
        [{"targets": [targets[d]], "labels": {"device": d}} for d in sorted(targets)],
    )
