"""Chip profiles: built-ins, files, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from regulator.chip.profiles import ChipProfile, load_profile, profile_from_dict
from regulator.errors import ConfigError, UnknownNameError


def test_builtins_load_by_name() -> None:
    for name in ("ideal", "loihi", "memristive"):
        assert load_profile(name).name == name
    assert load_profile("memristive").is_noisy and not load_profile("loihi").is_noisy


def test_unknown_profile_name_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        load_profile("truenorth")
    assert str(err.value) == "unknown chip profile 'truenorth'; valid: ideal, loihi, memristive"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("weight_bits", 0),
        ("transmission_failure_p", 1.0),
        ("noise_membrane_sigma", -0.1),
        ("energy", "tpu"),
        ("colour", "red"),
    ],
)
def test_invalid_profile_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        profile_from_dict({"name": "bad", field: value})


def test_profile_from_yaml_and_json_files(tmp_path: Path) -> None:
    y = tmp_path / "chip.yaml"
    y.write_text("name: mine\nweight_bits: 6\ntransmission_failure_p: 0.1\n", encoding="utf-8")
    assert load_profile(y) == ChipProfile(name="mine", weight_bits=6, transmission_failure_p=0.1)
    j = tmp_path / "chip.json"
    j.write_text('{"name": "mine", "state_bits": 1}', encoding="utf-8")
    with pytest.raises(ConfigError, match="state_bits"):
        load_profile(j)
    with pytest.raises(ConfigError, match="not found"):
        load_profile(tmp_path / "missing.yaml")
