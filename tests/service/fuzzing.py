"""Schemathesis against a running daemon's own ``/openapi.json``, with the token: every
documented operation, positive and (for bodies) negative cases, bounded in count.

Used by the test suite (a few hundred requests) and by ``bench/api_fuzz.py``
(thousands); :func:`fuzz_daemon_stateful` walks linked sequences of calls. A 5xx is a
failure, except a 503 from ``/readyz`` or ``/healthz``, which is their contract (not
ready, or the main loop stalled).
"""

from __future__ import annotations

import json
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


# -- stateful: sequences of calls that follow OpenAPI links -----------------------------------

SAMPLES_OP = "samples_v1_samples_post"
FEEDBACK_OP = "feedback_v1_feedback_post"


def with_links(spec: dict[str, Any], x: list[Any]) -> dict[str, Any]:
    """The daemon's document with OpenAPI links added (it serves none: it has no path
    parameters, and only ``POST /v1/samples``' answer has a schema), so that schemathesis' stateful
    phase walks the daemon's real workflow: look at the status, push a sample of the
    served model's shape ``x``, label that very sample by the id the answer gave it
    (with its input), recalibrate, look at the status and the models, roll
    back, look again."""
    spec = json.loads(json.dumps(spec))
    paths = spec["paths"]

    def link(path: str, method: str, code: str, name: str, op: str, body: Any = None) -> None:
        definition: dict[str, Any] = {"operationId": op}
        if body is not None:
            definition["requestBody"] = body
        paths[path][method]["responses"][code].setdefault("links", {})[name] = definition

    push = {"samples": [{"sample_id": "stateful-1", "x": x}]}
    link("/v1/status", "get", "200", "PushSample", SAMPLES_OP, push)
    # with its input: a label for the id alone races the main loop taking the sample from
    # the queue (422 unknown_sample until it has)
    link("/v1/samples", "post", "200", "LabelIt", FEEDBACK_OP,
         {"items": [{"sample_id": "$response.body#/ids/0", "x": x, "y": 0}]})  # fmt: skip
    # the label as written, not merged into a generated body (whose rows would be
    # appended to x's and break its shape)
    paths["/v1/samples"]["post"]["responses"]["200"]["links"]["LabelIt"]["x-schemathesis"] = {
        "merge_body": False
    }
    link("/v1/feedback", "post", "200", "Recalibrate", "recalibrate_v1_recalibrate_post", {})
    link("/v1/recalibrate", "post", "202", "Status", "status_v1_status_get")
    link("/v1/recalibrate", "post", "202", "Models", "models_v1_models_get")
    link("/v1/models", "get", "200", "RollBack", "rollback_v1_rollback_post")
    link("/v1/rollback", "post", "200", "ModelsAfter", "models_v1_models_get")
    link("/v1/rollback", "post", "409", "StatusAfter", "status_v1_status_get")
    return spec


@dataclass
class StatefulReport(FuzzReport):
    """A stateful run: also the calls by operation and answer, and the scenarios."""

    by_operation: Counter[str] = field(default_factory=Counter)
    scenarios: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "scenarios": self.scenarios,
                "by_operation": dict(sorted(self.by_operation.items()))}  # fmt: skip


def fuzz_daemon_stateful(
    base_url: str,
    token: str,
    x: list[Any],
    max_examples: int,
    steps: int = 10,
    positive_only: bool = False,
) -> StatefulReport:
    """``max_examples`` scenarios of up to ``steps`` linked calls against ``base_url``
    (derandomized); every answer recorded, every 5xx but a health route's 503 kept.
    Each call's case is valid or (unless ``positive_only``) invalid, by a coin."""
    spec = with_links(httpx.get(f"{base_url}/openapi.json", timeout=10).json(), x)
    schema = schemathesis.openapi.from_dict(spec)
    if positive_only:
        schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    report = StatefulReport()
    auth = {"Authorization": f"Bearer {token}"}

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            report.scenarios += 1

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": auth, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kw: Any) -> None:
            report.requests += 1
            report.codes[response.status_code] += 1
            report.by_operation[f"{case.method} {case.path} {response.status_code}"] += 1
            health = response.status_code == 503 and case.path in HEALTH_ROUTES
            if response.status_code >= 500 and not health:
                report.server_errors.append(
                    {"method": case.method, "path": case.path, "status": response.status_code,
                     "body": repr(case.body)[:300], "answer": response.text[:300]}
                )  # fmt: skip

    Machine.run(
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    return report
