"""Named training recipes for the shipped priors, each rebuilt by one command.

``regulator train --recipe NAME --out DIR`` calls :func:`run_recipe`, which meta-trains
the prior, trains the joint-training peer with the same budget, evaluates both (and,
for ``nanosensor``, a three-factor plasticity prior started from the same body), writes
the model folder with its card, and the results under ``bench/results/``.

- ``nanosensor``: the daemon's embedded default (``models/nanosensor``). Scope
  ``input``: the inner loop adapts a gain and an offset per sensor channel (folded
  into the first layer on the chip) and the readout, with Meta-SGD rates; the body is
  first trained jointly for ``pretrain_steps`` (the joint peer gets the same total
  budget), meta-trained with 8 inner steps, deployed with 16.
- ``gas-drift``: family ``file`` on ``data/gas-drift/batch1.dat`` (batch 1 only; the
  path is relative to the repository root). The file family's drift magnitudes are set
  a priori, not fitted: fitting needs two or more sessions and only batch 1 may be used
  (batch 1's rows are ordered by gas, not time, so it cannot be split into sessions).
  Group size 8 = the 8 features of one physical sensor.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from regulator import atomic
from regulator.errors import ConfigError, UnknownNameError
from regulator.meta.card import gas_markdown, kshot_markdown, render_card
from regulator.meta.evaluate import evaluate, family_for, train_joint
from regulator.meta.gas_protocol import evaluate_gas_drift
from regulator.meta.model import ModelBundle
from regulator.meta.peers import PEER_NAMES
from regulator.meta.train import TrainConfig, build_trainer, finalise, train_prior, train_steps
from regulator.modelfolder import sha256_file

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
GAS_DATA = "data/gas-drift/batch1.dat"
GAS_DIR = REPO / "data" / "gas-drift"

RECIPES: dict[str, TrainConfig] = {
    "nanosensor": TrainConfig(
        family="nanosensor",
        profile="loihi",
        algorithm="prototype",
        scope="readout",
        hidden=(32,),
        n_steps=4,
        dt_s=0.005,
        tau_syn_inv=50.0,
        encoder="binned",
        encoder_config={"n_bins": 4, "hold_steps": 1},
        normalisation="feature",
        episode_normalisation=True,
        iterations=600,
        meta_batch=8,
        k_shot=5,
        k_shots=(1, 5, 10),
        n_query=30,
        outer_lr=3e-3,
        seed=0,
    ),
    "gas-drift": TrainConfig(
        family="file",
        family_config={
            "path": GAS_DATA,
            "format": "gas-drift",
            "gain_step": 0.15,
            "class_gain_step": 0.1,
            "offset_step": 0.1,
            "group_size": 8,
            "max_steps": 10,
            "dropout_probability": 0.01,
            "noise_std": 0.05,
        },
        profile="loihi",
        algorithm="prototype",
        scope="readout",
        hidden=(64,),
        n_steps=4,
        dt_s=0.005,
        tau_syn_inv=50.0,
        encoder="binned",
        encoder_config={"n_bins": 1, "hold_steps": 1},
        normalisation="feature",
        signed_log=True,
        episode_normalisation=True,
        iterations=400,
        meta_batch=8,
        k_shot=5,
        k_shots=(1, 5, 10),
        n_query=30,
        outer_lr=3e-3,
        # The readout refitted on the shots beside batch 1's rows (the skip synapses
        # carry the input lines); at deployment it replaces the prototype refinement
        # below (bench/results/learner_design.md, sixth round).
        rehearsal=True,
        # Chosen leave-one-batch-out: for each of batches 2-5, the grid point (0, 10,
        # 30, 100, 300 steps; rate 0.1-1.0) with the best mean on the other three was
        # 300 steps at rate 1.0 (bench/results/meta_gas_drift.md records the attempts).
        refine_steps=300,
        refine_lr=1.0,
        seed=0,
    ),
}
"""Recipe name to meta-training configuration."""

PLASTICITY_ITERATIONS: dict[str, int] = {}
"""Recipes that also meta-train a three-factor-rule prior on the same body (none today:
the prototype readout is the chip-runnable rule the shipped priors use)."""
EVAL_TASKS = 40


PEER_ROWS = (*PEER_NAMES, "joint_finetune", "scratch")
"""Rows that compete with the prior in the goals (never the prior's own variants)."""


def best_peer(row: dict[str, Any]) -> tuple[str, float]:
    """The strongest peer in one K row of the table: its name and mean metric."""
    cands = [(n, float(row[n]["metric"]["mean"])) for n in PEER_ROWS if n in row]
    return max(cands, key=lambda c: c[1]) if cands else ("", float("nan"))


def kshot_notes(cfg: TrainConfig, kshot: dict[str, Any], k: int = 5) -> str:
    """What the K-shot table shows against the goals, in words (for the card).

    Goals: at ``k`` shots the prior at least 5 points above the best peer; at the other
    K at or above it; accuracy rising with K.
    """
    table = kshot["table"]
    if str(k) not in table or "meta" not in table[str(k)]:
        return ""
    how = (
        "the readout and its skip synapses from the input lines are refitted as one "
        "softmax regression on the shots' filtered hidden spike counts and input lines "
        "beside the prior's own training rows (their input lines, normalised on their own "
        "statistics; `regulator/meta/rehearsal.py`), and written through the chip's "
        "write model."
        if cfg.rehearsal
        else "the readout is written from its class means of the filtered hidden spike "
        "counts, shrunk toward the prior's means, through the chip's write model."
    )
    lines = [
        f"Adaptation `{cfg.algorithm}` on the `{cfg.scope}`: the support set runs through "
        f"the chip once; {how} Inputs are re-normalised per feature on the support set's "
        "inputs (labels unused), as in episodic meta-training."
    ]
    means = []
    for kk in kshot["ks"]:
        row = table[str(kk)]
        meta = float(row["meta"]["metric"]["mean"])
        means.append(meta)
        name, peer = best_peer(row)
        need = 5.0 if int(kk) == k else 0.0
        gap = 100 * (meta - peer)
        lines.append(
            f"{kk} shots: prior {100 * meta:.1f} vs best peer {_peer_label(name)} "
            f"{100 * peer:.1f} ({gap:+.1f} points; goal {need:+.0f}): "
            + ("reached." if gap >= need else "not reached.")
        )
    rising = all(b > a for a, b in itertools.pairwise(means))
    lines.append("Accuracy rises with K: " + ("yes." if rising else "no."))
    return "\n\n".join(lines)


def _peer_label(name: str) -> str:
    from regulator.meta.card import row_label

    return f"({row_label(name)})"


def _train_plasticity(
    cfg: TrainConfig, body: ModelBundle, iterations: int, progress: bool
) -> ModelBundle:
    """A three-factor-rule prior: the meta prior's body, rule coefficients meta-learned."""
    pcfg = cfg.model_copy(
        update={
            "algorithm": "plasticity",
            "scope": "readout",
            "iterations": iterations,
            "pretrain_steps": 0,
        }
    )
    tr = build_trainer(pcfg)
    tr.bundle.network.load_state_dict(body.network.state_dict())
    tr.bundle.normaliser = body.normaliser
    train_steps(tr, iterations, progress=progress)
    return finalise(tr)


def run_recipe(
    name: str,
    out_dir: str | Path,
    *,
    results_dir: str | Path | None = None,
    progress: bool = True,
    eval_tasks: int = EVAL_TASKS,
    trained: ModelBundle | None = None,
    joint_peer: bool = True,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Train, evaluate and write the prior ``name`` to ``out_dir`` (a model folder).

    Results go to ``results_dir`` (default ``bench/results`` of the repository) as
    ``meta_<name>.json`` and ``.md``. Resumes from the checkpoint beside ``out_dir``.
    ``trained`` skips training: a bundle already trained with this recipe's
    configuration (its ``meta.train_config`` must match) is evaluated and written.
    ``joint_peer`` trains the jointly trained spiking peer with the prior's budget.
    """
    if name not in RECIPES:
        raise UnknownNameError("training recipe", name, RECIPES)
    cfg = RECIPES[name]
    out = Path(out_dir).resolve()
    res_dir = Path(results_dir) if results_dir is not None else REPO / "bench" / "results"
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    results: dict[str, Any] = {"recipe": name, "config": cfg.model_dump(mode="json")}
    with contextlib.chdir(REPO):  # relative data paths are relative to the repository
        if trained is None:
            bundle, tr = train_prior(cfg, out, progress=progress)
            history = tr.history or []
        else:
            bundle, history = trained, []
            if TrainConfig.model_validate(bundle.meta.get("train_config", {})) != cfg:
                raise ConfigError(f"the bundle was not trained with recipe {name!r}")
        fam = family_for(bundle, REPO)
        if cfg.family == "file":
            bundle.meta["data"] = {"path": GAS_DATA, "sha256": sha256_file(REPO / GAS_DATA)}
        results["train_history_tail"] = [
            {k: v for k, v in h.items() if k != "env_seeds"} for h in history[-5:]
        ]
        batch = cfg.meta_batch * (cfg.k_shot * fam.n_outputs + cfg.n_query)
        # The joint peer gets the prior's whole step budget (pretraining + meta-training).
        joint = (
            train_joint(
                bundle,
                fam,
                steps=cfg.pretrain_steps + cfg.iterations,
                batch=batch,
                lr=cfg.outer_lr,
                seed=cfg.seed,
            )
            if joint_peer
            else None
        )
        plast = None
        if name in PLASTICITY_ITERATIONS:
            plast = _train_plasticity(cfg, bundle, PLASTICITY_ITERATIONS[name], progress)
            results["plasticity_coefficients"] = {
                k: v.tolist() for k, v in plast.meta_tensors.items()
            }
        kshot = evaluate(
            bundle,
            fam,
            ks=(1, 5, 10),
            n_tasks=eval_tasks,
            seed=cfg.seed,
            joint=joint,
            plasticity=plast,
        )
        results["kshot"] = kshot
        results["notes"] = kshot_notes(cfg, kshot)
        gas = None
        if cfg.family == "file":
            gas = evaluate_gas_drift(bundle, GAS_DIR, k_per_class=5, draws=20, seed=cfg.seed)
            results["gas_drift"] = gas
    command = f"regulator train --recipe {name} --out models/{name}"
    bundle.card = render_card(
        bundle,
        title=f"Prior `{name}`",
        command=command,
        kshot=kshot,
        gas=gas,
        notes=results.get("notes", ""),
    )
    bundle.save(out)
    ckpt = out.parent / f".{out.name}.checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    res_dir.mkdir(parents=True, exist_ok=True)
    stem = f"meta_{name.replace('-', '_')}"
    atomic.write_json(res_dir / f"{stem}.json", results)
    md = [f"# Meta prior `{name}`: evaluation", "", f"Command: `{command}`", ""]
    md += ["## K-shot, held-out environments", "", kshot_markdown(kshot), ""]
    if gas is not None:
        md += ["## Gas drift (trained on batch 1 only, 5 shots per gas)", "", gas_markdown(gas), ""]
    if results.get("notes"):
        md += ["## Notes", "", results["notes"], ""]
    atomic.write_text(res_dir / f"{stem}.md", "\n".join(md))
    log.info("wrote %s and %s", out, res_dir / f"{stem}.json")
    return bundle, results


def main(argv: list[str] | None = None) -> int:
    """``python -m regulator.meta.recipes NAME OUT`` until the CLI wires ``train``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("out")
    ap.add_argument("--eval-tasks", type=int, default=EVAL_TASKS)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    _, res = run_recipe(a.recipe, a.out, eval_tasks=a.eval_tasks)
    print(json.dumps({k: v for k, v in res.items() if k in ("recipe",)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
