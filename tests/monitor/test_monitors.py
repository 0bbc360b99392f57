"""Behaviour specific to the density, energy and accuracy monitors."""

from __future__ import annotations

import pytest

from regulator.chip.telemetry import Telemetry
from regulator.errors import ConfigError, InputError
from regulator.monitor import AccuracyMonitor, EnergyMonitor, SpikeDensityMonitor


def _t(spikes: tuple[float, ...], names: tuple[str, ...] = ("a", "b")) -> Telemetry:
    return Telemetry(
        batch_size=1,
        n_steps=10,
        layer_names=names,
        neurons_per_layer=(10,) * len(names),
        spikes_per_layer=spikes,
        synaptic_ops=0.0,
        neuron_updates=0.0,
        active_neuron_updates=0.0,
        spikes_routed=sum(spikes),
    )


def test_density_window_ewma_and_flags() -> None:
    m = SpikeDensityMonitor(window=2, alpha=0.5, silent_below=0.01, saturated_above=0.9)
    m.update(_t((0.0, 100.0)))
    m.update(_t((0.0, 100.0)))
    assert m.silent_layers == ("a",) and m.saturated_layers == ("b",)
    m.update(_t((50.0, 0.0)))
    assert m.windowed == {"a": 0.25, "b": 0.5}
    assert m.ewma == {"a": 0.25, "b": 0.5}
    assert m.density == {"a": 0.5, "b": 0.0}
    assert m.silent_layers == () and m.saturated_layers == ()
    with pytest.raises(InputError, match="layers changed"):
        m.update(_t((1.0,), names=("a",)))
    with pytest.raises(ConfigError, match="smaller"):
        SpikeDensityMonitor(silent_below=0.5, saturated_above=0.4)


def test_energy_window_and_split() -> None:
    m = EnergyMonitor(window_s=2.0)
    assert m.power_w == 0.0
    for t in range(6):
        m.update(1.0, 0.5, float(t), n_inferences=10)
    assert m.power_w == pytest.approx(1.5)
    assert m.inference_power_w == pytest.approx(1.0)
    assert m.learning_power_w == pytest.approx(0.5)
    assert m.inference_rate_hz == pytest.approx(10.0)
    assert m.energy_j_total == pytest.approx(9.0)
    assert m.joules_per_inference == pytest.approx(0.1)
    with pytest.raises(InputError, match="backwards"):
        m.update(1.0, 0.0, 1.0)
    with pytest.raises(InputError):
        m.update(-1.0, 0.0, 9.0)


def test_accuracy_delayed_labels() -> None:
    m = AccuracyMonitor(window=4, max_pending=3)
    m.record([1, 2, 3, 4], [0, 1, 1, 0])  # id 1 is dropped: at most 3 pending
    assert m.label([1, 2, 3], [0, 1, 0]) == 2
    assert m.n_unmatched_labels == 1 and m.n_pending == 1
    assert m.accuracy == 0.5 and m.mae is None
    assert AccuracyMonitor().accuracy is None
    with pytest.raises(InputError):
        m.update([1, 2], [1])


def test_accuracy_keeps_the_newest_predictions_across_many_batches() -> None:
    """Predictions recorded batch by batch: the newest ``max_pending`` wait (an id
    recorded again counts as its newest), the others are counted dropped, and the
    state round-trips."""
    m = AccuracyMonitor(window=100, max_pending=50)
    for b in range(30):  # 30 batches of 4: ids 0..119
        m.record([4 * b + k for k in range(4)], [(4 * b + k) % 3 for k in range(4)])
    assert m.n_pending == 50 and m.summary()["n_dropped_predictions"] == 70
    assert m.label([0, 69], [0, 0]) == 0  # both forgotten
    assert m.label([70, 119, 100], [70 % 3, 0, 100 % 3]) == 3
    assert m.accuracy == pytest.approx(2 / 3)
    m.record([119], [2])  # again: only this one waits for 119
    assert m.label([119], [2]) == 1 and m.label([119], [2]) == 0
    restored = AccuracyMonitor(window=100, max_pending=50)
    restored.load_state_dict(m.state_dict())
    assert restored.summary() == m.summary()
    assert restored.label([101], [101 % 3]) == 1 and m.label([101], [101 % 3]) == 1


def test_a_label_before_its_prediction_is_matched_when_it_is_recorded() -> None:
    m = AccuracyMonitor(window=10)
    assert m.label(["a", "b"], [1, 0]) == 0
    assert m.n_unmatched_labels == 2
    m.record(["a", "c"], [1, 1])
    assert m.n_labelled == 1 and m.accuracy == 1.0 and m.n_unmatched_labels == 1
    assert m.n_pending == 1  # c
