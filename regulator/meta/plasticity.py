"""A meta-learned three-factor plasticity rule for the readout.

For readout synapse (i, j) the update reads only what a synapse on a chip can see:

- the pre-synaptic trace ``pre_j``: neuron j's spikes filtered with a learned decay
  ``lambda`` per step (a low-pass counter next to the synapse);
- the post-synaptic activity ``post_i``: output neuron i's normalised activity;
- a global third factor ``m_i``: the error broadcast to output neuron i
  (target minus activity), as a neuromodulator would.

``dW_ij = eta * (a * m_i + b * post_i) * pre_j`` and ``db_i = eta * c * m_i``, with
``eta, a, b, c, lambda`` meta-learned (Schmidgall & Hays 2023, Meta-SpikePropamine).
There is no backpropagation through time and no weight transport.
"""

from __future__ import annotations

import torch


def pre_trace(last_spikes: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``[B, H]``: spikes ``[T, B, H]`` filtered with ``decay`` per step, read at the end."""
    t = last_spikes.shape[0]
    powers = decay ** torch.arange(t - 1, -1, -1, dtype=last_spikes.dtype)
    return torch.einsum("t,tbh->bh", powers, last_spikes) * (1 - decay)


def three_factor_update(
    pre: torch.Tensor,
    post: torch.Tensor,
    modulator: torch.Tensor,
    coefs: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias updates from local traces and the global modulator.

    ``pre [B, H]``, ``post [B, K]``, ``modulator [B, K]``; batch-averaged updates
    ``dW [K, H]`` and ``db [K]``.

    >>> pre = torch.tensor([[1.0, 0.0]]); post = torch.tensor([[0.5]]); m = torch.tensor([[1.0]])
    >>> c = {"log_lr": torch.tensor(0.0), "coef_mod": torch.tensor(1.0),
    ...      "coef_hebb": torch.tensor(0.0), "coef_bias": torch.tensor(1.0)}
    >>> dw, db = three_factor_update(pre, post, m, c)
    >>> dw.tolist(), db.tolist()
    ([[1.0, 0.0]], [1.0])
    """
    eta = coefs["log_lr"].exp()
    factor = coefs["coef_mod"] * modulator + coefs["coef_hebb"] * post  # [B, K]
    dw = eta * torch.einsum("bk,bh->kh", factor, pre) / pre.shape[0]
    db = eta * coefs["coef_bias"] * modulator.mean(0)
    return dw, db
