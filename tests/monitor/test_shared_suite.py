"""The one suite every monitor passes (STYLE.md item 3): construct, update, results,
reset, and save/restore giving identical outputs afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from regulator.chip.telemetry import Telemetry
from regulator.errors import ConfigError
from regulator.monitor import (
    DETECTORS,
    AccuracyMonitor,
    CalibratedScorer,
    EnergyMonitor,
    Monitor,
    OODMonitor,
    SpikeDensityMonitor,
    make_detector,
)


@dataclass
class Case:
    make: Callable[[], Monitor]
    # feed(monitor, rng) applies one update with random but valid inputs
    feed: Callable[[Monitor, np.random.Generator], None]
    bad_config: dict[str, Any]


def _telemetry(rng: np.random.Generator) -> Telemetry:
    return Telemetry(
        batch_size=4,
        n_steps=8,
        layer_names=("h1", "h2"),
        neurons_per_layer=(16, 8),
        spikes_per_layer=(float(rng.integers(0, 100)), float(rng.integers(0, 40))),
        synaptic_ops=100.0,
        neuron_updates=800.0,
        active_neuron_updates=400.0,
        spikes_routed=50.0,
    )


class _Clock:
    t = 0.0


def _feed_energy(m: Monitor, rng: np.random.Generator) -> None:
    _Clock.t += float(rng.uniform(0.1, 2.0))
    m.update(float(rng.uniform(0, 1e-6)), float(rng.uniform(0, 1e-7)), _Clock.t, 3)


def _feed_accuracy(m: Monitor, rng: np.random.Generator) -> None:
    assert isinstance(m, AccuracyMonitor)
    ids = [str(v) for v in rng.integers(0, 10**9, size=5)]
    m.record(ids, rng.integers(0, 3, size=5))
    m.label(ids[:3], rng.integers(0, 3, size=3))
    m.update(rng.integers(0, 3, size=2), rng.integers(0, 3, size=2))


def _feed_regression(m: Monitor, rng: np.random.Generator) -> None:
    m.update(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))


_MODEL_RNG = np.random.default_rng(123)
_MODEL = CalibratedScorer.fit(
    "mahalanobis", _MODEL_RNG.normal(size=(200, 5)), cal_hidden=_MODEL_RNG.normal(size=(200, 5))
)


def _feed_ood(m: Monitor, rng: np.random.Generator) -> None:
    m.update(rng.normal(size=(int(rng.integers(1, 30)), 5)) + rng.uniform(0, 2))


def _feed_detector(m: Monitor, rng: np.random.Generator) -> None:
    m.update(rng.uniform(size=int(rng.integers(1, 50))) ** 3)  # small p-values: alarms


CASES = {
    "spike_density": Case(
        lambda: SpikeDensityMonitor(window=5, alpha=0.3),
        lambda m, rng: m.update(_telemetry(rng)),
        {"window": 0},
    ),
    "energy": Case(lambda: EnergyMonitor(window_s=5.0), _feed_energy, {"window_s": -1.0}),
    "accuracy": Case(lambda: AccuracyMonitor(window=7), _feed_accuracy, {"task": "ranking"}),
    "accuracy_regression": Case(
        lambda: AccuracyMonitor(window=7, task="regression"), _feed_regression, {"window": 1.5}
    ),
    "ood": Case(
        lambda: OODMonitor(_MODEL, detector_config={"mean_samples_between_false_alarms": 50}),
        _feed_ood,
        {"alpha": 0.0},
    ),
    "cusum": Case(
        lambda: make_detector("cusum", mean_samples_between_false_alarms=100),
        _feed_detector,
        {"mean_samples_between_false_alarms": 0},
    ),
    "probit_cusum": Case(
        lambda: make_detector("probit_cusum", mean_samples_between_false_alarms=100, delta=0.5),
        _feed_detector,
        {"delta": -1.0},
    ),
    "mixture_cusum": Case(
        lambda: make_detector("mixture_cusum", mean_samples_between_false_alarms=100),
        _feed_detector,
        {"a": [0.5, 1.5]},
    ),
    "mixture_cusum_grid": Case(
        lambda: make_detector(
            "mixture_cusum", mean_samples_between_false_alarms=100, a=[0.3, 0.7], n_calibration=50
        ),
        _feed_detector,
        {"weights": [1.0]},
    ),
    "cusum_grid": Case(
        lambda: make_detector("cusum", mean_samples_between_false_alarms=100, n_calibration=99),
        _feed_detector,
        {"n_calibration": 0},
    ),
    "cusum_latched": Case(
        lambda: make_detector("cusum", mean_samples_between_false_alarms=100, reset_on_alarm=False),
        _feed_detector,
        {"reset_on_alarm": "yes"},
    ),
}


# every registered detector, alone and behind the OOD monitor, passes the suite
for _name in DETECTORS:
    CASES.setdefault(
        f"detector_{_name}",
        Case(
            lambda _n=_name: make_detector(_n, mean_samples_between_false_alarms=100),
            _feed_detector,
            {"mean_samples_between_false_alarms": 1.0},
        ),
    )
    CASES[f"ood_{_name}"] = Case(
        lambda _n=_name: OODMonitor(
            _MODEL, detector=_n, detector_config={"mean_samples_between_false_alarms": 50}
        ),
        _feed_ood,
        {"detector_config": {"mean_samples_between_false_alarms": 0}},
    )


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    _Clock.t = 0.0
    yield CASES[request.param]


def _run(case: Case, m: Monitor, seed: int, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        case.feed(m, rng)
        out.append(json.loads(json.dumps(m.summary())))
    return out


def test_summary_is_json_and_config_makes_a_twin(case: Case) -> None:
    m = case.make()
    json.dumps(m.summary())
    twin = type(m)(**json.loads(json.dumps(m.config)))
    assert twin.summary() == m.summary()
    assert repr(m).startswith(type(m).__name__)


def test_bad_config_raises_config_error(case: Case) -> None:
    m = case.make()
    cfg = {**m.config, **case.bad_config}
    with pytest.raises(ConfigError):
        type(m)(**cfg)


def test_update_changes_results_and_reset_restores_initial(case: Case) -> None:
    m = case.make()
    initial = m.summary()
    results = _run(case, m, seed=1, n=20)
    assert results[-1] != initial
    m.reset()
    assert m.summary() == initial


def test_state_round_trip_gives_identical_outputs_afterwards(case: Case) -> None:
    a = case.make()
    _run(case, a, seed=2, n=15)
    saved = json.loads(json.dumps(a.state_dict()))  # JSON types only
    b = case.make()
    b.load_state_dict(saved)
    assert b.summary() == a.summary()
    t0 = _Clock.t
    out_a = _run(case, a, seed=3, n=15)
    _Clock.t = t0
    out_b = _run(case, b, seed=3, n=15)
    assert out_a == out_b


def test_state_from_another_kind_is_refused(case: Case) -> None:
    m = case.make()
    other = EnergyMonitor() if not isinstance(m, EnergyMonitor) else SpikeDensityMonitor()
    with pytest.raises(ConfigError):
        m.load_state_dict(other.state_dict())
