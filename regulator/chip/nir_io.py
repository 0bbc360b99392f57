"""Export a chip network to the Neuromorphic Intermediate Representation (NIR) and back.

The graph is ``input → Affine → CubaLIF (→ Affine → CubaLIF ...) → Affine → CubaLI →
output``; a recurrent hidden layer becomes a NIR sub-graph ``input → CubaLIF ⇄ Linear
→ output`` holding its recurrent weights. Weights are what the chip applies (the
profile's quantisation, stuck devices, mismatch and drift, per-neuron thresholds), so
the file describes the deployed chip; per-read noise, lost events and state precision
are not expressible in NIR and are recorded in the graph's metadata only.

Mapping of Norse's Euler step (``i += x; v += dt/τ_mem·(v_leak − v + i); i −= dt/τ_syn·i``)
onto NIR's continuous CubaLIF (``τ_syn İ = −I + w_in·x``, ``τ_mem v̇ = v_leak − v + r·I``):
``tau_syn = 1/tau_syn_inv`` and ``tau_mem = 1/tau_mem_inv`` in seconds, ``r = 1``,
``v_leak = 0``, ``v_reset = 0`` and ``w_in = tau_syn/dt``. Norse adds an input to the
synaptic current in full, while a forward-Euler step of NIR's ODE with the input held
for one step adds ``dt/τ_syn·w_in·x``; with ``w_in = τ_syn/dt`` the two give the same
membrane trajectory exactly (Norse's own ``from_nir`` integrates it that way). The
time step is stored in the graph metadata (``dt_s``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import nir
import numpy as np
import torch
from torch import nn

from regulator.chip.network import ChipInstance, NetworkConfig, SpikingNetwork
from regulator.errors import ConfigError, ModelFolderError

logger = logging.getLogger(__name__)

FORMAT = "regulator-chip-nir/1"


def _np(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy(), dtype=np.float32)


def _linears(model: SpikingNetwork) -> list[nn.Linear]:
    return [cast(nn.Linear, m) for m in model.layers]


def _full(n: int, value: float) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def _cuba_lif(cfg: NetworkConfig, thresholds: np.ndarray) -> nir.CubaLIF:
    n = thresholds.shape[0]
    tau_syn = 1.0 / cfg.tau_syn_inv
    return nir.CubaLIF(
        tau_syn=_full(n, tau_syn),
        tau_mem=_full(n, 1.0 / cfg.tau_mem_inv),
        r=_full(n, 1.0),
        v_leak=_full(n, 0.0),
        v_threshold=thresholds.astype(np.float32),
        v_reset=_full(n, 0.0),
        w_in=_full(n, tau_syn / cfg.dt_s),
    )


def to_nir(model: SpikingNetwork, chip: ChipInstance | None = None) -> nir.NIRGraph:
    """The NIR graph of ``model`` as ``chip`` would run it (``None``: float weights).

    >>> net = SpikingNetwork(NetworkConfig(n_inputs=3, hidden=(4,), n_outputs=2))
    >>> sorted(to_nir(net).nodes)
    ['input', 'layers.0', 'lif.0', 'output', 'readout', 'readout_li']
    """
    cfg = model.cfg
    if chip is not None and chip.profile.noise_weight_sigma > 0:
        # Per-read noise is a draw per forward, not a property of the programmed chip.
        quiet = chip.profile.model_copy(update={"noise_weight_sigma": 0.0})
        chip = ChipInstance(
            quiet,
            chip.seed,
            chip.weight_gain,
            chip.stuck_zero,
            chip.stuck_max,
            chip.drift_nu,
            chip.threshold_scale,
            chip.generator,
            chip.age_s,
        )
    weights = model.effective_weights(chip)
    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type={"input": np.array([cfg.n_inputs])}),
    }
    edges: list[tuple[str, str]] = []
    prev = "input"
    for li, lin in enumerate(_linears(model)):
        scale = chip.threshold_scale[li] if chip is not None else torch.ones(cfg.hidden[li])
        th = _np(cfg.v_th * scale)
        nodes[f"layers.{li}"] = nir.Affine(
            weight=_np(weights[f"layers.{li}.weight"]), bias=_np(lin.bias)
        )
        lif = _cuba_lif(cfg, th)
        if cfg.recurrent:
            n = cfg.hidden[li]
            sub = nir.NIRGraph(
                nodes={
                    "input": nir.Input(input_type={"input": np.array([n])}),
                    "lif": lif,
                    "w_rec": nir.Linear(weight=_np(weights[f"recurrent.{li}"])),
                    "output": nir.Output(output_type={"output": np.array([n])}),
                },
                edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            )
            nodes[f"lif.{li}"] = sub
        else:
            nodes[f"lif.{li}"] = lif
        edges += [(prev, f"layers.{li}"), (f"layers.{li}", f"lif.{li}")]
        prev = f"lif.{li}"
    n_out = cfg.n_outputs
    tau_syn = 1.0 / cfg.tau_syn_inv
    nodes["readout"] = nir.Affine(
        weight=_np(weights["readout.weight"]), bias=_np(model.readout.bias)
    )
    nodes["readout_li"] = nir.CubaLI(
        tau_syn=_full(n_out, tau_syn),
        tau_mem=_full(n_out, 1.0 / cfg.tau_mem_inv),
        r=_full(n_out, 1.0),
        v_leak=_full(n_out, 0.0),
        w_in=_full(n_out, tau_syn / cfg.dt_s),
    )
    nodes["output"] = nir.Output(output_type={"output": np.array([n_out])})
    edges += [(prev, "readout"), ("readout", "readout_li"), ("readout_li", "output")]
    if "readout_skip.weight" in weights:
        # The input lines' synapses onto the readout (rehearsal readout): NIR sums the
        # currents of every edge into a node, as the chip sums them into the readout.
        nodes["readout_skip"] = nir.Linear(weight=_np(weights["readout_skip.weight"]))
        edges += [("input", "readout_skip"), ("readout_skip", "readout_li")]
    profile = chip.profile if chip is not None else None
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "dt_s": float(cfg.dt_s),
        "network_config": cfg.model_dump_json(),
        "profile": profile.model_dump_json() if profile is not None else "",
        "chip_seed": int(chip.seed) if chip is not None else -1,
        "chip_age_s": float(chip.age_s) if chip is not None else 0.0,
        "readout": "mean membrane of readout_li over the time steps",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def export_nir(model: SpikingNetwork, path: str | Path, chip: ChipInstance | None = None) -> Path:
    """Write ``model`` (as ``chip`` applies it) to a NIR file at ``path``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(out), to_nir(model, chip))
    return out


def _meta_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return _meta_str(value.item())
    return str(value)


def _lif_of(node: nir.NIRNode) -> tuple[nir.CubaLIF, np.ndarray | None]:
    if isinstance(node, nir.CubaLIF):
        return node, None
    if isinstance(node, nir.NIRGraph):
        lif = [n for n in node.nodes.values() if isinstance(n, nir.CubaLIF)]
        rec = [n for n in node.nodes.values() if isinstance(n, nir.Linear)]
        if len(lif) == 1 and len(rec) == 1:
            return lif[0], np.asarray(rec[0].weight)
    raise ModelFolderError(f"NIR node {type(node).__name__} is not a CubaLIF layer")


def from_nir(graph: nir.NIRGraph) -> SpikingNetwork:
    """Rebuild the network (config and chip-applied weights) from a graph of :func:`to_nir`.

    The rebuilt network runs without a chip (float state, no noise); its weights are the
    exported ones. Per-neuron thresholds must be uniform, as :class:`NetworkConfig` has one
    ``v_th``; a chip with threshold mismatch cannot be loaded back into a plain network.
    """
    meta = graph.metadata or {}
    if "network_config" not in meta:
        raise ModelFolderError("NIR graph has no regulator network_config metadata")
    cfg = NetworkConfig.model_validate_json(_meta_str(meta["network_config"]))
    net = SpikingNetwork(cfg)
    with torch.no_grad():
        for li, lin in enumerate(_linears(net)):
            aff = graph.nodes[f"layers.{li}"]
            lin.weight.copy_(torch.as_tensor(np.asarray(aff.weight)))
            lin.bias.copy_(torch.as_tensor(np.asarray(aff.bias)))
            lif, rec = _lif_of(graph.nodes[f"lif.{li}"])
            th = np.asarray(lif.v_threshold)
            if not np.allclose(th, th.flat[0], rtol=0, atol=0):
                raise ConfigError(
                    f"layer {li} has per-neuron thresholds (chip mismatch); a plain "
                    "SpikingNetwork has one v_th"
                )
            if rec is not None:
                net.recurrent[li].copy_(torch.as_tensor(rec))
        net.readout.weight.copy_(torch.as_tensor(np.asarray(graph.nodes["readout"].weight)))
        net.readout.bias.copy_(torch.as_tensor(np.asarray(graph.nodes["readout"].bias)))
        if net.readout_skip is not None:
            if "readout_skip" not in graph.nodes:
                raise ModelFolderError("NIR graph lacks the readout_skip node its config names")
            skip = np.asarray(graph.nodes["readout_skip"].weight)
            net.readout_skip.weight.copy_(torch.as_tensor(skip))
    return net


def load_nir(path: str | Path) -> SpikingNetwork:
    """Read a NIR file written by :func:`export_nir` into a :class:`SpikingNetwork`."""
    p = Path(path)
    if not p.is_file():
        raise ModelFolderError(f"NIR file not found: {p}")
    return from_nir(nir.read(str(p)))


def graph_profile(graph: nir.NIRGraph) -> dict[str, Any] | None:
    """The chip profile recorded in a graph's metadata, or ``None`` for a float export."""
    text = _meta_str((graph.metadata or {}).get("profile", ""))
    return json.loads(text) if text else None


SNNTORCH_DT_S = 1e-4  # snnTorch 1.0's NIR importer hard-codes this time step


def snntorch_compatible(graph: nir.NIRGraph) -> nir.NIRGraph:
    """The same dynamics re-expressed in snnTorch 1.0's NIR import conventions.

    snnTorch's importer fixes ``dt = 1e-4`` s, asserts ``r = tau_mem/dt`` (its membrane
    adds the synaptic current unscaled) and maps no ``CubaLI``. So: time constants are
    rescaled by ``1e-4/dt_s`` (same per-step decays), ``r = tau_mem/1e-4``, thresholds
    are multiplied by ``tau_mem/dt_s`` (snnTorch's membrane is ours divided by
    ``dt/tau_mem``), and the readout ``CubaLI`` becomes a ``CubaLIF`` that never fires
    (threshold 1e30), whose membrane times ``dt/tau_mem`` is our readout membrane.
    """
    dt = float(_meta_str((graph.metadata or {}).get("dt_s", "nan")))
    if not np.isfinite(dt):
        raise ModelFolderError("NIR graph has no dt_s metadata")
    nodes: dict[str, nir.NIRNode] = {}
    for key, node in graph.nodes.items():
        if isinstance(node, nir.CubaLIF | nir.CubaLI):
            tau_mem0 = np.asarray(node.tau_mem, dtype=np.float32)
            tau_syn = np.asarray(node.tau_syn, dtype=np.float32) * (SNNTORCH_DT_S / dt)
            tau_mem = tau_mem0 * (SNNTORCH_DT_S / dt)
            if isinstance(node, nir.CubaLIF):
                th = np.asarray(node.v_threshold, dtype=np.float32) * (tau_mem0 / dt)
            else:
                th = np.full_like(tau_mem, 1e30)
            nodes[key] = nir.CubaLIF(
                tau_syn=tau_syn,
                tau_mem=tau_mem,
                r=tau_mem / SNNTORCH_DT_S,
                v_leak=np.asarray(node.v_leak, dtype=np.float32),
                v_threshold=th,
                v_reset=np.zeros_like(th),
                w_in=tau_syn / SNNTORCH_DT_S,
            )
        elif isinstance(node, nir.NIRGraph):
            nodes[key] = snntorch_compatible(
                nir.NIRGraph(nodes=node.nodes, edges=node.edges, metadata=graph.metadata)
            )
        else:
            nodes[key] = node
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=dict(graph.metadata))


def export_model_folder(model_dir: str | Path, out_path: str | Path, seed: int = 0) -> Path:
    """``regulator export-nir``: a model folder's network as its chip (seeded) applies it."""
    from regulator.meta.model import ModelBundle

    bundle = ModelBundle.load(model_dir)
    chip = ChipInstance.create(bundle.profile, bundle.cfg, seed)
    return export_nir(bundle.network, out_path, chip)
