"""Generated policy files through ``regulator check-config``: no traceback, no hang.

Run: ``python bench/policy_fuzz.py [--valid 1000] [--hostile 1500]`` (writes
bench/results/policy_fuzz.json and policy_fuzz.md).

- valid files (hypothesis, within every bound of the policy model): each must exit 0
  and load back equal to the model it was drawn from;
- hostile files: a valid file with one leaf replaced by infinity, NaN, 2^63..2^200,
  negatives, 1e300, booleans, None, strings with control characters, lists, mappings,
  ten-deep lists; each must exit 0 or 2, never raise;
- special files, each through a real ``regulator check-config`` process with a 60 s
  limit (a hang is a failure): a FIFO, /dev/zero, /dev/null, a directory, a 2 MB file,
  YAML nested 10,000 deep, an alias bomb.

Tests check the same properties with fewer files (tests/policy/test_properties.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from regulator.policy.check import check_config  # noqa: E402
from regulator.policy.model import Policy, load_policy  # noqa: E402
from tests.policy.strategies import hostile_policies, valid_policies  # noqa: E402

OUT = Path(__file__).parent / "results"


def _check(folder: Path, data: Any, i: int) -> tuple[int | str, str]:
    path = folder / f"p{i}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    err = io.StringIO()
    try:
        return check_config(path, out=io.StringIO(), err=err), err.getvalue()
    except Exception:
        return "traceback", traceback.format_exc()


def run_generated(n_valid: int, n_hostile: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="policy-fuzz-"))
    valid: Counter[str] = Counter()
    hostile: Counter[str] = Counter()
    failures: list[str] = []
    k = [0]
    hc = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

    @settings(max_examples=n_valid, deadline=None, database=None, suppress_health_check=hc)
    @given(data=valid_policies())
    def one_valid(data: dict[str, Any]) -> None:
        k[0] += 1
        code, err = _check(folder, data, k[0])
        valid[str(code)] += 1
        if code != 0:
            failures.append(f"valid file exit {code}: {err[:300]}")
        elif load_policy(folder / f"p{k[0]}.yaml") != Policy.model_validate(data):
            failures.append("valid file did not round-trip")

    @settings(max_examples=n_hostile, deadline=None, database=None, suppress_health_check=hc)
    @given(case=hostile_policies())
    def one_hostile(case: tuple[dict[str, Any], str]) -> None:
        k[0] += 1
        data, dotted = case
        code, err = _check(folder, data, k[0])
        hostile[str(code)] += 1
        if code not in (0, 2):
            failures.append(f"hostile file ({dotted}) exit {code}: {err[-500:]}")
        elif code == 2 and dotted.split(".", 1)[0] not in err:
            failures.append(f"hostile file ({dotted}): message does not name it: {err[:200]}")

    one_valid()
    one_hostile()
    return {"valid": dict(valid), "hostile": dict(hostile), "failures": failures[:20],
            "n_failures": len(failures)}  # fmt: skip


def run_special(timeout_s: float = 60.0) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="policy-special-"))
    fifo = folder / "fifo.yaml"
    os.mkfifo(fifo)
    (folder / "big.yaml").write_text("# pad\n" * 400_000)
    (folder / "deep.yaml").write_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
    )
    (folder / "bomb.yaml").write_text(bomb)
    cases = [fifo, Path("/dev/zero"), Path("/dev/null"), folder, folder / "big.yaml",
             folder / "deep.yaml", folder / "bomb.yaml"]  # fmt: skip
    out = []
    for path in cases:
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "regulator.cli", "check-config", str(path)],
                capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
            )  # fmt: skip
            code: int | str = proc.returncode
            msg = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            traceback_seen = "Traceback" in proc.stderr
        except subprocess.TimeoutExpired:
            code, msg, traceback_seen = "hang", [], False
        out.append({"file": path.name if path.parent == folder else str(path), "exit": code,
                    "seconds": round(time.monotonic() - t0, 2), "traceback": traceback_seen,
                    "message": msg[0][:160] if msg else ""})  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--valid", type=int, default=1000)
    ap.add_argument("--hostile", type=int, default=1500)
    a = ap.parse_args()
    t0 = time.monotonic()
    gen = run_generated(a.valid, a.hostile)
    special = run_special()
    result = {
        "command": f"python bench/policy_fuzz.py --valid {a.valid} --hostile {a.hostile}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}",
        "generated": gen,
        "special": special,
        "seconds": round(time.monotonic() - t0, 1),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "policy_fuzz.json").write_text(json.dumps(result, indent=1) + "\n")
    n_files = sum(gen["valid"].values()) + sum(gen["hostile"].values())
    lines = [
        "# Generated policy files through check-config",
        "",
        f"Command: `{result['command']}` ({result['seconds']} s; {result['machine']}).",
        "",
        "| files | exit 0 | exit 2 | tracebacks or other exits |",
        "|---|---|---|---|",
        f"| valid ({sum(gen['valid'].values())}) | {gen['valid'].get('0', 0)} | "
        f"{gen['valid'].get('2', 0)} | "
        f"{sum(v for k, v in gen['valid'].items() if k not in ('0', '2'))} |",
        f"| hostile ({sum(gen['hostile'].values())}) | {gen['hostile'].get('0', 0)} | "
        f"{gen['hostile'].get('2', 0)} | "
        f"{sum(v for k, v in gen['hostile'].items() if k not in ('0', '2'))} |",
        "",
        f"{n_files} generated files; property failures: {gen['n_failures']} "
        "(valid: exit 0 and round-trip; hostile: exit 0 or 2, and 2 names the section).",
        "",
        "| special file | exit | seconds | traceback | message |",
        "|---|---|---|---|---|",
        *(
            f"| {s['file']} | {s['exit']} | {s['seconds']} | {s['traceback']} | {s['message']} |"
            for s in special
        ),
        "",
    ]
    (OUT / "policy_fuzz.md").write_text("\n".join(lines))
    print("\n".join(lines))
    bad = gen["n_failures"] or any(s["exit"] != 2 or s["traceback"] for s in special)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
