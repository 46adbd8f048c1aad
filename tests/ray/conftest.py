"""A real two-node Ray cluster on this machine, for the tests of `squall run --ray`.

The head (`ray start --head --num-cpus 2`) and a second node joined to it (`--num-cpus 1`)
run as `ray start --block` in process groups of their own, with a temp dir of their own, so
the teardown stops exactly the processes this fixture started. `ray stop --force` is not
used: it kills every Ray process of the machine (it matches processes by name, not by temp
dir), and this machine is shared.

The tests reach squall's CLI helpers (`tests/cli/cli_support.py`) by putting `tests/cli` on
`sys.path` here; mypy finds them through `tests/_mypy_path/cli_support.pyi`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
CLI_TESTS = Path(__file__).resolve().parents[1] / "cli"
if str(CLI_TESTS) not in sys.path:
    sys.path.insert(0, str(CLI_TESTS))

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cluster_env() -> dict[str, str]:
    """Return the environment for Ray's processes and for squall runs against the cluster.

    PYTHONPATH puts this tree's `src` first, so the workers Ray starts import the same squall
    as the test; RAY_AUTH_MODE=disabled keeps Ray from asking for a token.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class RayNode:
    """One `ray start --block` process (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def started(self) -> bool:
        """Return whether the node's log says the runtime is up."""
        try:
            return "Ray runtime started" in self.log.read_text(errors="replace")
        except FileNotFoundError:
            return False


@dataclass
class RayCluster:
    """A running local cluster: `address` is what `--ray` is given."""

    address: str
    temp_dir: Path
    nodes: list[RayNode]
    cpus: int


def _ray_executable() -> str:
    found = shutil.which("ray", path=os.path.dirname(sys.executable))
    return found or "ray"


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> RayNode:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_ray_executable(), "start", *args, "--block"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: the teardown kills only it
        )
    node = RayNode(proc, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not node.started():
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:]
            _stop_node(node)
            raise RuntimeError(f"`ray start {' '.join(args)}` did not come up:\n{text}")
        time.sleep(0.2)
    return node


def _stop_node(node: RayNode) -> None:
    pgid = node.proc.pid  # start_new_session: the group's id is the leader's pid
    if node.proc.poll() is None:
        # `ray start --block` stops the processes it started on SIGTERM.
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)  # whatever of the group is left


def _kill_leftovers(temp_dir: Path) -> None:
    """SIGKILL any process whose command line names this cluster's own temp dir."""
    try:
        import psutil
    except ImportError:
        return
    me = str(temp_dir)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(me in part for part in proc.info["cmdline"] or ()):
                proc.kill()


def _stop_cluster(nodes: list[RayNode], temp_dir: Path) -> None:
    ray = sys.modules.get("ray")
    if ray is not None:
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ray.shutdown()
    for node in reversed(nodes):
        _stop_node(node)
    nodes.clear()
    _kill_leftovers(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


_RUNNING: list[RayCluster] = []
"""The cluster while it runs: stopped after the last test of tests/ray (see the hook below)."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """Yield a head (2 CPUs) and a second node (1 CPU) joined to it, on 127.0.0.1."""
    pytest.importorskip("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="sqr-", dir="/tmp"))
    env = cluster_env()
    port = _free_port()
    common = ["--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    common += ["--object-store-memory", str(150 * 1024 * 1024)]
    common += ["--temp-dir", str(temp_dir)]
    nodes: list[RayNode] = []
    try:
        head = [
            *("--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false"),
            *("--dashboard-port", str(_free_port())),
            *("--dashboard-agent-listen-port", str(_free_port())),
        ]
        nodes.append(_start_node([*head, *common], temp_dir / "head.log", env))
        second = [
            *("--address", f"127.0.0.1:{port}", "--num-cpus", "1"),
            *("--dashboard-agent-listen-port", str(_free_port())),
        ]
        nodes.append(_start_node([*second, *common], temp_dir / "node2.log", env))
        cluster = RayCluster(f"127.0.0.1:{port}", temp_dir, nodes, cpus=3)
        _RUNNING.append(cluster)
        yield cluster
    finally:
        _RUNNING.clear()
        _stop_cluster(nodes, temp_dir)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the cluster once the next test is not one of tests/ray: the rest of a full run
    does not share the machine with an idle Ray cluster."""
    here = Path(__file__).resolve().parent
    if _RUNNING and (nextitem is None or here not in Path(nextitem.path).resolve().parents):
        cluster = _RUNNING.pop()
        _stop_cluster(cluster.nodes, cluster.temp_dir)


@pytest.fixture(scope="session")
def ray_address(ray_cluster: RayCluster) -> str:
    """Return the running cluster's address, as `--ray` takes it (`127.0.0.1:PORT`)."""
    return ray_cluster.address


@pytest.fixture(autouse=True)
def _ray_disconnected() -> Iterator[None]:
    """Leave this process disconnected from Ray after each test (a run may have connected it)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        with contextlib.suppress(Exception):
            ray.shutdown()


@pytest.fixture
def ray_env() -> dict[str, str]:
    """Return the environment for a `squall` subprocess run against the cluster."""
    env = cluster_env()
    env.update({"NO_COLOR": "1", "COLUMNS": "240"})
    for name in list(env):
        if name.startswith(("SQUALL_", "OPENAI_")):
            del env[name]
    return env
