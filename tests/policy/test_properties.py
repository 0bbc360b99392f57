"""Properties of the policy loader over generated files (hypothesis): every valid file
passes ``check-config`` and round-trips; every hostile mutation exits 0 or 2, and 2
names the field. ``bench/policy_fuzz.py`` runs the same with thousands of files."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

from regulator.policy.check import check_config
from regulator.policy.model import Policy, load_policy
from tests.policy.strategies import hostile_policies, valid_policies

EXAMPLES = 60
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_file(data: Any) -> tuple[int, str, Path]:
    """Write ``data`` as YAML and run check-config on it: (exit, stderr, path)."""
    folder = Path(tempfile.mkdtemp(prefix="policy-prop-"))
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=False))
    out, err = io.StringIO(), io.StringIO()
    return check_config(path, out=out, err=err), err.getvalue(), path


@_SETTINGS
@given(data=valid_policies())
def test_every_valid_file_passes_and_round_trips(data: dict[str, Any]) -> None:
    code, err, path = check_file(data)
    assert code == 0, err
    policy = load_policy(path)
    assert policy == Policy.model_validate(data)
    code, err, again = check_file(policy.model_dump(mode="json"))
    assert code == 0, err
    assert load_policy(again) == policy


@_SETTINGS
@given(case=hostile_policies())
def test_every_hostile_file_exits_0_or_2_naming_the_field(case: tuple[dict[str, Any], str]) -> None:
    data, dotted = case
    code, err, _ = check_file(data)
    assert code in (0, 2)
    if code == 2:
        assert "Traceback" not in err
        section = dotted.split(".", 1)[0]
        assert f"{section}" in err, (dotted, err)
