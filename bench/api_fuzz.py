"""Schemathesis against a real daemon's own ``/openapi.json``, at bench scale.

Run: ``python bench/api_fuzz.py [--examples 300]`` (writes bench/results/api_fuzz.json
and api_fuzz.md). One ``regulator run`` (``source: http``, the shipped nanosensor prior);
every documented operation, positive cases, and negative ones for the POST bodies,
``--examples`` of each, all with the token; then the same without it. Loopback only.
The suite runs the same with 25 examples (tests/service/test_hardening_process.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.service.conftest import TOKEN, DaemonProcess, policy_dict, write_policy  # noqa: E402
from tests.service.fuzzing import fuzz_daemon  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="api-fuzz-"))
    policy = policy_dict(a.prior, source={"kind": "http", "queue_size": 4096})
    d = DaemonProcess(write_policy(root / "p.yaml", policy), root / "state", root / "d.log")
    t0 = time.monotonic()
    try:
        d.start().wait_ready(180)
        with_token = fuzz_daemon(d.url, TOKEN, a.examples, derandomize=False)
        without = fuzz_daemon(d.url, "not-the-token", a.examples // 3, derandomize=False)
        counted = d.metric("regulator_http_server_errors_total")
        ready = d.client.get("/readyz").status_code == 200
    finally:
        d.close()
    result = {
        "command": f"python bench/api_fuzz.py --examples {a.examples}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other work",
        "seconds": time.monotonic() - t0,
        "with_token": with_token.as_dict(),
        "wrong_token": without.as_dict(),
        "server_errors_counted_by_the_daemon": counted,
        "ready_at_the_end": ready,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "api_fuzz.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Schemathesis against the daemon's OpenAPI document",
        "",
        f"Command: `{result['command']}`; {result['machine']}; {result['seconds']:.0f} s.",
        "",
        "| run | requests | server errors | status codes |",
        "|---|---|---|---|",
    ]
    for name, r in (("with the token", result["with_token"]),
                    ("wrong token", result["wrong_token"])):  # fmt: skip
        lines.append(f"| {name} | {r['requests']} | {r['server_errors']} | {r['codes']} |")
    lines += [
        "",
        f"5xx counted by the daemon (`regulator_http_server_errors_total`): {counted:.0f}; "
        f"ready at the end: {ready}.",
        "",
    ]
    (OUT / "api_fuzz.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if not with_token.server_errors and not without.server_errors else 1


if __name__ == "__main__":
    sys.exit(main())
