"""`squall demo`: a practice run against a local SIMULATED provider, no account needed.

The simulator (squall.simulator) is not a model: it answers arithmetic exactly and echoes a
hash otherwise. It has three keys of uneven limits (600, 300 and 120 requests per minute),
0.1-0.3 s latency, 2% server errors and 1% dropped connections, so a newcomer sees the pool
spread work by each key's limit, retries absorb faults, and a rerun resume after Ctrl-C.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from .evals.arithmetic import generate_items
from .simulator import Simulator, demo_config

_CONFIG = """\
# squall demo config: a local SIMULATED provider on {url}
model = "demo-model"

[[endpoints]]
name = "sim"
base_url = "{url}"
max_concurrency = 16
keys = [
  {{ key = "${{DEMO_KEY_A}}", rpm = 600 }},
  {{ key = "${{DEMO_KEY_B}}", rpm = 300 }},
  "${{DEMO_KEY_C}}",   # no limit declared: squall finds it (watch for a few 429s)
]

[prices."demo-model"]   # USD per 1M tokens, for the cost line
input = 0.15
output = 0.60
"""


def run_demo(*, rows: int, workdir: Path, restart: bool) -> int:
    """Serve the simulator, run `rows` arithmetic prompts through it, return the exit code."""
    from .api import run

    console = Console(stderr=True, highlight=False)
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = workdir / "prompts.jsonl"
    items = generate_items(rows, seed=0)
    lines = "".join(
        json.dumps({"id": it.id, "expression": it.expression, "expected": it.expected}) + "\n"
        for it in items
    )
    if restart or not prompts.exists() or prompts.read_text() != lines:
        prompts.write_text(lines)
    sim_cfg = demo_config()
    keys = {f"DEMO_KEY_{c}": k.key for c, k in zip("ABC", sim_cfg.keys, strict=True)}
    with Simulator(sim_cfg) as sim:
        config = workdir / "squall.toml"
        config.write_text(_CONFIG.format(url=sim.base_url))
        os.environ.update(keys)
        console.print(
            f"[bold]squall demo[/]: {rows} arithmetic prompts -> a local [yellow]SIMULATED[/] "
            f"provider at {sim.base_url} (3 keys: 600, 300 and ~120 rpm, faults on purpose).\n"
            "Press Ctrl-C any time, then run [bold]squall demo[/] again: it resumes, and "
            "nothing answered is requested twice."
        )
        result = run(
            str(prompts),
            output=workdir / "results.jsonl",
            config=config,
            template="{expression}",
            restart=restart,
        )
    console.print(result.summary)
    if result.summary.status == "interrupted":
        console.print("[yellow]interrupted[/]: run [bold]squall demo[/] again to resume.")
    else:
        right = 0
        with open(workdir / "results.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                right += row["response"] is not None and row["response"].strip() == str(
                    row["expected"]
                )
        console.print(
            f"{right}/{rows} answers checked right. Files in {workdir}/: prompts.jsonl, "
            "squall.toml, results.jsonl, and the journal results.jsonl.squall.sqlite "
            f"(`squall status {workdir}/results.jsonl.squall.sqlite`)."
        )
    return result.exit_code
