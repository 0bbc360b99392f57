"""The model card: what a model folder holds, how it was made, and how well it adapts.

Markdown rendered from the bundle (training configuration, seeds, data with its
citation) and the evaluation results of :mod:`regulator.meta.evaluate`.
"""

from __future__ import annotations

import json
from typing import Any

from regulator.meta.model import ModelBundle
from regulator.meta.peers import PEER_LABELS

GAS_DRIFT_CITATION = (
    "Gas Sensor Array Drift dataset (CC BY 4.0): A. Vergara, S. Vembu, T. Ayhan, M. Ryan, "
    "M. Homer, R. Huerta, *Chemical gas sensor drift compensation using classifier "
    "ensembles*, Sensors and Actuators B 166–167 (2012) 320–329, doi:10.1016/j.snb.2012.01.074; "
    "I. Rodriguez-Lujan, J. Fonollosa, A. Vergara, M. Homer, R. Huerta, *On the calibration "
    "of sensor arrays for pattern recognition using the minimal number of experiments*, "
    "Chemometrics and Intelligent Laboratory Systems 130 (2014) 123–134, "
    "doi:10.1016/j.chemolab.2013.10.012."
)

_ROW_NAMES = {
    "meta": "meta prior, adapted",
    "plasticity": "meta prior, three-factor plasticity rule",
    "joint_finetune": "joint training, then SGD fine-tune",
    "scratch": "from scratch (random body, SGD fine-tune)",
    "no_adaptation": "no adaptation",
    "meta_train_envs": "meta prior, adapted, training environments",
    "labelfree": "label-free re-normalisation",
    "fewshot": "few-shot (prior's inner loop)",
    "labelfree_fewshot": "label-free + few-shot",
    "dense_finetune": "dense MLP, fine-tuned",
    "dense_labelfree_finetune": "dense MLP, re-scaled + fine-tuned",
    **PEER_LABELS,
}


def row_label(name: str) -> str:
    """The human name of a table row."""
    return _ROW_NAMES.get(name, name)


def _ci(m: dict[str, float], scale: float = 100.0) -> str:
    """Mean and 95% interval; in percent (``scale`` 100) the interval is cut to [0, 100],
    as a t-interval over few draws can reach past what an accuracy can be."""
    lo, hi = scale * m["ci95_low"], scale * m["ci95_high"]
    if scale == 100.0:
        lo, hi = max(lo, 0.0), min(hi, 100.0)
    return f"{scale * m['mean']:.1f} [{lo:.1f}, {hi:.1f}]"


def kshot_markdown(result: dict[str, Any]) -> str:
    """The K-shot table of :func:`~regulator.meta.evaluate.evaluate` as markdown.

    >>> r = {"metric": "accuracy", "kind": "classification", "n_tasks": 2, "ks": [5],
    ...      "table": {"5": {"meta": {"metric": {"mean": .9, "ci95_low": .8,
    ...      "ci95_high": 1.0, "n": 2}}}}}
    >>> print(kshot_markdown(r).splitlines()[3])
    | meta prior, adapted | 90.0 [80.0, 100.0] | – | – | – | – | – |
    """
    cls = result.get("kind", "classification") == "classification"
    unit = "accuracy %" if cls else "mean abs. error"
    scale = 100.0 if cls else 1.0
    lines = [
        f"| method | {unit}, mean [95% CI] | labels | adapt time s | weight writes "
        "| learning energy µJ | in inferences |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in result["ks"]:
        rows = result["table"][str(k)]
        lines.append(f"| **{k}-shot** | | | | | | |")
        for name, row in rows.items():
            sec = f"{row['seconds']['mean']:.3f}" if "seconds" in row else "–"
            wr = f"{row['weight_writes']:.0f}" if "weight_writes" in row else "–"
            le = f"{row['learning_energy_j'] * 1e6:.2f}" if "learning_energy_j" in row else "–"
            li = row.get("learning_energy_inferences")
            lis = f"{li:.0f}" if isinstance(li, float) else "–"
            lab = str(row["labels"]) if "labels" in row else "–"
            lines.append(
                f"| {_ROW_NAMES.get(name, name)} | {_ci(row['metric'], scale)} | {lab} | {sec} "
                f"| {wr} | {le} | {lis} |"
            )
    return "\n".join(lines)


def gas_markdown(result: dict[str, Any]) -> str:
    """The per-batch table of :func:`~regulator.meta.gas_protocol.evaluate_gas_drift`."""
    batches = result["batches"]
    names = list(result["mean_over_batches"])
    head = "| method | " + " | ".join(f"batch {b}" for b in batches) + " | mean |"
    lines = [head, "|---|" + "---|" * (len(batches) + 1)]
    for n in names:
        cells = [_ci(result["table"][str(b)][n]["metric"]) for b in batches]
        lines.append(
            f"| {_ROW_NAMES.get(n, n)} | "
            + " | ".join(cells)
            + f" | {100 * result['mean_over_batches'][n]:.1f} |"
        )
    fs = [result["table"][str(b)].get("labelfree_fewshot", {}) for b in batches]
    if all("seconds" in r for r in fs):
        lines.append("")
        lines.append("| batch | " + " | ".join(str(b) for b in batches) + " |")
        lines.append("|---|" + "---|" * len(batches))
        lines.append(
            "| adaptation s (label-free + few-shot) | "
            + " | ".join(f"{r['seconds']['mean']:.3f}" for r in fs)
            + " |"
        )
        lines.append(
            "| weight writes | " + " | ".join(f"{r['weight_writes']:.0f}" for r in fs) + " |"
        )
        lines.append(
            "| learning energy, in inferences | "
            + " | ".join(f"{r['learning_energy_inferences']:.0f}" for r in fs)
            + " |"
        )
    return "\n".join(lines)


def render_card(
    bundle: ModelBundle,
    *,
    title: str,
    command: str,
    kshot: dict[str, Any] | None = None,
    gas: dict[str, Any] | None = None,
    notes: str = "",
) -> str:
    """The card (markdown) for ``bundle`` with its evaluation results."""
    tc = bundle.meta.get("train_config", {})
    fam = bundle.task.get("family")
    out = [f"# {title}", ""]
    out += [
        f"Task family `{fam}` ({bundle.kind}, {bundle.task.get('n_outputs')} outputs, "
        f"{bundle.task.get('n_channels')} channels), chip profile `{bundle.profile.name}`, "
        f"adaptation `{bundle.meta.get('algorithm')}` on the `{bundle.meta.get('scope')}` "
        f"({bundle.meta.get('inner_steps')} inner steps).",
        "",
        "Rebuild with one command (from the repository root):",
        "",
        f"    {command}",
        "",
        "## Training",
        "",
        f"Meta-iterations: {bundle.meta.get('iterations')}; seed: {tc.get('seed')}. Configuration:",
        "",
        "```json",
        json.dumps(tc, indent=1, sort_keys=True),
        "```",
        "",
        "## Data",
        "",
    ]
    if fam == "file":
        data = bundle.meta.get("data", {})
        out += [
            f"Trained on `{data.get('path', bundle.task.get('config', {}).get('path'))}` only "
            f"(sha256 `{data.get('sha256', '?')}`), seen through the file family's simulated "
            "drift (configuration above). " + GAS_DRIFT_CITATION,
            "",
        ]
    else:
        out += ["Synthetic: environments drawn from the task family above (seeded; no files).", ""]
    out += [
        "## Calibration",
        "",
        f"Spike density per hidden layer (spikes per neuron per step): "
        f"{[round(v, 4) for v in bundle.calibration.get('spike_density', [])]}; energy per "
        f"inference: {bundle.calibration.get('energy_per_inference_j', 0.0) * 1e9:.1f} nJ "
        f"({bundle.profile.energy} energy figures).",
        "",
    ]
    if kshot is not None:
        out += [
            "## Evaluation: K-shot on held-out environments",
            "",
            f"{kshot['n_tasks']} tasks per K, {kshot['n_query']} query samples each, seed "
            f"{kshot['seed']}; held-out environment seeds >= {kshot['heldout_seed_base']} "
            "(never drawn in training). Baselines adapt the same parameters as the prior "
            f"(scope `{kshot.get('baseline_scope', 'readout')}`) with plain SGD, "
            f"{kshot['baseline_steps']} steps, rate chosen on training environments "
            f"({kshot['baseline_sgd_lr']}), never on held-out ones; same shots, same chip "
            "instances. All rows measured in one run.",
            "",
            kshot_markdown(kshot),
            "",
        ]
    if gas is not None:
        out += [
            "## Evaluation: gas drift, batches " + ", ".join(str(b) for b in gas["batches"]),
            "",
            f"Trained on batch 1 only. {gas['k_per_class']} labelled samples per gas present "
            f"in each batch, {gas['draws']} random draws, accuracy % on the rest of that batch "
            f"(mean [95% CI]); label-free rows see the whole batch without labels. Profile "
            f"`{gas['profile']}`, seed {gas['seed']}; all rows measured in one run.",
            "",
            gas_markdown(gas),
            "",
        ]
    if notes:
        out += ["## Notes", "", notes, ""]
    return "\n".join(out)
