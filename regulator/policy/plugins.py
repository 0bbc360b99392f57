"""Plug-in names in a policy, checked against what is registered.

A name nothing is registered under (``monitors.ood_scorer: bogus``) used to pass
``check-config`` and be ignored or fail at start-up; it is refused with the field path
and the valid names, like any other invalid value. The registries are imported here,
lazily, so the policy model itself stays free of the packages that implement them.

>>> from regulator.policy.model import Policy
>>> plugin_name_errors(Policy())
[]
>>> bad = Policy.model_validate({"monitors": {"ood_scorer": "bogus"}})
>>> plugin_name_errors(bad)
["monitors.ood_scorer: unknown OOD scorer 'bogus'; valid: energy, mahalanobis, max_softmax"]
"""

from __future__ import annotations

from collections.abc import Iterable

from regulator.policy.model import Policy, SimulatedSource

__all__ = ["plugin_name_errors"]

_PROFILE_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _unknown(field: str, kind: str, name: str, valid: Iterable[str]) -> str:
    return f"{field}: unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}"


def plugin_name_errors(policy: Policy) -> list[str]:
    """One ``dotted.path: message`` line per plug-in name that is not registered."""
    from regulator.chip.profiles import BUILTIN_PROFILES
    from regulator.monitor.detect import DETECTORS
    from regulator.monitor.ood import SCORERS
    from regulator.tasks.base import family_names

    errors = []
    mon = policy.monitors
    if mon.ood_scorer not in SCORERS:
        errors.append(_unknown("monitors.ood_scorer", "OOD scorer", mon.ood_scorer, SCORERS))
    if mon.detector not in DETECTORS:
        errors.append(_unknown("monitors.detector", "detector", mon.detector, DETECTORS))
    profile = policy.device.profile
    if profile not in BUILTIN_PROFILES and not profile.lower().endswith(_PROFILE_FILE_SUFFIXES):
        errors.append(_unknown("device.profile", "chip profile", profile, BUILTIN_PROFILES))
    src = policy.source
    if isinstance(src, SimulatedSource):
        families = family_names()
        if src.family not in families:
            errors.append(_unknown("source.family", "task family", src.family, families))
    return errors
