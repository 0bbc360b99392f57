"""The fault matrix against real ``regulator run`` processes, with its report.

Run (as root, for the size-limited tmpfs): ``python bench/fault_matrix.py [--kills 30]
[--prior models/nanosensor]`` (writes bench/results/fault_matrix.json and .md).

- kill -9 at random moments (0.5-5 s after ready; half the cycles ask for a
  recalibration first, a fifth send SIGHUP) while a client streams labelled samples and
  the simulated environment shifts every 10 s so drift rules recalibrate: versions
  corrupted, acknowledged labels lost, orphaned candidate folders, seconds to ready;
- damaged state at start (weights flipped, zeroed, truncated; manifest deleted or
  truncated; lineage garbled; served folder deleted; pointer garbled or dangling; an
  older version damaged; every version damaged; event log and label file truncated
  mid-line; garbage label lines): which version serves, and what it says;
- a full disk (tmpfs of 8 MB, filled by another file while labels stream and a
  recalibration is asked for): served on, refused, recovered, lost;
- the http source flooded (20,000 samples) then stalled for 35 s.

Not covered: the clock jumping (the runtime's timers run on the monotonic clock; the
wall clock only stamps events, and changing it here would disturb the machine's other
users).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.service.faults import (  # noqa: E402
    damaged_starts,
    flood_and_stall,
    full_disk_run,
    kill_cycles,
)

OUT = Path(__file__).parent / "results"


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    return proc.returncode == 0


def _md(result: dict[str, Any]) -> str:
    k = result["kills"]
    lines = [
        "# Fault matrix",
        "",
        f"Command: `{result['command']}`; {result['machine']}; {result['seconds']:.0f} s.",
        "The machine was shared with other work: seconds to ready are not a speed figure.",
        "",
        "## kill -9 at random moments",
        "",
        "| kills | during a recalibration | serving | after SIGHUP | labels acknowledged "
        "| labels lost | versions (at end) | versions corrupted | orphaned folders left by "
        "kills / after restart | restart to ready, mean / max (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {k['kills']} | {k['phases'].get('during a recalibration', 0)} | "
        f"{k['phases'].get('serving', 0)} | {k['phases'].get('after SIGHUP', 0)} | "
        f"{k['labels_acknowledged']} | {k['labels_lost']} | {k['versions']} | "
        f"{k['versions_corrupted']} | {k['orphan_folders_left_by_kills']} / "
        f"{k['orphan_folders_after_restart']} | {k['ready_s']['mean']:.1f} / "
        f"{k['ready_s']['max']:.1f} |",
        "",
        "## Damaged state at start",
        "",
        "| case | started | serves | expected | degraded in /v1/status | problems | labels "
        "kept | ready (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["damaged"]:
        if r.get("started"):
            lines.append(
                f"| {r['case']} | yes | {r['serves']} | {r['expected']} | {r['degraded']} | "
                f"{r['problems']} | {r['labels']} | {r['ready_s']} |"
            )
        else:
            lines.append(f"| {r['case']} | **no** | | | | | | {r.get('error', '')[:80]} |")
    fd = result.get("full_disk")
    lines += ["", "## Full disk (tmpfs 8 MB, reserve 512 KB)", ""]
    if fd is None:
        lines.append("Not run: a size-limited tmpfs could not be mounted here.")
    else:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {key.replace('_', ' ')} | {val} |" for key, val in fd.items()]
    fs = result["flood_and_stall"]
    lines += ["", "## Source flooded, then stalled", "", "| figure | value |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | {val} |" for key, val in fs.items()]
    lines += ["", "Not covered: the clock jumping (see the script's docstring).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--prior", type=Path, default=REPO / "models" / "nanosensor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--parts",
        default="kills,damaged,disk,flood",
        help="comma-separated parts to (re)run; the others are kept from the last results",
    )
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    root = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    t0 = time.monotonic()
    say = lambda s: print(s, flush=True)  # noqa: E731
    old = OUT / "fault_matrix.json"
    result: dict[str, Any] = (
        json.loads(old.read_text()) if parts != {"kills", "damaged", "disk", "flood"} else {}
    )
    result.update(
        {
            "command": f"python bench/fault_matrix.py --kills {a.kills} --seed {a.seed}",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "prior": str(a.prior.relative_to(REPO) if a.prior.is_relative_to(REPO) else a.prior),
        }
    )
    if "kills" in parts:
        result["kills"] = kill_cycles(a.prior, root / "kills", a.kills, a.seed, say)
    if "damaged" in parts:
        result["damaged"] = damaged_starts(a.prior, root / "damaged", say)
    disk = root / "disk" / "mnt"
    if "disk" not in parts:
        pass
    elif os.geteuid() == 0 and _tmpfs(disk, "8m"):
        try:
            result["full_disk"] = full_disk_run(a.prior, disk, say)
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    else:
        result["full_disk"] = None
    if "flood" in parts:
        (root / "flood").mkdir()
        result["flood_and_stall"] = flood_and_stall(a.prior, root / "flood")
    result["seconds"] = result.get("seconds", 0) + time.monotonic() - t0
    OUT.mkdir(exist_ok=True)
    (OUT / "fault_matrix.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = _md(result)
    (OUT / "fault_matrix.md").write_text(text)
    print(text)
    k = result["kills"]
    ok = (
        k["labels_lost"] == 0
        and k["versions_corrupted"] == 0
        and k["orphan_folders_after_restart"] == 0
        and all(r.get("started") and r["serves"] == r["expected"] for r in result["damaged"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
