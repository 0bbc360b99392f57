"""The ``regulator`` command (DESIGN.md §3). Exit codes: 0 ok, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from regulator.build import version_line
from regulator.errors import ConfigError, RegulatorError

KSHOT_DEFAULT = (1, 5, 10)
"""``evaluate``'s K per class on held-out environments."""
GAS_SHOTS_DEFAULT = 5
"""``evaluate --gas-drift``'s labelled samples per gas: the protocol's (README, cards)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regulator",
        description="Meta-regulator daemon for neuromorphic chips: serve, monitor, recalibrate.",
    )
    p.add_argument(
        "--version", action="version", version=version_line(), help="print the versions and exit"
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (embedded default without --config)")
    run.add_argument("--config", type=Path, help="policy file (YAML or TOML)")
    run.add_argument("--host", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="HTTP port (default 9890; 0 picks a free one)")
    run.add_argument("--state-dir", type=Path, help="state directory (default ./state)")

    chk = sub.add_parser("check-config", help="validate a policy file")
    chk.add_argument("file", type=Path)

    tr = sub.add_parser("train", help="meta-train a prior and write a model folder")
    tr.add_argument("--recipe", help="a named recipe (nanosensor, gas-drift)")
    tr.add_argument(
        "--config", type=Path, help="training configuration (YAML), instead of a recipe"
    )
    tr.add_argument("--out", type=Path, required=True, help="model folder to write")
    tr.add_argument("--iterations", type=int, help="override the number of meta-iterations")
    tr.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation table")
    tr.add_argument(
        "--executor",
        choices=("inline", "process", "ray"),
        help="run each meta-batch's tasks there (seeded per task: every executor gives "
        "the same prior); default: in this process, drawing episodes as before",
    )
    tr.add_argument(
        "--ray-address", help="an existing Ray cluster (auto, host:6379, ray://host:10001)"
    )
    tr.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default all)")

    ev = sub.add_parser("evaluate", help="few-shot evaluation of a prior against baselines")
    ev.add_argument("model", type=Path)
    ev.add_argument(
        "--shots",
        type=int,
        nargs="+",
        help=f"K per class (default {' '.join(map(str, KSHOT_DEFAULT))}; gas drift: one K, "
        f"default {GAS_SHOTS_DEFAULT}, the protocol's)",
    )
    ev.add_argument("--tasks", type=int, default=50, help="held-out tasks per K")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--gas-drift",
        type=Path,
        help="folder with batch1.dat, batch2.dat, ... (gas-drift protocol: trained on batch 1)",
    )
    ev.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[2, 3, 4, 5],
        help="gas drift: the batches adapted to and scored (any later recordings of the "
        "array in the same format, batchN.dat)",
    )
    ev.add_argument("--draws", type=int, default=20, help="gas drift: draws of the shots per batch")
    ev.add_argument("--out", type=Path, help="write the JSON table here")

    rp = sub.add_parser("replay", help="drive the daemon's runtime with recorded data")
    rp.add_argument("--config", type=Path, help="policy file")
    rp.add_argument("--data", nargs="+", default=[], help="recorded files, one segment each")
    rp.add_argument("--report", type=Path, required=True, help="JSON report to write")
    rp.add_argument(
        "--no-progress", action="store_true", help="no progress bars (none off a terminal)"
    )

    fl = sub.add_parser("fleet", help="simulate a fleet of chips as Ray actors")
    fl.add_argument("file", type=Path, help="fleet file (YAML or TOML)")
    fl.add_argument("--check", action="store_true", help="validate the file and exit")
    fl.add_argument("--rounds", type=int, help="rounds to run (default: until stopped)")
    fl.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://HEAD:10001)")
    fl.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: all)")

    ex = sub.add_parser("export-nir", help="export a model to NIR")
    ex.add_argument("model", type=Path)
    ex.add_argument("out", type=Path)

    rep = sub.add_parser(
        "report", help="plots of a run's event log or a replay report: PNGs, or one HTML page"
    )
    rep.add_argument("input", type=Path, help="events.jsonl of a state dir, or a replay report")
    rep.add_argument("--out", type=Path, required=True, help="folder for the PNGs or the page")
    rep.add_argument(
        "--html",
        action="store_true",
        help="write OUT/report.html, one self-contained page with interactive plots",
    )
    return p


def _quiet_warnings() -> None:
    # Norse 1.1 decorates with torch.jit.script, deprecated in torch 2.13/2.14: harmless.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # Future/Deprecation


def _cmd_run(a: argparse.Namespace) -> int:
    from regulator.service.daemon import run_daemon

    overrides: dict[str, Any] = {}
    if a.host is not None:
        overrides["http.host"] = a.host
    if a.port is not None:
        overrides["http.port"] = a.port
    if a.state_dir is not None:
        overrides["state_dir"] = str(a.state_dir)
    return run_daemon(a.config, overrides)


def _cmd_check(a: argparse.Namespace) -> int:
    from regulator.policy.check import check_config

    return check_config(a.file)


def _cmd_train(a: argparse.Namespace) -> int:
    import yaml

    from regulator.meta import recipes
    from regulator.meta.train import TrainConfig, train_prior

    if (a.recipe is None) == (a.config is None):
        raise ConfigError("give exactly one of --recipe NAME or --config FILE")
    if a.recipe is not None and a.iterations is None:
        recipes.run_recipe(a.recipe, a.out)  # trains, evaluates, writes card and results
        print(f"wrote {a.out}")
        return 0
    if a.recipe is not None:
        if a.recipe not in recipes.RECIPES:
            recipes.run_recipe(a.recipe, a.out)  # raises the error listing valid recipes
        cfg = recipes.RECIPES[a.recipe]
    else:
        try:
            cfg = TrainConfig.model_validate(yaml.safe_load(a.config.read_text()) or {})
        except (OSError, yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"{a.config}: {err}") from None
    if a.iterations is not None:
        cfg = cfg.model_copy(update={"iterations": a.iterations})
    executor = None
    if a.executor is not None:
        from regulator.service.executor import create_executor

        opts: dict[str, Any] = {}
        if a.executor == "ray":
            opts = {"address": a.ray_address, "num_cpus": a.workers}
        executor = create_executor(a.executor, **opts)
    try:
        bundle, _ = train_prior(cfg, a.out, resume=not a.no_resume, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_pending=True)
    bundle.card = (
        f"# Prior `{cfg.family}`\n\nTraining configuration:\n\n```json\n"
        f"{json.dumps(cfg.model_dump(mode='json'), indent=1)}\n```\n\n"
        "Evaluate with `regulator evaluate`.\n"
    )
    bundle.save(a.out)
    print(f"wrote {a.out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from regulator.meta.card import gas_markdown, kshot_markdown
    from regulator.meta.evaluate import evaluate
    from regulator.meta.gas_protocol import evaluate_gas_drift
    from regulator.meta.model import ModelBundle

    bundle = ModelBundle.load(a.model)
    if a.out:
        _output_file(a.out, "--out")
    progress = sys.stderr.isatty()
    if a.gas_drift is not None:
        if a.shots is not None and len(a.shots) != 1:
            print("regulator evaluate: --gas-drift takes one --shots K", file=sys.stderr)
            return 2
        table = evaluate_gas_drift(
            bundle,
            a.gas_drift,
            k_per_class=a.shots[0] if a.shots else GAS_SHOTS_DEFAULT,
            draws=a.draws,
            seed=a.seed,
            batches=tuple(a.batches),
            progress=progress,
        )
        print(gas_markdown(table))
    else:
        ks = tuple(a.shots or KSHOT_DEFAULT)
        table = evaluate(bundle, ks=ks, n_tasks=a.tasks, seed=a.seed, progress=progress)
        print(kshot_markdown(table))
    if a.out:
        a.out.write_text(json.dumps(table, indent=1, default=float))
        print(f"wrote {a.out}")
    return 0


def _output_file(path: Path, flag: str) -> Path:
    """``path``, with its folder made now: a file written after a long run (a replay, an
    evaluation) is checked before the run, not found unwritable at its end."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot make its folder: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{flag} {path}: its folder is not writable")
    return path


def _cmd_replay(a: argparse.Namespace) -> int:
    from regulator.policy.model import load_policy
    from regulator.service.replay import run_replay

    policy = load_policy(a.config)
    _output_file(a.report, "--report")
    report = run_replay(policy, a.data, a.report, progress=not a.no_progress)
    for seg in report["segments"]:
        acc = seg.get("accuracy", seg.get("mae"))
        print(
            f"{Path(seg['file']).name}: {seg['samples']} samples, "
            f"{'accuracy' if 'accuracy' in seg else 'mae'} {acc}, "
            f"{len(seg['detections'])} detections, {len(seg['recalibrations'])} recalibrations"
        )
    print(f"report: {a.report}")
    return 0


def _cmd_fleet(a: argparse.Namespace) -> int:
    from regulator.fleet.command import check_fleet, run_fleet

    if a.check:
        return check_fleet(a.file)
    return run_fleet(a.file, a.rounds, a.ray_address, a.workers)


def _cmd_export(a: argparse.Namespace) -> int:
    from regulator.chip.nir_io import export_model_folder

    export_model_folder(a.model, a.out)
    print(f"wrote {a.out}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    if a.html:
        from regulator.report_html import write_html_report

        print(write_html_report(a.input, a.out / "report.html"))
        return 0
    from regulator.report import write_report

    paths = write_report(a.input, a.out)
    for p in paths:
        print(p)
    return 0


COMMANDS = {
    "run": _cmd_run,
    "check-config": _cmd_check,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "replay": _cmd_replay,
    "fleet": _cmd_fleet,
    "export-nir": _cmd_export,
    "report": _cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, map errors to exit codes."""
    _quiet_warnings()
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"regulator {args.command}: {err}", file=sys.stderr)
        return 2
    except RegulatorError as err:
        print(f"regulator {args.command}: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
    except OSError as err:  # a file that could not be read or written: no traceback
        print(f"regulator {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
