"""Chip simulation speed against plain Norse, and energy per inference per profile.

Run: ``python bench/chip.py [--threads N] [--repeats R]`` (writes bench/results/chip.json
and chip.md). Same network (16 inputs, 128 hidden LIF, 6 LI outputs, 64 steps), same
input, CPU, batch 1 (streaming) and batch 64, inference under ``torch.no_grad``.

Each repetition times plain Norse and every profile at one batch size in short
interleaved rounds, so that load from other processes on a shared machine falls on all
of them alike; a ratio is a profile's samples/s over Norse's in the same repetition.
The report gives the median and the range over repetitions, and the load average.
Before timing, it checks that ``ideal`` spikes are Norse's, step by step, and that
every profile's fast inference path gives the spikes of the step-by-step reference.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)

import norse  # noqa: E402
from norse.torch import LICell, LIFCell, LIFParameters, LIParameters  # noqa: E402

from regulator.chip.energy import (  # noqa: E402
    E_DENSE_MAC_J,
    E_MAC_SOURCE,
    E_WEIGHT_READ_SOURCE,
    EnergyModel,
)
from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork  # noqa: E402

CFG = NetworkConfig(n_inputs=16, hidden=(128,), n_outputs=6, n_steps=64)
PROFILES = ("ideal", "loihi", "memristive")
BATCHES = (1, 64)
GOALS = {("ideal", 1): 3.0, ("ideal", 64): 1.5}  # others: 1.0
ROUNDS = 5  # interleaved timing rounds per repetition
ROUND_S = 0.2  # seconds per variant per round
OUT = Path(__file__).parent / "results"


class NorsePeer(torch.nn.Module):
    """Linear → LIFCell → Linear → LICell, stepped over time: plain Norse."""

    def __init__(self, net: SpikingNetwork) -> None:
        super().__init__()
        cfg = net.cfg
        self.fc1 = net.layers[0]
        self.n_hidden, self.n_outputs = cfg.hidden[0], cfg.n_outputs
        self.lif = LIFCell(
            LIFParameters(
                tau_syn_inv=torch.tensor(cfg.tau_syn_inv),
                tau_mem_inv=torch.tensor(cfg.tau_mem_inv),
                v_th=torch.tensor(cfg.v_th),
            ),
            dt=cfg.dt_s,
        )
        self.fc2 = net.readout
        self.li = LICell(
            LIParameters(
                tau_syn_inv=torch.tensor(cfg.tau_syn_inv),
                tau_mem_inv=torch.tensor(cfg.tau_mem_inv),
            ),
            dt=cfg.dt_s,
        )

    def forward(
        self, x: torch.Tensor, record: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Readout mean membrane, spike counts, and (``record``) the spikes ``[T, B, n]``."""
        s1 = s2 = None
        vsum = torch.zeros(x.shape[1], self.n_outputs)
        counts = torch.zeros(x.shape[1], self.n_hidden)
        zs = []
        for t in range(x.shape[0]):
            z, s1 = self.lif(self.fc1(x[t]), s1)
            v, s2 = self.li(self.fc2(z), s2)
            vsum = vsum + v
            counts = counts + z
            if record:
                zs.append(z)
        return vsum / x.shape[0], counts, torch.stack(zs) if record else None


def _interleaved_rates(fns: dict[str, Callable[[], object]], batch: int) -> dict[str, float]:
    """Samples/s of each function, timed in alternating rounds of ``ROUND_S`` seconds."""
    calls = dict.fromkeys(fns, 0)
    spent = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn()  # warm up
    for r in range(ROUNDS):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            fn = fns[name]
            n, t0 = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                el = time.perf_counter() - t0
                if el >= ROUND_S:
                    break
            calls[name] += n
            spent[name] += el
    return {name: calls[name] * batch / spent[name] for name in fns}


def _machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "norse": norse.__version__,
        "python": platform.python_version(),
    }


def _checks(net: SpikingNetwork, peer: NorsePeer, x: torch.Tensor) -> dict[str, Any]:
    """Spikes of ``ideal`` against Norse, and of each profile's inference path against
    the step-by-step reference (fresh chips of the same seed)."""
    out: dict[str, Any] = {}
    with torch.no_grad():
        ideal = net(x, ChipInstance.create("ideal", CFG))
        peer_out, _, peer_spikes = peer(x, record=True)
        assert ideal.last_spikes is not None and peer_spikes is not None
        out["ideal_spikes_equal_norse"] = bool(torch.equal(ideal.last_spikes, peer_spikes))
        out["readout_max_abs_diff_norse"] = float((ideal.outputs - peer_out).abs().max())
        for name in PROFILES:
            fast = net(x, ChipInstance.create(name, CFG, seed=0))
            ref = net.forward_stepwise(x, ChipInstance.create(name, CFG, seed=0), False)
            assert fast.last_spikes is not None and ref.last_spikes is not None
            out[f"{name}_spikes_equal_reference"] = bool(
                torch.equal(fast.last_spikes, ref.last_spikes) and fast.telemetry == ref.telemetry
            )
    return out


def main(threads: int = 1, repeats: int = 3) -> dict[str, Any]:
    """Run the benchmark with ``threads`` torch threads and ``repeats`` repetitions."""
    torch.set_num_threads(threads)
    net = SpikingNetwork(CFG, init_seed=0)
    peer = NorsePeer(net)
    g = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(CFG.n_steps, b, CFG.n_inputs, generator=g) * 1.5 for b in BATCHES}
    results: dict[str, Any] = {
        "machine": _machine(),
        "threads": torch.get_num_threads(),
        "network": CFG.model_dump(),
        "command": f"python bench/chip.py --threads {threads} --repeats {repeats}",
        "load_average_before": list(os.getloadavg()),
        "timing": f"{ROUNDS} interleaved rounds of {ROUND_S} s per variant per repetition",
        "checks": {},
        "repetitions": [],
        "throughput": [],
        "energy": [],
    }
    for batch, x in inputs.items():
        results["checks"][str(batch)] = _checks(net, peer, x)
        print(json.dumps({"batch": batch, **results["checks"][str(batch)]}), file=sys.stderr)
    t_start = time.perf_counter()
    chips = {name: ChipInstance.create(name, CFG, seed=0) for name in PROFILES}
    with torch.no_grad():
        for rep in range(repeats):
            for batch, x in inputs.items():
                fns: dict[str, Callable[[], object]] = {"norse": functools.partial(peer, x)}
                for name, chip in chips.items():
                    fns[name] = functools.partial(net, x, chip)
                rates = _interleaved_rates(fns, batch)
                row = {"repetition": rep, "batch": batch, "samples_per_s": rates}
                row["ratio"] = {p: rates[p] / rates["norse"] for p in PROFILES}
                results["repetitions"].append(row)
                print(json.dumps(row), file=sys.stderr)
    results["timing_wall_s"] = time.perf_counter() - t_start
    results["load_average_after"] = list(os.getloadavg())
    for batch in BATCHES:
        reps = [r for r in results["repetitions"] if r["batch"] == batch]
        summary: dict[str, Any] = {"batch": batch}
        for name in ("norse", *PROFILES):
            summary[f"{name}_samples_per_s"] = _stats([r["samples_per_s"][name] for r in reps])
        for name in PROFILES:
            ratio = _stats([r["ratio"][name] for r in reps])
            goal = GOALS.get((name, batch), 1.0)
            summary[f"{name}_ratio"] = {**ratio, "goal": goal, "met": ratio["median"] >= goal}
        results["throughput"].append(summary)
    x = inputs[64]
    for name in PROFILES:
        chip = ChipInstance.create(name, CFG, seed=0)
        with torch.no_grad():
            tel = net(x, chip).telemetry.per_sample()
        e = EnergyModel(chip.profile.energy).energy(tel)
        results["energy"].append(
            {
                "profile": name,
                "energy_figures": chip.profile.energy,
                "inference_j": e.inference_j,
                "dense_ann_j": e.dense_ann_j,
                "dense_macs": tel.dense_macs,
                "advantage": e.advantage,
                "synaptic_ops": tel.synaptic_ops,
                "hidden_spikes": sum(tel.spikes_per_layer),
            }
        )
    results["e_dense_mac_j"] = E_DENSE_MAC_J
    results["e_mac_source"] = E_MAC_SOURCE
    results["e_weight_read_source"] = E_WEIGHT_READ_SOURCE
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "chip.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (OUT / "chip.md").write_text(_markdown(results), encoding="utf-8")
    return results


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def _load(v: list[float]) -> str:
    return " / ".join(f"{a:.2f}" for a in v)


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    n_rep = len({row["repetition"] for row in r["repetitions"]})
    lines = [
        "# Chip simulation benchmark",
        "",
        f"Command: `{r['command']}`. Machine: {m['cpu']}, {m['cores']} cores (shared with "
        f"other work), {r['threads']} torch thread, Python {m['python']}, torch {m['torch']}, "
        f"Norse {m['norse']}. Load average (1 / 5 / 15 min) {_load(r['load_average_before'])} "
        f"before, {_load(r['load_average_after'])} after ({r['timing_wall_s']:.0f} s of "
        "timing).",
        "",
        "Network 16-128-6, 64 steps, random input currents, inference under "
        "`torch.no_grad`; plain Norse = Linear/LIFCell/Linear/LICell stepped over time. "
        f"{n_rep} repetitions, each timing Norse and every profile in {r['timing']}; a ratio "
        "is a profile's samples/s over Norse's in the same repetition. Cells: median "
        "[min - max] over the repetitions.",
        "",
        "| batch | Norse samples/s | ideal | loihi | memristive |",
        "|---|---|---|---|---|",
    ]
    for row in r["throughput"]:
        cells = []
        for p in PROFILES:
            q = row[f"{p}_ratio"]
            cells.append(
                f"{row[f'{p}_samples_per_s']['median']:.0f}/s, "
                f"**{q['median']:.2f}x** [{q['min']:.2f} - {q['max']:.2f}]"
            )
        lines.append(
            f"| {row['batch']} | {row['norse_samples_per_s']['median']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Goals (issue 11), judged on the median:", ""]
    for row in r["throughput"]:
        for p in PROFILES:
            q = row[f"{p}_ratio"]
            verdict = "met" if q["met"] else "NOT met"
            low = (
                ""
                if q["min"] >= q["goal"]
                else f"; the lowest repetition, {q['min']:.2f}x, is below"
            )
            lines.append(
                f"- {p} at batch {row['batch']}: >= {q['goal']:.1f}x, median {q['median']:.2f}x: "
                f"{verdict}{low}"
            )
    lines += ["", "Spikes, checked before timing on the benchmark's inputs:", ""]
    for batch, c in r["checks"].items():
        same = ", ".join(f"{p} {c[f'{p}_spikes_equal_reference']}" for p in PROFILES)
        lines.append(
            f"- batch {batch}: ideal spike trains identical to Norse's: "
            f"{c['ideal_spikes_equal_norse']} (readout max |diff| "
            f"{c['readout_max_abs_diff_norse']:.1e}); inference path identical to the "
            f"step-by-step reference (spikes and telemetry, same seed): {same}"
        )
    lines += [
        "",
        "## Energy per inference (batch 64, per sample)",
        "",
        "| profile | figures | chip inference | dense ANN, like for like | dense MACs | "
        "ANN / chip |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["energy"]:
        lines.append(
            f"| {e['profile']} | {e['energy_figures']} | {e['inference_j'] * 1e9:.1f} nJ | "
            f"{e['dense_ann_j'] * 1e9:.1f} nJ | {e['dense_macs']:.0f} | {e['advantage']:.3f} |"
        )
    lines += [
        "",
        "The dense ANN is the like-for-like one of `regulator/chip/energy.py` and "
        "docs/energy.md: an MLP of the chip network's widths that sees every distinct "
        "input point the chip was given (this benchmark's input changes at every one of "
        "the 64 steps, so layer 0 runs 64 times and the readout once) at "
        f"{r['e_dense_mac_j'] * 1e12:.1f} pJ per MAC, weight read included "
        f"({r['e_mac_source']}; {r['e_weight_read_source']}). Above 1 the chip spends "
        "less than the dense network.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    args = ap.parse_args()
    main(args.threads, args.repeats)
