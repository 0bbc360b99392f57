"""Label-free recalibration: re-fit the input scaling and restore the spike density.

Needs only recent unlabelled samples. Two steps, both on a clone (STYLE.md item 2):

1. the input normaliser is re-fitted on the samples (undoes per-channel gain and
   offset drift of the sensors);
2. homeostasis: each hidden layer gets one shared bias shift, found by bisection, that
   brings its spike density (spikes per neuron per step) back to the calibration
   baseline ``bundle.calibration["spike_density"]``, within ``tolerance`` (relative).
   Biases are stored at full precision (Loihi's bias mantissa and exponent), so each
   changed bias is one write at the profile's synaptic-update energy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from regulator.chip.energy import EnergyModel
from regulator.chip.network import ChipInstance
from regulator.errors import ConfigError, InputError
from regulator.meta.model import ModelBundle

__all__ = ["LabelFreeReport", "recalibrate_label_free"]


@dataclass(frozen=True)
class LabelFreeReport:
    """What one label-free recalibration did and cost.

    Densities are spikes per neuron per step, per hidden layer. ``bias_shift`` is the
    shift added to every bias of each layer (network current units). Energies in joules.
    """

    n_samples: int
    density_target: tuple[float, ...]
    density_before: tuple[float, ...]
    density_after: tuple[float, ...]
    bias_shift: tuple[float, ...]
    weight_writes: int
    forwards: int
    seconds: float
    write_energy_j: float
    forward_energy_j: float
    notes: list[str] = field(default_factory=list)

    @property
    def learning_energy_j(self) -> float:
        """Writes plus the chip forwards the recalibration ran."""
        return self.write_energy_j + self.forward_energy_j

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["learning_energy_j"] = self.learning_energy_j
        return d


def _densities(bundle: ModelBundle, x: np.ndarray, chip: ChipInstance) -> tuple[list[float], float]:
    """Per-layer spike density on ``x`` and the forward's inference joules."""
    with torch.no_grad():
        inp = bundle.encode(x, chip.generator)
        out = bundle.network(inp, chip, input_is_spikes=bundle.encoder.spiking)
    e = EnergyModel(bundle.profile.energy).energy(out.telemetry).inference_j
    return list(out.telemetry.spike_density()), e


def recalibrate_label_free(
    bundle: ModelBundle,
    x_unlabelled: np.ndarray,
    chip: ChipInstance,
    *,
    refit_weight: float = 1.0,
    homeostasis: bool = True,
    tolerance: float = 0.1,
    max_forwards: int = 8,
    max_samples: int = 256,
) -> tuple[ModelBundle, LabelFreeReport]:
    """A clone of ``bundle`` re-normalised on ``x_unlabelled [n, C, L]`` and with its
    hidden spike density brought back toward the calibration baseline.

    ``refit_weight`` blends the new input statistics in (1 replaces them). Homeostasis
    runs only when the bundle carries a density baseline and a layer is off by more
    than ``tolerance`` (relative); it uses at most ``max_forwards`` chip forwards on at
    most ``max_samples`` of the samples. ``bundle`` itself is never modified.

    >>> from regulator.chip.encoders import CurrentEncoder
    >>> from regulator.chip.network import NetworkConfig, SpikingNetwork
    >>> from regulator.chip.profiles import load_profile
    >>> from regulator.tasks.normalisation import Normaliser
    >>> cfg = NetworkConfig(n_inputs=2, hidden=(8,), n_outputs=2, n_steps=8)
    >>> x = np.random.default_rng(0).normal(size=(40, 2, 1)).astype(np.float32)
    >>> b = ModelBundle(SpikingNetwork(cfg), CurrentEncoder(), load_profile("loihi"),
    ...                 Normaliser("standard").fit(x), {"family": "demo", "n_channels": 2})
    >>> new, rep = recalibrate_label_free(b, 3 * x + 1, ChipInstance.create("loihi", cfg))
    >>> new is b, rep.n_samples, bool((b.normaliser.center != new.normaliser.center).all())
    (False, 40, True)
    """
    t0 = time.perf_counter()
    x = np.asarray(x_unlabelled, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or len(x) < 2:
        raise InputError(
            f"label-free recalibration needs >= 2 samples [n, C, L], got {list(x.shape)}"
        )
    if not 0.0 < tolerance < 1.0 or max_forwards < 1:
        raise ConfigError("tolerance must lie in (0, 1) and max_forwards be >= 1")
    new = bundle.clone()
    new.normaliser.refit(x, weight=refit_weight)
    energy = EnergyModel(bundle.profile.energy)
    xs = x[:: max(1, len(x) // max_samples)][:max_samples]
    before, fwd_j = _densities(new, xs, chip)
    forwards = 1
    notes: list[str] = []
    target = [float(v) for v in bundle.calibration.get("spike_density", [])]
    shifts = [0.0] * len(before)
    after = list(before)
    writes = 0
    if homeostasis and len(target) != len(before):
        notes.append("no spike-density baseline in the bundle: homeostasis skipped")
    elif homeostasis:
        for li in range(len(new.network.layers)):
            lin: torch.nn.Linear = new.network.layers[li]  # type: ignore[assignment]
            tgt = target[li]
            if tgt <= 0 or abs(after[li] - tgt) <= tolerance * tgt:
                continue
            # Density rises monotonically with the bias: grow a bracket that holds the
            # target, then bisect (each probe is one chip forward).
            base = lin.bias.detach().clone()
            best = (abs(after[li] - tgt), 0.0, after)
            a, fa = 0.0, after[li]
            b = 0.25 if fa < tgt else -0.25
            bracketed, c = False, b
            while forwards < max_forwards:
                with torch.no_grad():
                    lin.bias.copy_(base + b)
                dens, e = _densities(new, xs, chip)
                forwards += 1
                fwd_j += e
                if abs(dens[li] - tgt) < best[0]:
                    best = (abs(dens[li] - tgt), b, dens)
                if abs(dens[li] - tgt) <= tolerance * tgt:
                    break
                if (dens[li] < tgt) == (fa < tgt):  # same side as a: move on
                    if bracketed:
                        a, fa = b, dens[li]
                        b = 0.5 * (a + c)
                    else:
                        a, fa, b = b, dens[li], 2.0 * b
                else:
                    bracketed, c = True, b
                    b = 0.5 * (a + c)
            with torch.no_grad():
                lin.bias.copy_(base + best[1])
            shifts[li] = best[1]
            after = list(best[2])
            if best[1] != 0.0:
                writes += int(lin.bias.numel())
    report = LabelFreeReport(
        n_samples=len(x),
        density_target=tuple(target),
        density_before=tuple(before),
        density_after=tuple(after),
        bias_shift=tuple(shifts),
        weight_writes=writes,
        forwards=forwards,
        seconds=time.perf_counter() - t0,
        write_energy_j=energy.learning_energy_j(writes),
        forward_energy_j=fwd_j,
        notes=notes,
    )
    return new, report
