"""One session of a planned run on Ray: the wiring, as `squall.runner` does it locally.

Imported by the runner only when `--ray` is given, so a local run never imports Ray.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Mapping

from ..clock import Clock
from ..config import RunConfig
from ..engine import EngineOutcome
from ..events import KeyStats, RunStats
from ..interrupts import Interrupts
from ..journal import Journal
from ..plan import Plan
from ..pool import iter_keys
from ..progress import Mode, Progress
from ..records import RequestSpec
from ..transport import Target
from .actors import WorkerSetup
from .budget import KeyBudget
from .cluster import cluster_cpus, connect
from .driver import RayDriver

MAX_DEFAULT_WORKERS = 8


def key_budgets(cfg: RunConfig, models: Mapping[str, str]) -> dict[str, KeyBudget]:
    """Return every key's limits as the cluster's coordinator holds them."""
    out = {}
    for key_id, ep, key in iter_keys(cfg):
        rpm = key.rpm if key.rpm is not None else ep.rpm
        tpm = key.tpm if key.tpm is not None else ep.tpm
        out[key_id] = KeyBudget(
            key_id,
            ep.name,
            models[ep.name],
            rpm=rpm,
            tpm=None if tpm is None or math.isinf(tpm) else tpm,
            concurrency=key.max_concurrency or ep.max_concurrency,
            pinned=ep.model is not None,
            masked=key.key.masked,
        )
    return out


def _todo(jr: Journal, retry_failed: bool) -> Iterator[RequestSpec]:
    for r in jr.iter_todo_requests(retry_failed=retry_failed):
        yield RequestSpec(r.index, r.line, r.body, r.est_tokens or 0, r.custom_id, r.row_model)


async def ray_session(
    plan: Plan,
    jr: Journal,
    *,
    stats: RunStats,
    clock: Clock,
    progress: Mode,
    retry_failed: bool,
    cost: Callable[[str, int, int], float],
    est_cost: Callable[[RequestSpec], float] | None = None,
    targets: dict[str, Target],
) -> tuple[EngineOutcome, tuple[KeyStats, ...]]:
    """Run the rows to do on the Ray cluster `plan.cfg.ray` names.

    Returns how it ended, and each key's cluster-wide counters (for the account).

    Raises:
        MissingExtraError: Ray is not installed; ConfigError: no cluster there.
    """
    cfg = plan.cfg
    ray = connect(cfg.ray or "local")
    workers = cfg.workers or min(MAX_DEFAULT_WORKERS, cluster_cpus(ray))
    setup = WorkerSetup(
        targets=targets,
        keys=key_budgets(plan.pool_cfg, plan.models),
        operation=plan.operation,
        retry=cfg.retry,
        max_tokens=cfg.max_tokens,
        keep_raw=plan.batch,
        grace_s=cfg.grace_s,
    )
    driver = RayDriver(
        ray,
        jr,
        setup=setup,
        workers=workers,
        run_id=uuid.uuid4().hex[:8],
        stats=stats,
        cost=cost,
        max_cost=cfg.max_cost,
        est_cost=est_cost,
    )
    stats.notice(f"on Ray: {workers} worker(s), cluster-wide limits per key")
    async with Progress(stats, driver.keys, clock, mode=progress, details=driver.lines):
        with Interrupts(driver):
            outcome = await driver.run(_todo(jr, retry_failed))
    return outcome, driver.keys()
