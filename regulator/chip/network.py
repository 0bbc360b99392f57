"""The spiking network as it runs on a chip: Norse LIF dynamics under a hardware profile.

Dynamics are Norse's (``norse.torch.functional.lif.lif_feed_forward_step`` and
``li_feed_forward_step``, the same Euler update in the same order, and Norse's
SuperSpike surrogate for gradients). A layer's input currents for all time steps are
one matrix product, so per step only the element-wise neuron update remains. With
autograd, :meth:`SpikingNetwork.forward_stepwise` runs that update step by step, the
definition; inference (no autograd) runs the fused loops of
:mod:`regulator.chip.dynamics` on weights programmed once per change
(:mod:`regulator.chip.programmed`), with the same spikes and telemetry. The profile
(:mod:`regulator.chip.profiles`) decides weight and state precision, mismatch, noise,
lost events, stuck synapses and drift; the :class:`ChipInstance` holds what is fixed
per physical chip (seeded).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from norse.torch.functional.threshold import threshold as norse_threshold
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from regulator.chip.dynamics import LIFParams, li_kernel, li_mean, lif_sequence_
from regulator.chip.events import EventTally, currents_normal, dense_macs, read_noise
from regulator.chip.instance import ChipInstance
from regulator.chip.programmed import ProgrammedWeights
from regulator.chip.quant import quantise_state, quantise_weight, weight_levels, weight_step
from regulator.chip.telemetry import Telemetry
from regulator.errors import InputError

__all__ = ["ChipInstance", "NetOutput", "NetworkConfig", "SpikingNetwork"]


class NetworkConfig(BaseModel):
    """Shape and neuron constants of the network. Rates in 1/s, ``dt_s`` in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_inputs: int = Field(gt=0)
    hidden: tuple[int, ...] = (64,)
    recurrent: bool = False
    n_outputs: int = Field(gt=0)
    dt_s: float = Field(1e-3, gt=0, le=0.1)
    n_steps: int = Field(32, gt=0, le=10_000)
    tau_syn_inv: float = Field(200.0, gt=0)
    tau_mem_inv: float = Field(100.0, gt=0)
    v_th: float = Field(1.0, gt=0)
    surrogate_alpha: float = Field(100.0, gt=0)
    readout_skip: bool = False
    """Input lines also synapse onto the readout (``readout_skip.weight``, zero until
    an adaptation writes it): a linear path from the sensor beside the hidden layer's
    spike counts, which a rehearsal readout fit uses (:mod:`regulator.meta.rehearsal`)."""

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(n <= 0 for n in v):
            raise ValueError("hidden must list at least one positive layer size")
        return v


@dataclass(frozen=True)
class NetOutput:
    """What one forward returns.

    ``outputs``: readout ``[B, n_outputs]`` (mean membrane over time: logits or
    regression values). ``hidden_counts``: spikes per hidden neuron per sample
    ``[B, sum(hidden)]``, the statistics the OOD monitor scores. ``telemetry``: event
    counts of the whole batch.
    """

    outputs: torch.Tensor
    hidden_counts: torch.Tensor
    telemetry: Telemetry
    last_spikes: torch.Tensor | None = None  # [T, B, hidden[-1]], input of the readout


class SpikingNetwork(nn.Module):
    """LIF hidden layers (feed-forward or recurrent) and a leaky-integrator readout.

    Input ``[T, B, n_inputs]`` (currents or spikes from an encoder). Under
    ``torch.no_grad`` the forward is exact (weights on the profile's grid, hard
    threshold); with gradients enabled it is quantisation-aware (straight-through
    rounding) with Norse's SuperSpike surrogate, so training sees the same values.

    >>> net = SpikingNetwork(NetworkConfig(n_inputs=3, hidden=(8,), n_outputs=2, n_steps=5))
    >>> with torch.no_grad():
    ...     out = net(torch.ones(5, 4, 3))
    >>> tuple(out.outputs.shape), tuple(out.hidden_counts.shape), out.telemetry.n_steps
    ((4, 2), (4, 8), 5)
    """

    def __init__(self, cfg: NetworkConfig, init_seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self._cache = ProgrammedWeights()
        g = torch.Generator().manual_seed(init_seed)
        sizes = [cfg.n_inputs, *cfg.hidden]
        self.layers = nn.ModuleList()
        for n_in, n_out in itertools.pairwise(sizes):
            lin = nn.Linear(n_in, n_out)
            with torch.no_grad():
                # Larger than PyTorch's default so that the first layer spikes at init:
                # a silent network has no surrogate gradient to learn from.
                lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * (3.0 / n_in**0.5))
                lin.bias.zero_()
            self.layers.append(lin)
        self.recurrent = nn.ParameterList()
        if cfg.recurrent:
            for n in cfg.hidden:
                self.recurrent.append(nn.Parameter(torch.randn(n, n, generator=g) * (0.5 / n**0.5)))
        self.readout = nn.Linear(sizes[-1], cfg.n_outputs)
        with torch.no_grad():
            self.readout.weight.copy_(
                torch.randn(cfg.n_outputs, sizes[-1], generator=g) * (1.0 / sizes[-1] ** 0.5)
            )
            self.readout.bias.zero_()
        self.readout_skip: nn.Linear | None = None
        if cfg.readout_skip:
            # Not meta-trained (no gradient): adaptation alone writes it.
            self.readout_skip = nn.Linear(cfg.n_inputs, cfg.n_outputs, bias=False)
            with torch.no_grad():
                self.readout_skip.weight.zero_()
            self.readout_skip.weight.requires_grad_(False)

    # -- weights as the chip sees them -------------------------------------------------

    def _effective(
        self, name: str, w: torch.Tensor, chip: ChipInstance | None, ste: bool
    ) -> torch.Tensor:
        if chip is None:
            return w
        return read_noise(self._programmed(name, w, chip, ste), chip)

    def _programmed(
        self, name: str, w: torch.Tensor, chip: ChipInstance, ste: bool
    ) -> torch.Tensor:
        """``w`` as programmed on ``chip``: quantised, stuck devices, mismatch, drift."""
        p = chip.profile
        scale_top = None
        if p.weight_bits is not None:
            scale_top = weight_step(w, p.weight_bits) * weight_levels(p.weight_bits)
            w = quantise_weight(w, p.weight_bits, ste)
        if p.stuck_at_zero_fraction > 0 or p.stuck_at_max_fraction > 0:
            top = scale_top if scale_top is not None else w.detach().abs().max()
            w = torch.where(chip.stuck_zero[name], torch.zeros_like(w), w)
            w = torch.where(chip.stuck_max[name], top * torch.sign(w.detach() + 1e-12), w)
        if p.mismatch_weight_sigma > 0:
            w = w * chip.weight_gain[name]
        if p.drift_nu > 0 and chip.age_s > 0:
            w = w * (1.0 + chip.age_s / p.drift_t0_s) ** (-chip.drift_nu[name])
        return w

    def effective_weight(
        self, name: str, w: torch.Tensor, chip: ChipInstance | None, ste: bool = True
    ) -> torch.Tensor:
        """``w`` (a candidate value of weight ``name``) as ``chip`` would apply it:
        quantised (straight-through with ``ste``), stuck devices, mismatch, drift, noise."""
        return self._effective(name, w, chip, ste)

    def effective_weights(self, chip: ChipInstance | None) -> dict[str, torch.Tensor]:
        """Every weight matrix as the chip would apply it (exact, no gradient)."""
        with torch.no_grad():
            return {n: self._effective(n, w, chip, False) for n, w in self._weights().items()}

    def _weights(self) -> dict[str, torch.Tensor]:
        ws: dict[str, torch.Tensor] = {
            f"layers.{i}.weight": self._linear(i).weight for i in range(len(self.layers))
        }
        for i, r in enumerate(self.recurrent):
            ws[f"recurrent.{i}"] = r
        ws["readout.weight"] = self.readout.weight
        if self.readout_skip is not None:
            ws["readout_skip.weight"] = self.readout_skip.weight
        return ws

    def _linear(self, i: int) -> nn.Linear:
        layer = self.layers[i]
        assert isinstance(layer, nn.Linear)
        return layer

    # -- forward -----------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        chip: ChipInstance | None = None,
        input_is_spikes: bool = False,
        n_steps: int | None = None,
        checked: bool = False,
    ) -> NetOutput:
        """Run ``x`` (``[T, B, n_inputs]``) through the chip; see the class docstring.
        ``checked``: ``x`` was encoded from samples the caller checked (finite, of the
        bundle's shape), so its values are not scanned again."""
        cfg = self.cfg
        if x.dim() != 3 or x.shape[2] != cfg.n_inputs:
            raise InputError(
                f"expected input [T, B, {cfg.n_inputs}] (time, batch, inputs), got {list(x.shape)}"
            )
        if not checked and not torch.isfinite(x).all():
            raise InputError("input holds NaN or infinite values")
        if n_steps is not None and n_steps < x.shape[0]:
            x = x[:n_steps]  # low-power mode: fewer time steps
        # Under torch.func transforms (meta-training's inner loops) tensors are wrapped,
        # and in-place updates of fresh buffers would not be seen through them.
        if torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
            return self.forward_stepwise(x, chip, input_is_spikes)
        return self._forward_inference(x, chip, input_is_spikes)

    def _rates(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Norse's per-step factors ``dt * tau_mem_inv`` and ``-dt * tau_syn_inv``."""
        cfg = self.cfg
        a_mem = cfg.dt_s * torch.as_tensor(cfg.tau_mem_inv, dtype=dtype)
        neg_b_syn = -cfg.dt_s * torch.as_tensor(cfg.tau_syn_inv, dtype=dtype)
        return a_mem, neg_b_syn

    def _forward_inference(
        self, x: torch.Tensor, chip: ChipInstance | None, input_is_spikes: bool
    ) -> NetOutput:
        """The exact forward without autograd: the reference's values, fused per layer
        (:mod:`regulator.chip.dynamics`), weights programmed once per weight change."""
        cfg = self.cfg
        profile = chip.profile if chip is not None else None
        t_steps = x.shape[0]
        a_mem, neg_b_syn = (float(r) for r in self._rates(x.dtype))
        p_fail = profile.transmission_failure_p if profile is not None else 0.0
        sigma_v = profile.noise_membrane_sigma if profile is not None else 0.0
        generator = chip.generator if chip is not None else None
        weights = self._chip_weights(chip)
        tally = EventTally()
        s = x
        spiking_in = input_is_spikes
        binary_in = False
        for li in range(len(self.layers)):
            w = weights[f"layers.{li}.weight"]
            cur = tally.synaptic_input(
                s, w, self._linear(li).bias, spiking_in, p_fail, chip, binary_in
            )
            params = LIFParams(
                a_mem=a_mem,
                neg_b_syn=neg_b_syn,
                v_th=cfg.v_th * (chip.threshold_scale[li] if chip is not None else 1.0),
                state_bits=profile.state_bits if profile is not None else None,
                state_range=profile.state_range if profile is not None else 1.0,
            )
            w_rec = weights.get(f"recurrent.{li}")
            normal = (
                params.state_bits is not None
                and w_rec is None
                and currents_normal(s, binary_in, w, self._linear(li).bias)
            )
            s, _ = lif_sequence_(cur, params, w_rec, sigma_v, generator, normal)
            spiking_in = binary_in = True
            tally.layer_spikes(s, w_rec)
        cur = tally.synaptic_input(
            s, weights["readout.weight"], self.readout.bias, True, p_fail, chip, True
        )
        w_skip = weights.get("readout_skip.weight")
        if w_skip is not None:
            skip = tally.synaptic_input(
                x, w_skip, None, input_is_spikes, p_fail, chip, False, False
            )
            cur = cur.add_(skip)
        outputs = li_mean(cur, li_kernel(t_steps, a_mem, neg_b_syn, x.dtype))
        return NetOutput(outputs, tally.counts(), self._telemetry(x, weights, tally), s)

    def _chip_weights(self, chip: ChipInstance | None) -> dict[str, torch.Tensor]:
        """Every weight as ``chip`` applies it in this forward: programmed (cached until
        the weight, the chip or its age changes) plus this read's noise."""
        ws = self._weights()
        if chip is None:
            return ws
        return {
            n: read_noise(self._cache.get(n, w, chip, self._program), chip) for n, w in ws.items()
        }

    def _program(self, name: str, w: torch.Tensor, chip: ChipInstance) -> torch.Tensor:
        with torch.no_grad():
            return self._programmed(name, w, chip, False)

    def forward_stepwise(
        self, x: torch.Tensor, chip: ChipInstance | None, input_is_spikes: bool
    ) -> NetOutput:
        """The forward step by step on checked input ``x`` (``[T, B, n_inputs]``): the
        definition. With autograd it is differentiable (straight-through quantisation,
        SuperSpike surrogate) and :meth:`forward` runs it; without, :meth:`forward` runs a
        fused path that gives the same spikes and telemetry, and readout outputs equal
        up to float rounding (tests and ``bench/chip.py`` compare the two)."""
        cfg = self.cfg
        grad = torch.is_grad_enabled()
        profile = chip.profile if chip is not None else None
        t_steps, batch = x.shape[0], x.shape[1]
        a_mem, neg_b_syn = self._rates(x.dtype)  # Norse: dt * p.tau_mem_inv * (...)
        v_leak = torch.as_tensor(0.0, dtype=x.dtype)
        p_fail = profile.transmission_failure_p if profile is not None else 0.0
        sigma_v = profile.noise_membrane_sigma if profile is not None else 0.0
        state_bits = profile.state_bits if profile is not None else None
        state_range = profile.state_range if profile is not None else 1.0

        weights = {n: self._effective(n, w, chip, grad) for n, w in self._weights().items()}
        tally = EventTally()
        s = x
        spiking_in = input_is_spikes
        for li in range(len(self.layers)):
            w = weights[f"layers.{li}.weight"]
            cur = tally.synaptic_input(s, w, self._linear(li).bias, spiking_in, p_fail, chip)
            w_rec = weights.get(f"recurrent.{li}")
            v_th = cfg.v_th * (chip.threshold_scale[li] if chip is not None else 1.0)
            n = w.shape[0]
            v = torch.zeros(batch, n, dtype=x.dtype)
            i = torch.zeros(batch, n, dtype=x.dtype)
            z = torch.zeros(batch, n, dtype=x.dtype)
            zs = []
            for t in range(t_steps):
                inp = cur[t]
                if w_rec is not None:
                    inp = inp + z @ w_rec.t()
                i = i + inp
                v = v + a_mem * ((v_leak - v) + i)
                i = i + neg_b_syn * i
                if sigma_v > 0 and chip is not None:
                    v = v + torch.randn(v.shape, generator=chip.generator) * sigma_v
                if state_bits is not None:
                    v = quantise_state(v, state_bits, state_range, grad)
                    i = quantise_state(i, state_bits, state_range, grad)
                if grad:
                    z = norse_threshold(v - v_th, "super", cfg.surrogate_alpha)
                else:
                    z = (v - v_th > 0).to(x.dtype)
                v = (1 - z) * v
                zs.append(z)
            s = torch.stack(zs)
            spiking_in = True
            tally.layer_spikes(s, w_rec)
        # Leaky-integrator readout (Norse li_feed_forward_step), mean membrane over time.
        cur = tally.synaptic_input(
            s, weights["readout.weight"], self.readout.bias, True, p_fail, chip
        )
        w_skip = weights.get("readout_skip.weight")
        if w_skip is not None:
            cur = cur + tally.synaptic_input(
                x, w_skip, None, input_is_spikes, p_fail, chip, False, False
            )
        v = torch.zeros(batch, cfg.n_outputs, dtype=x.dtype)
        i = torch.zeros_like(v)
        v_sum = torch.zeros_like(v)
        for t in range(t_steps):
            i = i + cur[t]
            v = v + a_mem * ((v_leak - v) + i)
            i = i + neg_b_syn * i
            v_sum = v_sum + v
        outputs = v_sum / t_steps
        return NetOutput(outputs, tally.counts(), self._telemetry(x, weights, tally), s)

    def _telemetry(
        self, x: torch.Tensor, weights: dict[str, torch.Tensor], tally: EventTally
    ) -> Telemetry:
        cfg = self.cfg
        t_steps, batch = x.shape[0], x.shape[1]
        neurons = tuple(int(n) for n in cfg.hidden)
        total_neurons = sum(neurons) + cfg.n_outputs
        macs = dense_macs(x, weights, cfg) * batch
        return Telemetry(
            batch_size=batch,
            n_steps=t_steps,
            layer_names=tuple(f"hidden{k}" for k in range(len(neurons))),
            neurons_per_layer=neurons,
            spikes_per_layer=tuple(tally.spikes_per_layer),
            synaptic_ops=tally.syn_ops,
            neuron_updates=float(total_neurons * t_steps * batch),
            active_neuron_updates=tally.active,
            spikes_routed=float(sum(tally.spikes_per_layer)),
            dense_macs=float(macs),
            extra={"synaptic_events_dropped": tally.dropped},
        )
