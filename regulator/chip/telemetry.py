"""What one forward pass of the chip did, counted in events.

Telemetry is the only chip type that the monitors see (DESIGN.md §2). Counts are
totals over the whole batch and all time steps of the forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Telemetry:
    """Event counts of one forward pass.

    Attributes:
        batch_size: samples in the forward.
        n_steps: simulation time steps per sample.
        layer_names: one name per spiking (hidden) layer.
        neurons_per_layer: neurons in each hidden layer.
        spikes_per_layer: spikes emitted by each hidden layer (sum over batch and steps).
        synaptic_ops: synaptic events, spikes (or non-zero inputs) x non-zero fan-out.
        neuron_updates: neuron state updates (neurons x steps x batch, readout included).
        active_neuron_updates: the part of ``neuron_updates`` whose neuron received input.
        spikes_routed: spikes sent over the on-chip network (hidden spikes).
        weight_writes: synaptic weight writes (learning), zero for inference.
        dense_macs: multiply-accumulates the like-for-like dense ANN (same widths, every
            distinct input point the chip was given) spends on this batch.
    """

    batch_size: int
    n_steps: int
    layer_names: tuple[str, ...]
    neurons_per_layer: tuple[int, ...]
    spikes_per_layer: tuple[float, ...]
    synaptic_ops: float
    neuron_updates: float
    active_neuron_updates: float
    spikes_routed: float
    weight_writes: float = 0.0
    dense_macs: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def spike_density(self) -> tuple[float, ...]:
        """Spikes per neuron per step per sample, for each hidden layer."""
        out = []
        for spikes, neurons in zip(self.spikes_per_layer, self.neurons_per_layer, strict=True):
            denom = max(neurons * self.n_steps * self.batch_size, 1)
            out.append(spikes / denom)
        return tuple(out)

    def per_sample(self) -> Telemetry:
        """The same counts divided by the batch size (one inference)."""
        b = max(self.batch_size, 1)
        return Telemetry(
            batch_size=1,
            n_steps=self.n_steps,
            layer_names=self.layer_names,
            neurons_per_layer=self.neurons_per_layer,
            spikes_per_layer=tuple(s / b for s in self.spikes_per_layer),
            synaptic_ops=self.synaptic_ops / b,
            neuron_updates=self.neuron_updates / b,
            active_neuron_updates=self.active_neuron_updates / b,
            spikes_routed=self.spikes_routed / b,
            weight_writes=self.weight_writes / b,
            dense_macs=self.dense_macs / b,
            extra={k: v / b for k, v in self.extra.items()},
        )
