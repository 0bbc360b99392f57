"""Schemathesis against a running daemon's own ``/openapi.json``, with the token: every
documented operation, positive and (for bodies) negative cases, bounded in count.

Used by the test suite (a few hundred requests) and by ``bench/fault_matrix.py``
(thousands). A 5xx is a failure, except a 503 from ``/readyz`` or ``/healthz``, which
is their contract (not ready, or the main loop stalled).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

HEALTH_ROUTES = ("/readyz", "/healthz")


@dataclass
class FuzzReport:
    """What a run sent and got: status codes, and the first few server errors."""

    requests: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "server_errors": len(self.server_errors),
            "examples_of_server_errors": self.server_errors[:5],
        }


def fuzz_daemon(
    base_url: str, token: str, max_examples: int, derandomize: bool = True
) -> FuzzReport:
    """Run ``max_examples`` cases per operation and mode against ``base_url``
    (the same cases each run when ``derandomize``)."""
    spec = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    report = FuzzReport()
    auth = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        op = result.ok()
        modes = [GenerationMode.POSITIVE]
        if op.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=derandomize,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                r = case.call(base_url=base_url, headers=auth, timeout=30)
                report.requests += 1
                report.codes[r.status_code] += 1
                health = r.status_code == 503 and case.path in HEALTH_ROUTES
                if r.status_code >= 500 and not health:
                    report.server_errors.append(
                        {"method": case.method, "path": case.path, "status": r.status_code,
                         "body": repr(case.body)[:300], "answer": r.text[:300]}
                    )  # fmt: skip

            try:
                call()
            except Unsatisfiable:  # nothing to vary (no parameters): the positive run did it
                continue
    return report
