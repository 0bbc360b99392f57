"""The policy file: examples validate, errors name every field path, no literal token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from regulator.errors import ConfigError
from regulator.policy.model import (
    AccuracyBelow,
    CronSchedule,
    DriftDetected,
    HttpSource,
    IntervalSchedule,
    Policy,
    ReplaySource,
    SimulatedSource,
    load_policy,
    parse_policy,
    policy_json_schema,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "deploy" / "policies").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"default.yaml", "gas-drift-replay.yaml", "alert-driven.yaml", "low-power.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    assert isinstance(load_policy(path), Policy)


def test_default_example_equals_embedded_default() -> None:
    assert load_policy(REPO / "deploy" / "policies" / "default.yaml") == Policy()


def test_none_and_empty_file_are_the_default(tmp_path: Path) -> None:
    assert load_policy(None) == Policy()
    assert load_policy(write(tmp_path, "")) == Policy()
    assert load_policy(write(tmp_path, "# only a comment\n")) == Policy()


def test_embedded_default_contents() -> None:
    p = Policy()
    assert (p.device.id, p.device.profile) == ("chip0", "loihi")
    assert p.model.prior == "models/nanosensor"
    assert isinstance(p.source, SimulatedSource)
    assert p.source.schedule.period_s == 180 and p.source.rate_hz == 20
    assert p.source.label_fraction == 0.3 and p.source.label_delay_samples == 10
    assert (p.monitors.ood_scorer, p.monitors.detector) == ("mahalanobis", "cusum")
    assert p.monitors.mean_samples_between_false_alarms == 5000
    drift, acc = p.rules
    assert isinstance(drift.condition, DriftDetected)
    assert drift.action == "recalibrate_supervised"
    assert isinstance(acc.condition, AccuracyBelow)
    assert (acc.condition.threshold, acc.condition.last_n_labels) == (0.7, 50)
    assert p.recalibration.allow_label_free_fallback
    assert (p.http.host, p.http.port, p.http.token_env) == ("127.0.0.1", 9890, "REGULATOR_TOKEN")
    assert p.http.max_body_bytes == 1 << 20


def test_gas_drift_example() -> None:
    p = load_policy(REPO / "deploy" / "policies" / "gas-drift-replay.yaml")
    assert isinstance(p.source, ReplaySource)
    assert p.model.prior == "models/gas-drift"
    assert (p.recalibration.k_shot, p.recalibration.acceptance) == (5, "cross_validation")
    assert [(r.condition.signal, r.action) for r in p.rules] == [
        ("drift_detected", "recalibrate_supervised")
    ]


def test_alert_driven_example() -> None:
    p = load_policy(REPO / "deploy" / "policies" / "alert-driven.yaml")
    assert p.rules == ()
    (nightly,) = p.schedules
    assert isinstance(nightly, CronSchedule) and nightly.cron == "0 3 * * *"
    assert p.alerts.enabled


def test_models_are_frozen() -> None:
    p = Policy()
    with pytest.raises(ValidationError):
        p.http.port = 1  # type: ignore[misc]


def test_partial_sections_keep_other_defaults(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "source: {rate_hz: 5}\nhttp: {port: 1234}\n"))
    assert isinstance(p.source, SimulatedSource) and p.source.rate_hz == 5
    assert p.source.family == "nanosensor"
    assert p.http.port == 1234 and p.http.host == "127.0.0.1"


def test_source_kinds(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "source: {kind: http, queue_size: 8}\n"))
    assert isinstance(p.source, HttpSource) and p.source.queue_size == 8
    assert p.source.clock == "wall"
    p = load_policy(write(tmp_path, "source: {kind: http, clock: sample}\n"))
    assert isinstance(p.source, HttpSource) and p.source.clock == "sample"
    with pytest.raises(ConfigError, match=r"source\.clock: Input should be .wall. or .sample."):
        load_policy(write(tmp_path, "source: {kind: http, clock: gps}\n"))
    p = load_policy(write(tmp_path, "source: {kind: replay, files: [a.dat]}\n"))
    assert isinstance(p.source, ReplaySource) and p.source.rate_hz is None


def test_schedule_kind_inferred(tmp_path: Path) -> None:
    p = load_policy(
        write(
            tmp_path,
            "schedules:\n"
            "  - {id: a, every_s: 600, action: recalibrate_label_free}\n"
            "  - {id: b, cron: '*/5 * * * *', action: recalibrate_supervised}\n",
        )
    )
    assert isinstance(p.schedules[0], IntervalSchedule)
    assert isinstance(p.schedules[1], CronSchedule)


INVALID = """\
device:
  id: "bad id with spaces"
source:
  kind: simulated
  rate_hz: -1
  colour: blue
rules:
  - name: acc
    condition: {signal: accuracy_below, threshold: 1.5}
    action: recalibrate_supervised
  - name: p
    condition: {signal: power_above}
    action: explode
schedules:
  - {id: n, kind: cron, cron: "61 * * * *", action: recalibrate_supervised}
  - {id: i, kind: interval, every_s: 0, action: rollback}
recalibration:
  k_shot: 0
"""


def test_invalid_file_names_every_field_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, INVALID))
    message = str(info.value)
    expected = [
        "device.id:",
        "source.rate_hz: Input should be greater than 0",
        "source.colour: Extra inputs are not permitted",
        "rules.0.condition.threshold: Input should be less than or equal to 1",
        "rules.1.condition.watts: Field required",
        "rules.1.action:",
        "schedules.0.cron: invalid crontab expression",
        "schedules.1.every_s: Input should be greater than 0",
        "recalibration.k_shot: Input should be greater than or equal to 1",
    ]
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert "(9 errors)" in message
    assert str(tmp_path / "policy.yaml") in message


def test_cross_field_errors(tmp_path: Path) -> None:
    text = (
        "monitors: {accuracy_window_labels: 20, silent_threshold: 0.6}\n"
        "rules:\n"
        "  - {name: a, condition: {signal: accuracy_below, threshold: 0.5, last_n_labels: 50},"
        " action: alert_only}\n"
        "  - {name: a, condition: {signal: drift_detected}, action: rollback}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    message = str(info.value)
    assert "monitors: silent_threshold (0.6) must be below saturated_threshold" in message
    assert "rules: duplicate rule name 'a'" in message


def test_accuracy_rule_must_fit_window() -> None:
    with pytest.raises(ConfigError, match=r"last_n_labels \(50\) exceeds"):
        parse_policy({"monitors": {"accuracy_window_labels": 20}})


def test_unknown_tags_are_named(tmp_path: Path) -> None:
    text = (
        "source: {kind: carrier-pigeon}\n"
        "rules: [{name: x, condition: {signal: vibes}, action: rollback}]\n"
        "schedules: [{id: s, action: rollback}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    message = str(info.value)
    assert "source: source.kind must be simulated, replay or http" in message
    assert "rules.0.condition: Input tag 'vibes'" in message
    assert "schedules.0: a schedule needs kind" in message


@pytest.mark.parametrize(
    "text, path",
    [
        ("http:\n  token: s3cr3t-value\n", "http.token"),
        ("token: s3cr3t-value\n", "token"),
    ],
)
def test_literal_token_is_refused_clearly(tmp_path: Path, text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    message = str(info.value)
    assert f"{path}: a literal token is not allowed in the policy file" in message
    assert "token_env" in message and "token_file" in message
    assert "s3cr3t-value" not in message


def test_token_field_not_in_dump_or_schema() -> None:
    assert "token" not in Policy().http.model_dump()
    assert "token" not in Policy().model_dump()
    schema = policy_json_schema()
    assert "token" not in schema["$defs"]["HttpConfig"]["properties"]
    assert "token" not in schema["properties"]
    json.dumps(schema)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"YAML error at line 4, column 5: .*\(while parsing a flow sequence at line 3,",
    ):
        load_policy(write(tmp_path, "device:\n  id: a\n  seed: [1, 2\nhttp: {}\n"))


def test_yaml_duplicate_key_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'port'"):
        load_policy(write(tmp_path, "http:\n  port: 1\n  port: 2\n"))


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = (
        "rules:\n"
        "  - &base {name: a, condition: {signal: drift_detected}, action: rollback,"
        " cooldown_s: 5}\n"
        "  - {<<: *base, name: b, cooldown_s: 9}\n"
    )
    p = load_policy(write(tmp_path, text))
    assert [(r.name, r.cooldown_s) for r in p.rules] == [("a", 5), ("b", 9)]


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_policy(write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_toml(tmp_path: Path) -> None:
    text = """\
[device]
id = "edge7"

[http]
port = 9999

[[rules]]
name = "ood"
action = "recalibrate_label_free"
cooldown_s = 120

[rules.condition]
signal = "ood_pvalue_below"
threshold = 0.01
for_s = 30

[[schedules]]
id = "nightly"
kind = "cron"
cron = "0 3 * * *"
action = "recalibrate_supervised"
"""
    p = load_policy(write(tmp_path, text, "policy.toml"))
    assert p.device.id == "edge7" and p.http.port == 9999
    assert p.rules[0].condition.signal == "ood_pvalue_below"
    assert p.rules[0].condition.for_s == 30
    assert isinstance(p.schedules[0], CronSchedule)


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TOML syntax error.*line 2"):
        load_policy(write(tmp_path, "[http]\nport = = 1\n", "p.toml"))
    with pytest.raises(ConfigError, match=r"http\.port: Input should be less than or equal"):
        load_policy(write(tmp_path, "[http]\nport = 70000\n", "p.toml"))


def test_round_trip_through_json() -> None:
    p = load_policy(REPO / "deploy" / "policies" / "low-power.yaml")
    assert parse_policy(json.loads(p.model_dump_json())) == p


def test_with_overrides_validates() -> None:
    p = Policy().with_overrides({"http.host": "0.0.0.0", "http.port": 0, "state_dir": "/x"})
    assert (p.http.host, p.http.port, p.state_dir) == ("0.0.0.0", 0, "/x")
    with pytest.raises(ConfigError, match=r"http\.port"):
        Policy().with_overrides({"http.port": -5})


def test_log_level_case_insensitive(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, "logging: {level: debug}\n")).logging.level == "DEBUG"


def test_timezone_validated(tmp_path: Path) -> None:
    text = "schedules: [{id: a, cron: '0 3 * * *', timezone: Mars/Olympus, action: rollback}]\n"
    with pytest.raises(ConfigError, match=r"schedules\.0\.timezone: unknown time zone"):
        load_policy(write(tmp_path, text))
