"""Connecting to Ray and starting a run's actors: the only module that imports Ray itself.

`connect("local")` starts a Ray instance on this machine (as `ray.init()` does); `"auto"`
joins the running cluster (`RAY_ADDRESS`, or the one `ray start` made here); any other
value is a cluster address (`127.0.0.1:6379`, `ray://head:10001`). The actors are named in
the "squall" namespace (`squall-coordinator-<run>`, `squall-worker-<run>-<n>`), so the Ray
dashboard shows them by name.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError, MissingExtraError
from .actors import Coordinator, Worker, WorkerSetup
from .budget import KeyBudget

NAMESPACE = "squall"


def ray_module() -> Any:
    """Return the `ray` module.

    Raises:
        MissingExtraError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--ray", "ray", "ray") from None
    return ray


def connect(address: str) -> Any:
    """Connect to (or start) the Ray cluster `address` names; return the `ray` module.

    Raises:
        MissingExtraError: Ray is not installed.
        ConfigError: no cluster answers at `address`.
    """
    ray = ray_module()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance asks for no token
    try:
        if address == "local":
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--ray {address}: cannot connect to a Ray cluster there ({exc}): start one with "
            "`ray start --head`, pass its address, or use --ray local"
        ) from exc
    return ray


def cluster_cpus(ray: Any) -> int:
    """Return the CPUs the cluster has (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def start_coordinator(ray: Any, run_id: str, keys: list[KeyBudget]) -> Any:
    """Start the run's coordinator actor; return its handle."""
    cls = ray.remote(num_cpus=0)(Coordinator)
    return cls.options(name=f"squall-coordinator-{run_id}", namespace=NAMESPACE).remote(keys)


def start_worker(
    ray: Any, run_id: str, number: int, setup: WorkerSetup, coordinator: Any, cpus: float = 1.0
) -> Any:
    """Start worker `number` of the run, asking Ray for `cpus`; return its handle."""
    cls = ray.remote(num_cpus=cpus, max_restarts=0)(Worker)
    name = f"squall-worker-{run_id}-{number}"
    return cls.options(name=name, namespace=NAMESPACE).remote(setup, coordinator, number)
