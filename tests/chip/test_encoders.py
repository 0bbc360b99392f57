"""Encoders: shapes, rates and send-on-delta coding."""

from __future__ import annotations

import pytest
import torch

from regulator.chip.encoders import make_encoder
from regulator.errors import ConfigError, UnknownNameError


@pytest.mark.parametrize(("name", "lines"), [("current", 3), ("poisson", 6), ("delta", 6)])
@pytest.mark.parametrize("length", [1, 7, 50])
def test_shapes(name: str, lines: int, length: int) -> None:
    enc = make_encoder(name)
    assert enc.n_inputs(3) == lines
    out = enc.encode(torch.rand(4, 3, length), n_steps=20, generator=torch.Generator())
    assert out.shape == (20, 4, lines)
    if enc.spiking:
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_poisson_rate_matches_probability() -> None:
    enc = make_encoder("poisson", rate=0.5)
    x = torch.full((200, 1, 1), 0.6)
    out = enc.encode(x, n_steps=100, generator=torch.Generator().manual_seed(0))
    assert out[..., 0].mean().item() == pytest.approx(0.3, abs=0.01)
    assert out[..., 1].sum() == 0  # no OFF spikes for a positive value


def test_delta_coding_tracks_the_signal() -> None:
    enc = make_encoder("delta", threshold=0.1)
    t = torch.linspace(0, 1, 64)
    x = torch.sin(2 * torch.pi * t).reshape(1, 1, -1)
    out = enc.encode(x, n_steps=64)
    recon = 0.1 * torch.cumsum(out[:, 0, 0] - out[:, 0, 1], dim=0)
    # The signal moves less than one threshold per step, so one event per step keeps
    # the reconstruction within a threshold (plus float slack).
    assert (recon - x[0, 0]).abs().max() <= 0.1 + 1e-5
    assert out[:, 0, 0].sum() > 0 and out[:, 0, 1].sum() > 0
    # A step to 1.0 with threshold 0.25: four ON events (one per step), then silence.
    step = make_encoder("delta").encode(torch.ones(2, 3, 10), n_steps=10)
    assert step[:4, :, :3].min() == 1 and step[4:].sum() == 0 and step[..., 3:].sum() == 0


def test_bad_encoder_names_and_values() -> None:
    with pytest.raises(UnknownNameError, match="valid: binned, current, delta, poisson"):
        make_encoder("rank")
    with pytest.raises(ConfigError, match="rate"):
        make_encoder("poisson", rate=2.0)
    with pytest.raises(ConfigError, match="bad configuration"):
        make_encoder("current", width=1.0)


def test_binned_encoder_lines_hold_and_dead_zone() -> None:
    from regulator.chip.encoders import BinnedEncoder

    x = torch.tensor([[[1.0, 1.0, 3.0, 3.0], [0.1, 0.1, -2.0, -2.0]]])  # [B=1, C=2, L=4]
    enc = BinnedEncoder(n_bins=2, hold_steps=2, dead_zone=0.5)
    out = enc.encode(x, n_steps=5)
    assert enc.n_inputs(2) == 4 and out.shape == (5, 1, 4)
    # channel-major lines: (c0 b0, c0 b1, c1 b0, c1 b1); 0.1 sits in the dead zone
    assert out[0, 0].tolist() == [1.0, 3.0, 0.0, -2.0]
    assert torch.equal(out[1], out[0]) and not out[2:].any()
    cfg = {k: float(v) for k, v in enc.config().items() if k != "name"}
    assert make_encoder("binned", **cfg).config() == enc.config()
    with pytest.raises(ConfigError):
        BinnedEncoder(n_bins=0)
