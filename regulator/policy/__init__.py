"""The policy file's model (``model``) and the rule engine (``engine``).

Pure logic: nothing here starts threads, reads the clock, or talks HTTP or Prometheus.
"""

from regulator.policy.check import check_config
from regulator.policy.engine import Decision, RuleEngine, Signals
from regulator.policy.model import (
    RECALIBRATION_ACTIONS,
    Action,
    Policy,
    load_policy,
    parse_policy,
    policy_json_schema,
)

__all__ = [
    "RECALIBRATION_ACTIONS",
    "Action",
    "Decision",
    "Policy",
    "RuleEngine",
    "Signals",
    "check_config",
    "load_policy",
    "parse_policy",
    "policy_json_schema",
]
