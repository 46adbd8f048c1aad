"""squall in Jupyter: a real notebook, run by nbclient on a real ipykernel, calls squall.run
(inside the kernel's running event loop) and `await squall.arun(...)`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from squall.simulator import SimConfig, SimKey, Simulator, expected_answer

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

KEY = "sk-nb-NOTEBOOKKEY99998888aaaa"
KERNEL = "squall-test-python"
SimulatorFactory = Callable[..., Simulator]


def _setup(url: str, workdir: Path) -> str:
    return f"""
import math, os
os.chdir({str(workdir)!r})
import squall
cfg = squall.RunConfig(
    model="sim-model",
    endpoints=(squall.EndpointConfig(name="sim", base_url={url!r},
               keys=(squall.KeyConfig(key={KEY!r}),), rpm=math.inf),),
)
prompts = [f"what is {{i}} + 3 x {{i}}?" for i in range(20)]
"""


RUN_CELL = """
res = squall.run(prompts, output="sync.jsonl", config=cfg)
print(res.summary)
print("answers:", [r["response"] for r in res.rows()])
"""

VALUE_CELL = """
res
"""

ARUN_CELL = """
res2 = await squall.arun(prompts, output="async.jsonl", config=cfg)
print(res2.summary)
print("async answers:", [r["response"] for r in res2.rows()])
"""


def _stdout(cell: object) -> str:
    outputs = getattr(cell, "outputs", None) or cell["outputs"]  # type: ignore[index]  # nbformat nodes are dicts
    return "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")


@pytest.mark.timeout(180)
def test_notebook_runs_squall_run_and_arun(
    tmp_path: Path, simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),)))
    # A kernelspec of this interpreter (sys.executable) in a private folder: no
    # `ipykernel install` needed.
    prefix = tmp_path / "jupyter"
    kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    src = str(Path(__file__).resolve().parent.parent / "src")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    )

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(_setup(sim.base_url, tmp_path)),
        nbformat.v4.new_code_cell(RUN_CELL),
        nbformat.v4.new_code_cell(ARUN_CELL),
        nbformat.v4.new_code_cell(VALUE_CELL),
    ]
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=120, allow_errors=False)
    client.execute(cwd=str(tmp_path))

    expected = [expected_answer(f"what is {i} + 3 x {i}?") for i in range(20)]
    sync_out = _stdout(nb.cells[1])
    assert "status: completed" in sync_out
    assert "rows: 20 total, 20 done, 0 failed, 0 pending" in sync_out
    assert f"answers: {expected!r}" in sync_out
    async_out = _stdout(nb.cells[2])
    assert "rows: 20 total, 20 done, 0 failed, 0 pending" in async_out
    assert f"async answers: {expected!r}" in async_out
    assert KEY not in sync_out + async_out
    assert sim.served_count() == 40

    # The live display is one HTML output that was updated in place, not lines on stderr;
    # its last state shows the finished count.
    live = _html(nb.cells[1])
    assert len(live) == 1 and "20/20" in live[0]
    assert "squall: 20/20 done" not in _stderr(nb.cells[1])
    # A result as a cell's value: a short text repr and the account as HTML.
    value = next(o for o in nb.cells[3]["outputs"] if o.get("output_type") == "execute_result")
    assert value["data"]["text/plain"].startswith("RunResult(completed: 20/20 done")
    assert "20 done" in value["data"]["text/html"]
    assert KEY not in value["data"]["text/html"]


def _html(cell: object) -> list[str]:
    outputs = cell["outputs"]  # type: ignore[index]  # nbformat nodes are dicts
    return [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]


def _stderr(cell: object) -> str:
    outputs = cell["outputs"]  # type: ignore[index]  # nbformat nodes are dicts
    return "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
