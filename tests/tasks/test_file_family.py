from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regulator.errors import ConfigError, InputError
from regulator.tasks import Environment, make_family
from regulator.tasks.file_family import FileFamily
from regulator.tasks.formats import LabelledData, save_npz


@pytest.fixture
def rec(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 4, 1)) + 5.0 * y[:, None, None]
    p = tmp_path / "rec.npz"
    save_npz(p, x, y)
    return str(p)


def test_nominal_environment_returns_file_rows(rec: str) -> None:
    fam = FileFamily(rec)
    x, y = fam.sample(fam.nominal_environment(), 30, np.random.default_rng(0))
    rows = {tuple(r) for r in fam.data.x[:, :, 0].tolist()}
    assert all(tuple(r) in rows for r in x[:, :, 0].tolist())
    for xi, yi in zip(x, y, strict=True):
        assert fam.data.y[np.flatnonzero((fam.data.x == xi).all(axis=(1, 2)))[0]] == yi


def test_seeded_environment_reproduces_and_config_rebuilds(rec: str) -> None:
    fam = make_family("file", path=rec)
    env = fam.sample_environment(np.random.default_rng(5))
    assert fam.environment_from_seed(env.seed) == env
    again = make_family("file", **fam.config())
    assert again.environment_from_seed(env.seed) == env


def test_gain_offset_and_dropout_act_per_feature(rec: str) -> None:
    fam = FileFamily(rec)
    p = fam.nominal_environment().params | {"f0_gain": 2.0, "f1_offset": 3.0, "f2_alive": 0.0}
    env = Environment(family="file", params=p, seed=-1)
    classes = np.zeros(10, dtype=np.int64)
    x0, _ = fam.sample(fam.nominal_environment(), 10, np.random.default_rng(0), classes=classes)
    x1, _ = fam.sample(env, 10, np.random.default_rng(0), classes=classes)
    np.testing.assert_allclose(x1[:, 0], 2 * x0[:, 0], rtol=1e-6)
    np.testing.assert_allclose(x1[:, 1], x0[:, 1] + 3.0, rtol=1e-6)
    assert np.all(x1[:, 2] == 0.0)
    np.testing.assert_array_equal(x1[:, 3], x0[:, 3])


def test_class_gain_changes_only_that_class(rec: str) -> None:
    fam = FileFamily(rec)
    p = fam.nominal_environment().params | {"class1_group0_gain": 3.0}
    env = Environment(family="file", params=p, seed=-1)
    c = np.array([0, 1])
    x0, _ = fam.sample(fam.nominal_environment(), 2, np.random.default_rng(0), classes=c)
    x1, _ = fam.sample(env, 2, np.random.default_rng(0), classes=c)
    np.testing.assert_array_equal(x1[0], x0[0])
    np.testing.assert_allclose(x1[1, 0], 3 * x0[1, 0], rtol=1e-6)


def test_more_steps_drift_further(rec: str) -> None:
    fam = FileFamily(rec, max_steps=50)
    envs = [fam.environment_from_seed(s) for s in range(60)]
    spread = [
        (e.params["drift_steps"], np.std([np.log(e.params[f"f{i}_gain"]) for i in range(4)]))
        for e in envs
    ]
    near = [s for k, s in spread if k <= 10]
    far = [s for k, s in spread if k >= 40]
    assert np.mean(far) > np.mean(near)


def test_fit_drift_recovers_a_known_gain_walk() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 200)
    x = rng.uniform(1.0, 2.0, size=(400, 200, 1)) * (1 + y[:, None, None])
    sessions = [LabelledData(x, y)]
    for _ in range(3):
        g = np.exp(rng.normal(0.0, 0.2, size=(1, 200, 1)))
        sessions.append(LabelledData(sessions[-1].x * g, y))
    fit = FileFamily.fit_drift(sessions)
    assert 0.15 < fit["gain_step"] < 0.25
    assert fit["class_gain_step"] < 0.05


def test_errors(rec: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileFamily(rec, gain_step=-1.0)
    p = tmp_path / "reg.npz"
    save_npz(p, np.ones((3, 2, 1)), np.array([0.5, 1.5, 2.5]))
    with pytest.raises(ConfigError, match="integer labels"):
        FileFamily(str(p))
    q = tmp_path / "gap.npz"
    save_npz(q, np.ones((2, 2, 1)), np.array([0, 2]))
    with pytest.raises(InputError, match="no samples of class 1"):
        FileFamily(str(q)).sample(
            FileFamily(str(q)).nominal_environment(), 1, np.random.default_rng(0), np.array([1])
        )


def test_works_on_gas_drift_batch1(gas_drift_dir: Path) -> None:
    fam = make_family("file", path=str(gas_drift_dir / "batch1.dat"), group_size=8)
    assert (fam.n_channels, fam.length, fam.n_outputs) == (128, 1, 6)
    ep = fam.episode(
        fam.sample_environment(np.random.default_rng(0)), 2, 12, np.random.default_rng(1)
    )
    assert ep.support_x.shape == (12, 128, 1) and np.all(np.isfinite(ep.support_x))
