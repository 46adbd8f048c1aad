"""`squall.ray.process`: a Ray Dataset through squall's engine, with cluster-wide limits.

    import ray, squall.ray
    ds = ray.data.read_parquet("s3://bucket/prompts/")
    out = squall.ray.process(ds, config="squall.toml")   # the response columns added
    out.write_parquet("s3://bucket/results/")

Each block of rows goes through `Dataset.map_batches` to a mapper actor that runs the same
engine as `squall run` (a `Worker`), leasing its keys' slots from one coordinator actor, so
N mappers share each key's rpm, tpm and concurrency instead of each taking all of it.

Finished batches are recorded: each batch's answers are written to `cache_dir` under a hash
of its rows and the run's settings, once every row in it has a final answer (done, or failed
for good), and a rerun of the same pipeline reads them back instead of sending again. Put
`cache_dir` on storage every node sees (the default, `.squall/ray-process/`, is local to each
node: a batch that runs on another node the second time is sent again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError, InputError
from ..outputs import merge_fields
from ..plan import make_plan, resolve_config
from ..prompts import RequestBuilder
from ..records import ErrorInfo, RequestSpec, Row, RowResult, RowState
from ..runner import targets
from .actors import Event, Worker, WorkerSetup
from .cluster import NAMESPACE, cluster_cpus, ray_module, start_coordinator
from .session import MAX_DEFAULT_WORKERS, key_budgets

DEFAULT_CACHE = Path(".squall") / "ray-process"


def _jsonable(value: Any) -> Any:
    """Return `value` with numpy scalars and arrays made plain (for hashing and JSON)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Mapper:
    """One map_batches actor: a squall worker with its own event loop (see the module)."""

    def __init__(
        self, setup: WorkerSetup, coordinator: Any, builder: RequestBuilder, cache: str, digest: str
    ) -> None:
        self._worker = Worker(setup, coordinator, 0)
        self._builder = builder
        self._op = setup.operation
        self._cache = Path(cache)
        self._digest = digest
        self._loop = asyncio.new_event_loop()

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        rows = [_jsonable(r) for r in batch.to_dict("records")]
        blob = json.dumps([self._digest, rows], sort_keys=True, default=str).encode()
        path = self._cache / f"{hashlib.blake2b(blob, digest_size=16).hexdigest()}.json"
        if path.exists():
            return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        results = self._loop.run_until_complete(self._send(rows))
        out = [merge_fields(row, results.get(i), self._op) for i, row in enumerate(rows)]
        if all(r is not None and r.state != RowState.PENDING for r in results.values()) and len(
            results
        ) == len(rows):
            self._cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(out, default=str), encoding="utf-8")
            os.replace(tmp, path)
        return pd.DataFrame(out)

    async def _send(self, rows: list[dict[str, Any]]) -> dict[int, RowResult]:
        specs: list[RequestSpec] = []
        results: dict[int, RowResult] = {}
        for i, data in enumerate(rows):
            try:
                specs.append(self._builder.build(Row(i, i + 1, data), batch=False))
            except InputError as exc:
                results[i] = RowResult(i, RowState.FAILED, error=ErrorInfo("input", None, str(exc)))
        async for events in self._worker.process(specs):
            for ev in events:
                _result(ev, results)
        return results


def _result(ev: Event, results: dict[int, RowResult]) -> None:
    if ev[0] == "ok":
        _, index, c, latency, attempts, endpoint, _model = ev
        results[index] = RowResult(
            index,
            RowState.DONE,
            c.text,
            None,
            c.finish_reason,
            c.prompt_tokens,
            c.completion_tokens,
            latency,
            attempts,
            endpoint,
            c.raw,
        )
    elif ev[0] == "fail":
        _, index, error, attempts, endpoint, retryable = ev
        state = RowState.PENDING if retryable else RowState.FAILED
        results[index] = RowResult(index, state, error=error, attempts=attempts, endpoint=endpoint)


def process(
    ds: Any,
    *,
    config: str | Path | RunConfig | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    batch_size: int = 64,
) -> Any:
    """Return `ds` with squall's answer columns added (lazily, as Ray Data maps do).

    Args:
        ds: a `ray.data.Dataset` whose rows carry a prompt (`prompt`, `messages`, or the
            config's `template` over its columns), as `squall run` rows do.
        config: the config file or RunConfig (endpoints, keys, limits, model...).
        cache_dir: where finished batches are recorded (shared storage for a cluster).
        workers: how many mapper actors (default: the cluster's CPUs, at most 8).
        batch_size: rows per batch handed to a mapper.

    Raises:
        MissingExtraError: Ray is not installed; ConfigError, InputError: as `squall run`
            (and ConfigError for a `max_cost`, which a map cannot hold).
    """
    cfg = resolve_config(config, {})
    if cfg.max_cost is not None:
        # Mapper actors spend in parallel with no one place counting: a cap there would not
        # hold. `squall run --ray` holds one, in its driver.
        raise ConfigError(
            "max_cost is not held by squall.ray.process: remove it from the config, or run "
            "the file with `squall run --ray --max-cost ...`, whose driver holds the cap"
        )
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(namespace=NAMESPACE, log_to_driver=False)
    first = ds.take(1)
    if not first:
        return ds
    plan = make_plan(
        [_jsonable(first[0])], cfg=cfg, output=None, journal=None, input_format=None, dry_run=False
    )
    setup = WorkerSetup(
        targets=targets(plan.pool_cfg, plan.operation),
        keys=key_budgets(plan.pool_cfg, plan.models),
        operation=plan.operation,
        retry=cfg.retry,
        max_tokens=cfg.max_tokens,
        keep_raw=False,
        grace_s=cfg.grace_s,
    )
    coordinator = start_coordinator(ray, uuid.uuid4().hex[:8], list(setup.keys.values()))
    n = workers or min(MAX_DEFAULT_WORKERS, cluster_cpus(ray))
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    return ds.map_batches(
        _Mapper,
        fn_constructor_kwargs={
            "setup": setup,
            "coordinator": coordinator,
            "builder": plan.builder,
            "cache": str(cache.resolve() / plan.fingerprint.digest),
            "digest": plan.fingerprint.digest,
        },
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=min(1.0, cluster_cpus(ray) / n),
    )
