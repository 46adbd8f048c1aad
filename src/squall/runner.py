"""Running a planned run: one session over its journal, from ingest to the account.

The wiring lives here: the journal, the pool of keys, the transport, the retry policy, the
progress display and the interrupts go into one `Engine`, which is given them and builds
none. The order is what keeps paid work safe: nothing is sent before every row is ingested
(bad input fails first), the output is written only from the journal, and a journal this
call created is removed again if the run fails before its session began (it holds no paid
work, and keeping it would make the corrected rerun fail with "the settings changed").
"""

from __future__ import annotations

import contextlib
import random
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from .account import Summary, cost_of, summarize
from .batchapi import BatchDriver, BatchKey, BatchSettings
from .clock import Clock
from .config import Price, RunConfig
from .engine import Engine, EngineOutcome
from .errors import ConfigError, JournalError, SquallError
from .events import KeyStats, RunStats
from .interrupts import Interrupts
from .journal import (
    BatchRecord,
    IngestReport,
    Journal,
    JournalStats,
    ModelPrice,
    RunMeta,
    StoredRequest,
    discard,
)
from .journal_port import LocalJournal
from .operations import CHAT, Operation, packing
from .outputs import open_writer
from .passes import ingest, todo, write_output
from .plan import Plan
from .pool import EndpointPool, iter_keys
from .progress import Mode, Progress
from .records import RequestSpec
from .redact import Redactor
from .retry import RetryPolicy
from .transport import Target, Transport, make_target


def targets(cfg: RunConfig, operation: Operation = CHAT) -> dict[str, Target]:
    """Return each key id's URL and credentials: the only table where ids meet secrets."""
    return {
        key_id: make_target(
            ep.base_url,
            key.key.reveal(),
            timeout_s=ep.timeout_s,
            extra_headers=ep.headers,
            operation=operation,
        )
        for key_id, ep, key in iter_keys(cfg)
    }


def batch_keys(cfg: RunConfig, models: Mapping[str, str]) -> list[BatchKey]:
    """Return every key as the Batch API driver uses it (its headers hold the secret)."""
    out = []
    for key_id, ep, key in iter_keys(cfg):
        headers = {k: v for k, v in ep.headers.items() if k.lower() != "content-type"}
        if key.key.reveal():
            headers["Authorization"] = f"Bearer {key.key.reveal()}"
        out.append(BatchKey(key_id, ep.name, ep.base_url, headers, models[ep.name], ep.timeout_s))
    return out


def batch_workdir(journal: Path) -> Path:
    """Return the folder beside `journal` where its batch files are written and read."""
    return journal.with_name(journal.name + ".batches")


def _refuse_live_batches(journal: Path) -> None:
    """Refuse to discard a journal whose batches are live: their rows would be paid twice."""
    if not journal.exists() or journal.stat().st_size == 0:
        return
    with Journal.open(journal, read_only=True) as jr:
        live = jr.batches.records(live_only=True)
    if live:
        raise JournalError(
            f"the journal {journal} has {len(live)} live Batch API batch(es): --restart would "
            "send their rows again and pay twice. Collect them first (the same command "
            "without --restart), or cancel them: squall batch cancel "
            f"{journal} -c CONFIG"
        )


def _resuming(report: IngestReport) -> str:
    to_go = report.pending + report.in_flight
    failed = (
        f", {report.failed} failed before (sent again where their errors were retryable, or "
        "with --retry-failed)"
        if report.failed
        else ""
    )
    return f"resuming: {report.done} done, {to_go} to go{failed}"


def _run_meta(plan: Plan, last_stop_reason: str | None = None) -> RunMeta:
    prices = {k: ModelPrice(v.input, v.output, v.batch) for k, v in plan.cfg.prices.items()}
    return RunMeta(models=plan.models, prices=prices, last_stop_reason=last_stop_reason)


class _CostModel:
    """What the run's answers cost, and the most the next request could (for --max-cost)."""

    def __init__(
        self,
        prices: Mapping[str, Price],
        models: Mapping[str, str],
        max_tokens: int,
        *,
        batch: bool = False,
    ):
        self._prices = prices
        self._priced = [prices[m] for m in set(models.values()) if m in prices]
        self._max_tokens = max_tokens
        self._batch = batch

    def _share(self, p: Price) -> float:
        return p.batch if self._batch else 1.0

    def estimate(self, spec: RequestSpec) -> float:
        """The most `spec` may cost: its prompt, and the longest answer allowed."""
        return self._estimate(spec.est_prompt_tokens)

    def estimate_stored(self, spec: StoredRequest) -> float:
        """`estimate` for a row as the journal holds it (a Batch API line)."""
        return self._estimate(spec.est_tokens or 0)

    def _estimate(self, tokens: int) -> float:
        return max(
            (
                (tokens * p.input + self._max_tokens * p.output) / 1e6 * self._share(p)
                for p in self._priced
            ),
            default=0.0,
        )

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What an answer cost (0 where the model has no price), at batch prices if so."""
        c = cost_of(self._prices, model, prompt_tokens, completion_tokens) or 0.0
        return c * self._share(self._prices[model]) if c else c


class Runner:
    """One session of a planned run over its journal."""

    def __init__(
        self,
        plan: Plan,
        *,
        clock: Clock,
        progress: Mode | None,
        retry_failed: bool,
        on_engine: Callable[[Engine], None] | None = None,
    ) -> None:
        self._plan = plan
        self._clock = clock
        self._progress = progress or plan.cfg.progress
        self._retry_failed = retry_failed
        self._on_engine = on_engine
        self._stats = RunStats()
        self._keys: tuple[KeyStats, ...] = ()
        self._pool: EndpointPool | None = None
        self._outcome = EngineOutcome("stopped", "did not start")
        self._report = IngestReport(0, 0, 0, 0, 0, 0)

    async def run(self, *, restart: bool) -> Summary:
        """Ingest, send what is left, write the output; return the account.

        Raises:
            ConfigError, InputError, InputChangedError, JournalError, OutputError: nothing
                was sent that is not journaled; the message says what to do.
        """
        plan = self._plan
        if restart:
            _refuse_live_batches(plan.journal)
            discard(plan.journal)
            shutil.rmtree(batch_workdir(plan.journal), ignore_errors=True)
        created = not plan.journal.exists()
        started = self._clock.now()
        jr = Journal.open(plan.journal, sync=plan.cfg.journal_sync, group_commits=True)
        try:
            report = self._prepare(jr)
        except BaseException:
            jr.close()
            if created:
                with contextlib.suppress(SquallError, OSError):
                    discard(plan.journal)
            raise
        try:
            await self._session(jr, report)
        finally:
            jr.write_run_meta(_run_meta(plan, self._outcome.reason or ""))
            # The keys are recorded however the session ended, so `squall status` and the
            # account below count every session's requests the same way.
            if self._pool is not None:
                self._keys = self._pool.statistics()
            jr.end_session(self._outcome.status, self._keys)  # type: ignore[arg-type]  # EngineOutcome.status is one of SessionOutcome
            jstats = jr.statistics()
            jr.close()
        wall = self._clock.now() - started
        if plan.output is not None:
            write_output(plan.journal, plan.output, batch=plan.batch, operation=plan.operation)
        return self._account(jstats, wall)

    def _prepare(self, jr: Journal) -> IngestReport:
        """Everything before the first request: checks, ingest, meta, the session's start."""
        plan = self._plan
        if plan.output is not None:
            # A bad output path (unknown extension, batch lines into CSV, unwritable) must
            # fail before money is spent, not at the merge after the last answer.
            open_writer(plan.output, batch=plan.batch, operation=plan.operation).abort()
        report = self._report = ingest(plan, jr)
        jr.write_run_meta(_run_meta(plan))
        spent = 0.0
        if plan.cfg.max_cost is not None:
            # The cap bounds the whole run's spend, not each resume's: count what the
            # journal's answers already cost.
            spent = summarize(jr.statistics(), plan.cfg.prices, plan.models, status="").cost or 0.0
        jr.begin_session()
        self._stats = RunStats(
            total=report.total, done_before=report.done, failed_before=report.failed, cost=spent
        )
        return report

    async def _session(self, jr: Journal, report: IngestReport) -> None:
        cfg, stats = self._plan.cfg, self._stats
        if report.new < report.total and report.done < report.total:
            stats.notice(_resuming(report))
        redactor = Redactor([k.key.reveal() for ep in cfg.endpoints for k in ep.keys])
        if cfg.ray is not None:
            if cfg.batch_api:
                raise ConfigError("--ray and --batch-api do not go together: pick one")
            await self._ray_session(jr, redactor)
            return
        if cfg.batch_api:
            unfinished = await self._batch_session(jr, redactor)
            if not (unfinished and cfg.batch_fallback == "online"):
                return
            stats.notice(
                f"{len(unfinished)} batch(es) ended unfinished: their rows go online "
                "(--batch-fallback online)"
            )
        await self._online_session(jr, report, redactor)

    async def _batch_session(self, jr: Journal, redactor: Redactor) -> list[BatchRecord]:
        """Send the rows to do through the provider's Batch API; return unfinished chunks."""
        plan, cfg, stats = self._plan, self._plan.cfg, self._stats
        costs = _CostModel(cfg.prices, plan.models, cfg.max_tokens or 256, batch=True)
        driver = BatchDriver(
            jr,
            keys=batch_keys(plan.pool_cfg, plan.models),
            operation=plan.operation,
            settings=BatchSettings(
                poll_s=cfg.batch_poll_s,
                max_requests=cfg.batch_max_requests,
                max_bytes=cfg.batch_max_bytes,
                keep_raw=plan.batch,
            ),
            stats=stats,
            redact=redactor,
            cost=costs.cost,
            estimate=costs.estimate_stored if cfg.max_cost is not None else None,
            budget=self._budget(stats) if cfg.max_cost is not None else None,
            workdir=batch_workdir(plan.journal),
            fallback_online=cfg.batch_fallback == "online",
        )
        progress = Progress(stats, tuple, self._clock, mode=self._progress, details=driver.lines)
        async with progress:
            with Interrupts(driver):
                status, reason = await driver.run(self._batch_todo(jr))
        self._outcome = EngineOutcome(status, reason)
        return driver.unfinished

    async def _ray_session(self, jr: Journal, redactor: Redactor) -> None:
        """Send the rows to do through Ray workers (`squall.ray`); the journal stays here."""
        from .ray.session import ray_session

        plan, cfg, stats = self._plan, self._plan.cfg, self._stats
        costs = _CostModel(cfg.prices, plan.models, cfg.max_tokens or 256)
        self._outcome, self._keys = await ray_session(
            plan,
            jr,
            stats=stats,
            clock=self._clock,
            progress=self._progress,
            retry_failed=self._retry_failed,
            cost=costs.cost,
            est_cost=costs.estimate if cfg.max_cost is not None else None,
            targets=targets(plan.pool_cfg, plan.operation),
        )

    def _batch_todo(self, jr: Journal) -> Callable[[], Iterator[StoredRequest]]:
        """Return the rows to do of each pass: --retry-failed counts for the first only."""
        first = [self._retry_failed]

        def todo() -> Iterator[StoredRequest]:
            retry_failed, first[0] = first[0], False
            return jr.iter_todo_requests(retry_failed=retry_failed)

        return todo

    def _budget(self, stats: RunStats) -> Callable[[float], bool]:
        """Return the --max-cost check of a batch run: spent plus estimates must stay under."""
        cap = self._plan.cfg.max_cost or 0.0
        committed = [stats.cost]

        def fits(estimate: float) -> bool:
            if committed[0] + estimate > cap:
                return False
            committed[0] += estimate
            return True

        return fits

    async def _online_session(self, jr: Journal, report: IngestReport, redactor: Redactor) -> None:
        plan, cfg, stats = self._plan, self._plan.cfg, self._stats
        pool = self._pool = EndpointPool.from_config(
            plan.pool_cfg, self._clock, notify=stats.notice
        )
        held = jr.batches.held_rows()
        if held:
            stats.notice(
                f"{held} rows are in live Batch API batches and are not sent online: run "
                "with --batch-api to collect them, or `squall batch cancel JOURNAL -c CONFIG`"
            )
        if report.in_flight:
            stats.notice(
                f"{report.in_flight} request(s) were in flight when the last run died: "
                "they may have been billed, and are sent again"
            )
        costs = _CostModel(cfg.prices, plan.models, cfg.max_tokens or 256)
        async with Transport(
            max_connections=pool.max_in_flight,
            redactor=redactor,
            keep_raw=plan.batch,
            operation=plan.operation,
            targets=targets(plan.pool_cfg, plan.operation),
        ) as transport:
            engine = Engine(
                pool=pool,
                transport=transport,
                journal=LocalJournal(jr),
                retry=RetryPolicy(cfg.retry, random.Random()),
                clock=self._clock,
                stats=stats,
                max_tokens=cfg.max_tokens,
                cost=costs.cost,
                max_cost=cfg.max_cost,
                est_cost=costs.estimate if cfg.max_cost is not None else None,
                grace_s=cfg.grace_s,
                packing=packing(plan.operation),
                redact=redactor,
            )
            if self._on_engine is not None:
                self._on_engine(engine)
            specs = todo(jr, retry_failed=self._retry_failed)
            async with Progress(stats, pool.statistics, self._clock, mode=self._progress):
                with Interrupts(engine):
                    self._outcome = await engine.run(specs)
        if held and self._outcome.status == "completed":
            self._outcome = EngineOutcome(
                "stopped",
                f"{held} rows are in live Batch API batches and were not sent online: run "
                "with --batch-api to collect them, or cancel them with `squall batch cancel "
                "JOURNAL -c CONFIG`",
            )

    def _account(self, jstats: JournalStats, wall_s: float) -> Summary:
        plan, report, keys, reason = self._plan, self._report, self._keys, self._outcome.reason
        if report.total and report.done == report.total:
            # A rerun of a finished run: say so, rather than print a table of zeros.
            reason = (
                f"already complete: all {report.total} rows were done before, nothing was "
                "sent"
                + (f"; the output is rewritten at {plan.output}" if plan.output else "")
                + "; --restart discards the journal and runs every row again"
            )
            keys = ()
        return summarize(
            jstats,
            plan.cfg.prices,
            plan.models,
            status=self._outcome.status,
            reason=reason,
            run=self._stats,
            keys=keys,
            wall_s=wall_s,
            cut=self._outcome.cut_in_flight,
            journal=plan.journal,
            output=plan.output,
        )
