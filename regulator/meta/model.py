"""A deployable model: the network, how its inputs are prepared, and what it learned.

A :class:`ModelBundle` is everything a model folder holds (weights in safetensors,
network and encoder configuration, chip profile, task family, input normalisation,
meta-parameters such as learned inner-loop rates, the in-distribution statistics the
monitors calibrate on, and the card). :class:`ChipModel` is a bundle running on one
chip instance. Bundles are never edited in place by adaptation: :meth:`ModelBundle.clone`
first (STYLE.md item 2).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from regulator.chip.encoders import Encoder, make_encoder
from regulator.chip.energy import EnergyModel
from regulator.chip.network import ChipInstance, NetOutput, NetworkConfig, SpikingNetwork
from regulator.chip.profiles import ChipProfile
from regulator.chip.telemetry import Telemetry
from regulator.errors import InputError, ModelFolderError
from regulator.modelfolder import verify, write_manifest
from regulator.tasks.normalisation import Normaliser
from regulator.turns import checkpoint

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.safetensors"
CARD_FILE = "card.md"


@dataclass
class ModelBundle:
    """Network, input preparation and meta-knowledge of one model version.

    ``task`` is ``{"family": name, "config": {...}, "kind": ..., "n_outputs": ...}``.
    ``meta`` holds JSON-able meta-parameters (algorithm, scope, inner steps, ...);
    ``meta_tensors`` the tensor ones (Meta-SGD rates, plasticity coefficients).
    ``calibration`` holds the monitors' in-distribution statistics (JSON-able).
    """

    network: SpikingNetwork
    encoder: Encoder
    profile: ChipProfile
    normaliser: Normaliser
    task: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    meta_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    card: str = ""

    @property
    def cfg(self) -> NetworkConfig:
        return self.network.cfg

    @property
    def kind(self) -> str:
        return str(self.task.get("kind", "classification"))

    @property
    def episode_normalisation(self) -> bool:
        """Whether adaptation re-fits the input normaliser on the support set's inputs
        (labels unused) before anything else, as in episodic meta-training."""
        return bool(self.meta.get("episode_normalisation", False))

    def support_normaliser(self, support_x: np.ndarray) -> Normaliser:
        """A normaliser of this bundle's method fitted on ``support_x`` alone."""
        arr = np.asarray(support_x, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return Normaliser(self.normaliser.method, self.normaliser.signed_log).fit(arr)

    def clone(self) -> ModelBundle:
        """A deep copy: adapting the clone never touches this bundle."""
        return ModelBundle(
            network=copy.deepcopy(self.network),
            encoder=copy.deepcopy(self.encoder),
            profile=self.profile,
            normaliser=copy.deepcopy(self.normaliser),
            task=copy.deepcopy(self.task),
            meta=copy.deepcopy(self.meta),
            # (rehearsal rows are read-only data: shared, not copied, by every clone)
            meta_tensors={
                k: v if k.startswith("rehearsal.") else v.detach().clone()
                for k, v in self.meta_tensors.items()
            },
            calibration=copy.deepcopy(self.calibration),
            card=self.card,
        )

    # -- inputs -------------------------------------------------------------------------

    def encode(
        self,
        x: np.ndarray,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        normaliser: Normaliser | None = None,
        checked: bool = False,
    ) -> torch.Tensor:
        """Raw samples ``[B, C, L]`` to chip input ``[T, B, n_in]`` (normalised, encoded).

        ``normaliser`` overrides the bundle's (episodic training normalises each
        environment on its own support set). ``checked``: the caller already checked
        ``x`` is finite float32 ``[B, C, L]`` (the service's
        :class:`~regulator.service.inputs.InputCheck`, the one validation of a served
        sample), so it is not checked again here."""
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if not checked:
            n_ch = int(self.task.get("n_channels") or (arr.shape[1] if arr.ndim == 3 else 0))
            if arr.ndim != 3 or arr.shape[1] != n_ch:
                raise InputError(f"expected samples [B, {n_ch}, L], got shape {list(arr.shape)}")
            if not np.isfinite(arr).all():
                raise InputError("sample holds NaN or infinite values")
        norm = normaliser if normaliser is not None else self.normaliser
        z = norm.transform(arr) if norm.fitted else arr
        z = np.clip(z, -10.0, 10.0).astype(np.float32)
        return self.encoder.encode(torch.from_numpy(z), n_steps or self.cfg.n_steps, generator)

    # -- persistence --------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model folder atomically (temp dir, manifest with sha256, rename)."""
        dst = Path(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
        try:
            state = {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            meta_t = {k: v.detach().contiguous() for k, v in self.meta_tensors.items()}
            save_file(meta_t or {"_empty": torch.zeros(1)}, str(tmp / META_FILE))
            config = {
                "network": self.cfg.model_dump(mode="json"),
                "encoder": self.encoder.config(),
                "profile": self.profile.model_dump(mode="json"),
                "normaliser": self.normaliser.to_dict(),
                "task": self.task,
                "meta": self.meta,
                "calibration": self.calibration,
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")
            (tmp / CARD_FILE).write_text(self.card, encoding="utf-8")
            write_manifest(tmp, {"kind": "regulator-model", "family": self.task.get("family")})
            # mkdtemp makes 0700: a model folder is read by other users (a container's
            # non-root user, systemd's DynamicUser), so make it world-readable.
            tmp.chmod(0o755)
            for f in tmp.iterdir():
                f.chmod(0o644)
            if dst.exists():
                old = dst.with_name(f".{dst.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                dst.rename(old)
                tmp.rename(dst)
                shutil.rmtree(old)
            else:
                tmp.rename(dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dst

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, verified: bool = False) -> ModelBundle:
        """Read a model folder after checking every file's sha256 (no pickles).

        ``verified``: the caller has just checked the folder's checksums itself (the
        registry does before it hands out a version), so its bytes are not hashed again."""
        src = Path(folder)
        if not (src / CONFIG_FILE).is_file():
            raise ModelFolderError(f"{src}: not a model folder (no {CONFIG_FILE})")
        if not verified:
            verify(src)
        config = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
        checkpoint()  # a recalibration's load takes turns with serving (regulator.turns)
        cfg = NetworkConfig.model_validate(config["network"])
        net = SpikingNetwork(cfg)
        checkpoint()
        net.load_state_dict(load_file(str(src / WEIGHTS_FILE)))
        meta_t = load_file(str(src / META_FILE))
        meta_t.pop("_empty", None)
        enc_cfg = dict(config["encoder"])
        enc = make_encoder(str(enc_cfg.pop("name")), **enc_cfg)
        card = (src / CARD_FILE).read_text(encoding="utf-8") if (src / CARD_FILE).exists() else ""
        return cls(
            network=net,
            encoder=enc,
            profile=load_profile_dict(config["profile"]),
            normaliser=Normaliser.from_dict(config["normaliser"]),
            task=config["task"],
            meta=config.get("meta", {}),
            meta_tensors=meta_t,
            calibration=config.get("calibration", {}),
            card=card,
        )


def load_profile_dict(data: dict[str, Any]) -> ChipProfile:
    """A profile stored in a model folder (validated again)."""
    return ChipProfile.model_validate(data)


@dataclass(frozen=True)
class Prediction:
    """One batch through the chip.

    ``outputs`` ``[B, K]`` readout (logits or regression values); ``labels`` ``[B]``
    predicted class (argmax) or the regression value; ``hidden_counts`` ``[B, H]``
    spikes per hidden neuron; ``telemetry`` event counts; ``energy_j`` inference joules
    of the batch in the chip's energy model; ``dense_ann_j`` what a dense ANN would spend.
    """

    outputs: np.ndarray
    labels: np.ndarray
    hidden_counts: np.ndarray
    telemetry: Telemetry
    energy_j: float
    dense_ann_j: float


class ChipModel:
    """A bundle deployed on one chip instance: what the daemon serves.

    >>> from regulator.chip.encoders import CurrentEncoder
    >>> from regulator.chip.profiles import load_profile
    >>> net = SpikingNetwork(NetworkConfig(n_inputs=2, hidden=(4,), n_outputs=3, n_steps=4))
    >>> b = ModelBundle(net, CurrentEncoder(), load_profile("ideal"), Normaliser("none"),
    ...                 {"family": "demo", "kind": "classification", "n_channels": 2})
    >>> ChipModel(b, seed=0).predict(np.zeros((5, 2, 1), np.float32)).outputs.shape
    (5, 3)
    """

    def __init__(self, bundle: ModelBundle, seed: int = 0, chip: ChipInstance | None = None):
        self.bundle = bundle
        self.chip = chip or ChipInstance.create(bundle.profile, bundle.cfg, seed)
        self.energy_model = EnergyModel(bundle.profile.energy)
        self.n_steps: int | None = None  # low-power mode sets fewer steps

    def forward(self, x: np.ndarray, checked: bool = False) -> NetOutput:
        """The raw network output for samples ``[B, C, L]``. ``checked``: the caller
        checked ``x`` (finite float32 ``[B, C, L]``), so neither the encoder nor the
        network checks it again (see :meth:`ModelBundle.encode`)."""
        with torch.no_grad():
            inp = self.bundle.encode(x, self.chip.generator, self.n_steps, checked=checked)
            return self.bundle.network(
                inp, self.chip, input_is_spikes=self.bundle.encoder.spiking, checked=checked
            )

    def predict(self, x: np.ndarray, checked: bool = False) -> Prediction:
        """Predict samples ``[B, C, L]`` on the chip (``checked``: see :meth:`forward`)."""
        out = self.forward(x, checked)
        outputs = out.outputs.numpy()
        if self.bundle.kind == "classification":
            labels = outputs.argmax(axis=1)
        else:
            labels = outputs[:, 0] if outputs.shape[1] == 1 else outputs
        e = self.energy_model.energy(out.telemetry)
        return Prediction(
            outputs, labels, out.hidden_counts.numpy(), out.telemetry, e.inference_j, e.dense_ann_j
        )
