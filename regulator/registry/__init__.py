"""The versioned model store under ``<state_dir>/registry``.

Layout::

    registry/
      v000001/            a verified model folder (files + manifest.json) plus lineage.json
      v000002/
      current             JSON, the single commit point: which version is served, which
                          versions were ever promoted, which were rolled back
      quarantine/         damaged versions and pointers, moved aside at start

Crash safety: every change of state is one atomic rewrite of ``current``, so a kill -9
at any point leaves either the old or the new state; a version folder appears by one
directory rename, and temporary leftovers of interrupted writes are removed when the
registry is opened. Damage never stops the service: :meth:`Registry.open_serving`
quarantines damaged versions and serves the newest sound one (else the shipped prior);
:meth:`Registry.prune` applies retention.

One job per module: :mod:`~regulator.registry.names` (version names),
:mod:`~regulator.registry.pointer` (the commit point), :mod:`~regulator.registry.lineage`
(lineage.json and :class:`VersionInfo`), :mod:`~regulator.registry.quarantine`,
:mod:`~regulator.registry.recovery` (what to serve after damage),
:mod:`~regulator.registry.retention` (what to keep), :mod:`~regulator.registry.store`
(the :class:`Registry` itself) and :mod:`~regulator.registry.faultpoint` (named kill
points for the fault matrix, inert unless ``REGULATOR_REGISTRY_FAULT`` is set).

>>> import tempfile, pathlib
>>> from regulator.modelfolder import write_manifest
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> prior = tmp / "prior"; prior.mkdir()
>>> _ = (prior / "weights.safetensors").write_bytes(b"w0")
>>> _ = write_manifest(prior, {"prior": "demo"})
>>> reg = Registry(tmp / "registry", clock=lambda: 0.0)
>>> reg.bootstrap(prior)
'v000001'
>>> _ = (prior / "weights.safetensors").write_bytes(b"w1")
>>> _ = write_manifest(prior, {"prior": "demo"})
>>> v = reg.add(prior, parent="v000001", trigger="drift", data_used={"n": 10},
...             evaluation={"candidate": 0.9, "serving": 0.7})
>>> reg.promote(v); reg.current()
'v000002'
>>> reg.rollback()
'v000001'
>>> [(i.version, i.status) for i in reg.versions()]
[('v000001', 'good'), ('v000002', 'rolled_back')]
"""

from regulator.registry.lineage import LINEAGE, Status, VersionInfo
from regulator.registry.quarantine import QUARANTINE
from regulator.registry.store import Registry

__all__ = ["LINEAGE", "QUARANTINE", "Registry", "Status", "VersionInfo"]
