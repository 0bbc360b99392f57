"""Energy per event, per chip, and the energy of a forward pass from its telemetry.

Every constant names its source and its kind (measured, pre-silicon simulation,
derived, assumption) so that a reader can weigh it. Figures are joules per event.
docs/energy.md lists every figure with its source and kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from regulator.chip.telemetry import Telemetry
from regulator.errors import UnknownNameError

PJ = 1e-12


@dataclass(frozen=True)
class EnergyFigures:
    """Joules per event of one chip family, with where each figure comes from."""

    name: str
    synaptic_op_j: float
    synaptic_update_j: float
    neuron_update_active_j: float
    neuron_update_inactive_j: float
    spike_route_j: float
    static_power_w: float
    sources: dict[str, str]


# Davies et al., "Loihi: a neuromorphic manycore processor with on-chip learning",
# IEEE Micro 38(1), 2018, Table 2. Kind: pre-silicon simulation, consistent with early
# silicon. 23.6 pJ is the minimum synaptic spike operation energy (a time of 3.5 ns
# appears in the same row; it is NOT an energy and is not added here).
LOIHI = EnergyFigures(
    name="loihi",
    synaptic_op_j=23.6 * PJ,
    synaptic_update_j=120.0 * PJ,
    neuron_update_active_j=81.0 * PJ,
    neuron_update_inactive_j=52.0 * PJ,
    spike_route_j=1.7 * PJ,  # spike within a tile; mesh hops (3.0/4.0 pJ) not modelled
    # Static power is not given per core in Table 2; we leave it out rather than guess,
    # so power figures are dynamic power only.
    static_power_w=0.0,
    sources={
        "synaptic_op_j": "Davies et al. 2018 IEEE Micro Table 2, pre-silicon (min. 23.6 pJ)",
        "synaptic_update_j": "Davies et al. 2018 Table 2, pre-silicon (120 pJ)",
        "neuron_update_active_j": "Davies et al. 2018 Table 2, pre-silicon (81 pJ)",
        "neuron_update_inactive_j": "Davies et al. 2018 Table 2, pre-silicon (52 pJ)",
        "spike_route_j": "Davies et al. 2018 Table 2, pre-silicon (1.7 pJ within a tile)",
        "static_power_w": "assumption: not modelled (0 W), dynamic power only",
    },
)

# A memristive (phase-change or RRAM crossbar) core. No published per-event figure
# for such a chip is at hand (docs/energy.md), so the read-side figures reuse TrueNorth's measured
# whole-chip average synaptic event (Merolla et al., Science 345, 2014; measured) as a
# stand-in for an analogue crossbar read, and neuron updates reuse Loihi's. Writes are
# what makes memristive learning costly: we assume 10x Loihi's digital synaptic update
# (kind: assumption, order of magnitude of PCM SET/RESET pulses; replace with your
# device's figure).
MEMRISTIVE = EnergyFigures(
    name="memristive",
    synaptic_op_j=26.0 * PJ,
    synaptic_update_j=1200.0 * PJ,
    neuron_update_active_j=81.0 * PJ,
    neuron_update_inactive_j=52.0 * PJ,
    spike_route_j=1.7 * PJ,
    static_power_w=0.0,
    sources={
        "synaptic_op_j": "Merolla et al. 2014 Science 345 (TrueNorth), measured, 26 pJ",
        "synaptic_update_j": "assumption: 10x Loihi's 120 pJ for a PCM/RRAM write pulse",
        "neuron_update_active_j": "Davies et al. 2018 Table 2, pre-silicon (81 pJ)",
        "neuron_update_inactive_j": "Davies et al. 2018 Table 2, pre-silicon (52 pJ)",
        "spike_route_j": "Davies et al. 2018 Table 2, pre-silicon (1.7 pJ)",
        "static_power_w": "assumption: not modelled (0 W), dynamic power only",
    },
)

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm CMOS at 0.9 V: fp32 add
# 0.9 pJ and fp32 multiply 3.7 pJ, so one MAC = 4.6 pJ (derived). The usual yardstick
# for what a dense ANN of the same shape would spend.
E_MAC_J = 4.6 * PJ
E_MAC_SOURCE = "Horowitz ISSCC 2014, 45 nm: 3.7 pJ fp32 mult + 0.9 pJ fp32 add (derived)"

# Horowitz, ISSCC 2014, same table: reading 64 bits from an 8 KB SRAM costs about 10 pJ
# at 45 nm; one 32-bit weight is taken as half of that (derived). A dense ANN reads every
# weight once per inference, so its like-for-like cost is MACs x (E_MAC + E_READ).
E_WEIGHT_READ_J = 5.0 * PJ
E_WEIGHT_READ_SOURCE = (
    "Horowitz ISSCC 2014, 45 nm: 8 KB SRAM 64-bit read ~10 pJ, halved for one 32-bit "
    "weight (derived)"
)
E_DENSE_MAC_J = E_MAC_J + E_WEIGHT_READ_J
"""Joules per multiply-accumulate of a dense ANN, its weight read included."""


def dense_energy_j(macs: float) -> float:
    """Joules a dense ANN spends on ``macs`` multiply-accumulates, weight reads included.

    >>> round(dense_energy_j(1000) * 1e9, 2)  # 1000 x (4.6 + 5.0) pJ
    9.6
    """
    return macs * E_DENSE_MAC_J


ENERGY_FIGURES: dict[str, EnergyFigures] = {f.name: f for f in (LOIHI, MEMRISTIVE)}


def energy_figures(name: str) -> EnergyFigures:
    """The named figure set; unknown names list the valid ones."""
    try:
        return ENERGY_FIGURES[name]
    except KeyError:
        raise UnknownNameError("energy figure set", name, ENERGY_FIGURES) from None


@dataclass(frozen=True)
class EnergyBreakdown:
    """Joules spent by one forward (or one learning step), by kind of event."""

    synaptic_j: float
    neuron_j: float
    routing_j: float
    learning_j: float
    dense_ann_j: float

    @property
    def inference_j(self) -> float:
        """Joules of inference (synaptic + neuron + routing)."""
        return self.synaptic_j + self.neuron_j + self.routing_j

    @property
    def total_j(self) -> float:
        """Joules of inference plus learning."""
        return self.inference_j + self.learning_j

    @property
    def advantage(self) -> float:
        """Dense-ANN joules divided by this chip's inference joules (higher is better)."""
        return self.dense_ann_j / self.inference_j if self.inference_j > 0 else float("inf")


class EnergyModel:
    """Turns telemetry into joules with one chip's per-event figures.

    >>> t = Telemetry(batch_size=1, n_steps=10, layer_names=("h0",), neurons_per_layer=(4,),
    ...               spikes_per_layer=(5.0,), synaptic_ops=100.0, neuron_updates=60.0,
    ...               active_neuron_updates=20.0, spikes_routed=5.0, dense_macs=48.0)
    >>> e = EnergyModel("loihi").energy(t)
    >>> round(e.inference_j * 1e12, 1)  # 100*23.6 + 20*81 + 40*52 + 5*1.7 pJ
    6068.5
    >>> round(e.dense_ann_j * 1e12, 1)  # 48 MACs * (4.6 pJ MAC + 5.0 pJ weight read)
    460.8
    """

    def __init__(self, figures: str | EnergyFigures) -> None:
        self.figures = energy_figures(figures) if isinstance(figures, str) else figures

    def energy(self, telemetry: Telemetry) -> EnergyBreakdown:
        """Joules of the events counted in ``telemetry``."""
        f = self.figures
        inactive = max(telemetry.neuron_updates - telemetry.active_neuron_updates, 0.0)
        return EnergyBreakdown(
            synaptic_j=telemetry.synaptic_ops * f.synaptic_op_j,
            neuron_j=telemetry.active_neuron_updates * f.neuron_update_active_j
            + inactive * f.neuron_update_inactive_j,
            routing_j=telemetry.spikes_routed * f.spike_route_j,
            learning_j=telemetry.weight_writes * f.synaptic_update_j,
            dense_ann_j=dense_energy_j(telemetry.dense_macs),
        )

    def learning_energy_j(self, weight_writes: float) -> float:
        """Joules of ``weight_writes`` synaptic updates."""
        return weight_writes * self.figures.synaptic_update_j

    def power_w(self, energy_per_inference_j: float, inferences_per_s: float) -> float:
        """Average watts at a given inference rate, static power included."""
        return energy_per_inference_j * inferences_per_s + self.figures.static_power_w
