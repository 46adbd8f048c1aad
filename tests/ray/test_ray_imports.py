"""Ray stays out of a local run, and `--ray` without Ray says how to install it.

Both run squall in a fresh interpreter (a subprocess), so what this test process imported
says nothing about what squall imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from cli_support import KEY1, SimProcess, one_line, sim_factory, write_config, write_jsonl

from squall.simulator import SimConfig, SimKey

pytestmark = [pytest.mark.ray, pytest.mark.timeout(60)]

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def plain_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    make, started = sim_factory(tmp_path_factory.mktemp("ray-imports-sim"))
    yield make(SimConfig(keys=(SimKey(key=KEY1),)))
    for sim in reversed(started):
        sim.stop()


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports this tree's squall."""
    env = {"PYTHONPATH": str(SRC), "NO_COLOR": "1", "COLUMNS": "240", "K1": KEY1}
    for name in ("PATH", "HOME", "LANG", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


def test_a_local_run_never_imports_ray(tmp_path: Path, plain_sim: SimProcess) -> None:
    res = python(
        f"""
        import sys
        import squall
        from squall.config import EndpointConfig, KeyConfig, RunConfig
        from squall.redact import ApiKey

        config = RunConfig(
            model="sim-model",
            endpoints=(EndpointConfig(
                name="sim", base_url={plain_sim.url!r}, keys=(KeyConfig(key=ApiKey({KEY1!r})),),
                rpm=float("inf"),
            ),),
            progress="off",
        )
        result = squall.run([f"what is {{i}} + 1?" for i in range(20)], output="out.jsonl",
                            config=config)
        assert result.exit_code == 0, result.summary
        assert len(list(result.rows())) == 20
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        assert not loaded, loaded
        print("no ray")
        """,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no ray" in res.stdout


def test_ray_without_ray_installed_says_how_to_install_it(
    tmp_path: Path, plain_sim: SimProcess
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "what is 1 + 1?"}])
    write_config(tmp_path / "squall.toml", plain_sim.url)
    served_before = len(plain_sim.ledger())
    res = python(
        """
        import sys
        sys.modules["ray"] = None  # `import ray` now raises ImportError, as when not installed
        from squall.cli import main
        sys.argv = ["squall", "run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml",
                    "--ray", "local", "--progress", "plain"]
        main()
        """,
        tmp_path,
    )
    text = one_line(res.stderr + res.stdout)
    assert res.returncode != 0, text
    assert 'pip install "squall[ray]"' in text, text
    assert "Traceback" not in text, text
    assert len(plain_sim.ledger()) == served_before  # nothing was sent
