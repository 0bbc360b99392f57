"""Spike density per hidden layer, from chip telemetry.

Density is spikes per neuron per time step per sample (so 0 is a silent layer and 1 a
layer where every neuron fires every step). Quantisation to a chip's bit depth often
silences a layer entirely, or drives it to fire constantly: both are flagged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from regulator.chip.telemetry import Telemetry
from regulator.errors import ConfigError, InputError
from regulator.monitor.base import Monitor, check_float, check_positive_int


class SpikeDensityMonitor(Monitor):
    """Windowed and EWMA-smoothed spike density per layer; flags silent and saturated layers.

    ``windowed`` pools the last ``window`` updates (total spikes over total neuron-steps);
    ``ewma`` smooths each update's density with weight ``alpha``. Flags use ``windowed``:
    silent when below ``silent_below``, saturated when at or above ``saturated_above``.

    >>> t = Telemetry(batch_size=2, n_steps=10, layer_names=("h1", "h2"),
    ...               neurons_per_layer=(50, 20), spikes_per_layer=(100.0, 0.0),
    ...               synaptic_ops=0.0, neuron_updates=0.0, active_neuron_updates=0.0,
    ...               spikes_routed=100.0)
    >>> m = SpikeDensityMonitor(window=10)
    >>> m.update(t)
    >>> m.windowed, m.silent_layers, m.saturated_layers
    ({'h1': 0.1, 'h2': 0.0}, ('h2',), ())
    """

    kind = "spike_density"

    def __init__(
        self,
        window: int = 100,
        alpha: float = 0.1,
        silent_below: float = 1e-3,
        saturated_above: float = 0.5,
    ) -> None:
        self._window = check_positive_int("window", window)
        self._alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self._silent = check_float("silent_below", silent_below, low=0.0, high=1.0)
        self._sat = check_float(
            "saturated_above", saturated_above, low=0.0, high=1.0, low_open=True
        )
        if self._silent >= self._sat:
            raise ConfigError("silent_below must be smaller than saturated_above")
        self.reset()

    def reset(self) -> None:
        self._names: tuple[str, ...] = ()
        self._hist: deque[tuple[list[float], list[float]]] = deque(maxlen=self._window)
        self._last: list[float] = []
        self._ewma: list[float] = []
        self._n = 0

    def update(self, telemetry: Telemetry) -> None:
        """Consume the telemetry of one forward pass."""
        names = tuple(telemetry.layer_names)
        if self._names and names != self._names:
            raise InputError(f"layers changed from {self._names} to {names}; reset() first")
        if telemetry.batch_size < 1 or telemetry.n_steps < 1:
            return  # an empty forward says nothing about density
        self._names = names
        dens = list(telemetry.spike_density())
        denom = [
            float(n * telemetry.n_steps * telemetry.batch_size) for n in telemetry.neurons_per_layer
        ]
        self._hist.append(([float(s) for s in telemetry.spikes_per_layer], denom))
        self._last = dens
        if not self._ewma:
            self._ewma = list(dens)
        else:
            a = self._alpha
            self._ewma = [(1 - a) * e + a * d for e, d in zip(self._ewma, dens, strict=True)]
        self._n += 1

    # results

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def n_updates(self) -> int:
        return self._n

    @property
    def density(self) -> dict[str, float]:
        """Density of the last update, per layer (spikes per neuron per step)."""
        return dict(zip(self._names, self._last, strict=True))

    @property
    def ewma(self) -> dict[str, float]:
        return dict(zip(self._names, self._ewma, strict=True))

    @property
    def windowed(self) -> dict[str, float]:
        """Pooled density over the last ``window`` updates, per layer."""
        out = {}
        for i, name in enumerate(self._names):
            spikes = sum(h[0][i] for h in self._hist)
            denom = sum(h[1][i] for h in self._hist)
            out[name] = spikes / denom if denom > 0 else 0.0
        return out

    @property
    def silent_layers(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.windowed.items() if v < self._silent)

    @property
    def saturated_layers(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.windowed.items() if v >= self._sat)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "window": self._window,
            "alpha": self._alpha,
            "silent_below": self._silent,
            "saturated_above": self._sat,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "n_updates": self._n,
            "density": self.density,
            "ewma": self.ewma,
            "windowed": self.windowed,
            "silent_layers": list(self.silent_layers),
            "saturated_layers": list(self.saturated_layers),
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "names": list(self._names),
            "hist": [[s, d] for s, d in self._hist],
            "last": list(self._last),
            "ewma": list(self._ewma),
            "n": self._n,
        }

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self._names = tuple(str(n) for n in state["names"])
        self._hist = deque(
            (([float(v) for v in s], [float(v) for v in d]) for s, d in state["hist"]),
            maxlen=self._window,
        )
        self._last = [float(v) for v in state["last"]]
        self._ewma = [float(v) for v in state["ewma"]]
        self._n = int(state["n"])
