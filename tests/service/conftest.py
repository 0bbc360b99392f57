"""Fixtures for service tests: a tiny meta-trained prior, policy files, real daemons.

The prior is trained once per session into a temporary folder (about 3 s on one core),
so these tests neither wait for nor depend on the shipped ``models/nanosensor``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small nanosensor prior (32 hidden neurons, 16 steps, 30 meta-iterations)."""
    import torch

    from regulator.meta.train import TrainConfig, build_trainer, finalise, train_steps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tr = build_trainer(TrainConfig(iterations=30, meta_batch=4, hidden=(32,), n_steps=16))
        train_steps(tr, 30, progress=False)
        folder = tmp_path_factory.mktemp("prior") / "tiny-nanosensor"
        finalise(tr).save(folder)
    finally:
        torch.set_num_threads(threads)
    return folder


def policy_dict(prior: Path, **sections: Any) -> dict[str, Any]:
    """A quiet test policy: steady simulated source, no rules, overridable by section."""
    data: dict[str, Any] = {
        "device": {"id": "dev-test", "profile": "loihi", "seed": 0},
        "model": {"prior": str(prior)},
        "source": {
            "kind": "simulated",
            "family": "nanosensor",
            "rate_hz": 20,
            "schedule": {"kind": "none"},
            "label_fraction": 0.5,
            "label_delay_samples": 2,
        },
        "rules": [],
        "recalibration": {"k_shot": 3, "holdout_per_class": 2, "max_per_hour": 60, "timeout_s": 20},
        "logging": {"level": "INFO"},
    }
    data.update(sections)
    return data


def write_policy(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    """``python -m regulator.cli run`` in a child process, with an HTTP client on it."""

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        log_path: Path,
        token: str | None = TOKEN,
        extra_env: dict[str, str] | None = None,
    ):
        self.extra_env = dict(extra_env or {})
        self.config = config
        self.state_dir = state_dir
        self.log_path = log_path
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    def start(self) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("REGULATOR_TOKEN", "NOTIFY_SOCKET")}
        if self.token is not None:
            env["REGULATOR_TOKEN"] = self.token
        env.update(self.extra_env)
        cmd = [
            sys.executable,
            "-m",
            "regulator.cli",
            "run",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/readyz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready within {timeout} s:\n{self.log_tail()}")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {**self.auth(), **kw.pop("headers", {})}
        if body is None:
            return self.client.post(path, headers=headers, **kw)
        return self.client.post(path, json=body, headers=headers, **kw)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every exposed sample: ``(name, sorted labels) -> value``."""
        from prometheus_client.parser import text_string_to_metric_families

        # no-cache: a render after this call, never a shared one from before it
        resp = self.client.get("/metrics", headers={"Cache-Control": "no-cache"})
        resp.raise_for_status()
        out = {}
        for fam in text_string_to_metric_families(resp.text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.metrics().items() if n == name and want <= set(lab))

    def events(self) -> list[dict[str, Any]]:
        path = self.state_dir / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self.client.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def wait_for(cond: Any, timeout: float, every: float = 0.2, what: str = "condition") -> Any:
    """Poll ``cond()`` until truthy; return its value or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    """A factory ``daemons(policy_dict_or_path, state_dir=None) -> DaemonProcess`` (started,
    ready); every daemon it made is killed at the end of the test."""
    made: list[DaemonProcess] = []

    def make(
        policy: dict[str, Any] | Path,
        state_dir: Path | None = None,
        ready: bool = True,
        token: str | None = TOKEN,
    ) -> DaemonProcess:
        i = len(made)
        cfg = (
            policy
            if isinstance(policy, Path)
            else write_policy(tmp_path / f"policy{i}.yaml", policy)
        )
        d = DaemonProcess(cfg, state_dir or tmp_path / "state", tmp_path / f"daemon{i}.log", token)
        made.append(d)
        d.start()
        if ready:
            d.wait_ready()
        return d

    try:
        yield make
    finally:
        for d in made:
            d.close()
