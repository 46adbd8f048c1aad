"""Planning a run: the settings, the input, the request builder and the journal's path.

Everything here is decided before a file is written or a request sent, so a bad setting, a
bad template or a batch line without a model fails at once and leaves nothing behind. The
plan is a frozen value the passes (`passes.py`) and the runner (`runner.py`) read; `dry_run`
answers from it alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as config_mod
from .account import Summary, cost_of
from .config import RunConfig
from .errors import ConfigError
from .inputs import InputSource, StreamInput, open_input
from .operations import COMPLETIONS, EMBEDDINGS, Operation, for_batch_url, operation
from .operations.embeddings import EmbeddingsOperation
from .prompts import RequestBuilder, SettingsFingerprint, check_template

ENDPOINT_FLAGS = frozenset({"base_url", "key_env", "rpm", "tpm", "concurrency"})
"""Settings that shape the one endpoint given by flags rather than a RunConfig field."""

_SETTING_FIELDS = frozenset(RunConfig.model_fields)


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided before anything is written.

    Attributes:
        cfg: the settings as resolved (file, environment, overrides).
        pool_cfg: `cfg` with a model for every endpoint (a batch input's first line may
            name it); the pool and the targets are built from this.
        source: the input, opened (not read: a stream is only peeked at).
        builder: turns a row into its request.
        fingerprint: the settings' fingerprint, which the journal checks on every resume.
        journal: the journal file.
        output: where the merged output goes, if anywhere.
        models: each endpoint's model, by endpoint name.
        line_models: batch lines must each name their model (none is configured).
        operation: the kind of request every row is sent as (`choose_operation`).
    """

    cfg: RunConfig
    pool_cfg: RunConfig
    source: InputSource
    builder: RequestBuilder
    fingerprint: SettingsFingerprint
    journal: Path
    output: Path | None
    models: dict[str, str]
    line_models: bool
    operation: Operation

    @property
    def batch(self) -> bool:
        """True when the input is OpenAI batch lines."""
        return self.source.is_batch


def resolve_config(config: str | Path | RunConfig | None, settings: Mapping[str, Any]) -> RunConfig:
    """Return the run's config: a file (or the environment) with `settings` on top.

    Raises:
        ConfigError: an unknown setting, or endpoint flags given beside a RunConfig.
    """
    unknown = set(settings) - _SETTING_FIELDS - ENDPOINT_FLAGS
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {sorted(unknown)}: known ones are {sorted(_SETTING_FIELDS)}"
        )
    if isinstance(config, RunConfig):
        direct = {k: v for k, v in settings.items() if k in _SETTING_FIELDS and v is not None}
        flags = {k: v for k, v in settings.items() if k not in _SETTING_FIELDS and v is not None}
        if flags:
            raise ConfigError(
                f"{sorted(flags)} need a config file or none; with a RunConfig, set its endpoints"
            )
        return config_mod.with_overrides(config, direct)
    return config_mod.load(config, overrides=settings)


def choose_operation(cfg: RunConfig, source: InputSource) -> Operation:
    """Return the kind of request the run sends: the batch lines' `url`, else `cfg.api`.

    OpenAI batch lines are sent as their first line's `url` says (a line whose url differs
    is refused at ingest, naming it); an unknown url leaves `cfg.api`, and ingest refuses
    the line. Completions get the output columns their `params` ask for (logprobs, choices);
    embeddings pack rows by the config's `embeddings_max_inputs` and `embeddings_max_tokens`.

    Raises:
        ConfigError: an endpoint's `api` is not the run's (one kind a run, for now).
    """
    op: Operation | None = None
    if source.is_batch:
        op = for_batch_url(source.first_row().data.get("url"))
    if op is None:
        op = operation(cfg.api)
    if op.name == COMPLETIONS.name:
        op = COMPLETIONS.with_params(cfg.params)
    if op.name == EMBEDDINGS.name:
        limits = (cfg.embeddings_max_inputs, _pack_tokens(cfg))
        if limits != (EMBEDDINGS.max_inputs, EMBEDDINGS.max_tokens):
            op = EmbeddingsOperation(*limits)
    mixed = [f"{ep.name!r} ({ep.api})" for ep in cfg.endpoints if ep.api not in (None, op.name)]
    if mixed:
        raise ConfigError(
            f"endpoint {', '.join(mixed)} takes another api than this run's {op.name} "
            "requests: mixed kinds in one run are not supported yet; run each kind with its "
            "own endpoints (or leave the endpoint's api unset)"
        )
    return op


def _pack_tokens(cfg: RunConfig) -> int:
    """Return the estimated tokens an embeddings pack may hold: at most any key's declared tpm.

    A request over a key's tokens a minute is refused (429) however long it waits.
    """
    tpms = [
        tpm
        for ep in cfg.endpoints
        for key in ep.keys
        if (tpm := key.tpm if key.tpm is not None else ep.tpm) is not None and math.isfinite(tpm)
    ]
    return max(1, int(min([cfg.embeddings_max_tokens, *tpms])))


def default_journal(output: str | Path | None, source: InputSource, settings_digest: str) -> Path:
    """Return where the journal lives when not given: beside the output, else under .squall/.

    Raises:
        ConfigError: the input is a stream (standard input) and no output is given: its
            content cannot be read twice to name the journal.
    """
    if output is not None:
        return Path(f"{output}.squall.sqlite")
    if isinstance(source, StreamInput):
        raise ConfigError(
            f"{source.name} is read once, so its journal cannot be named after its content: "
            "give -o OUTPUT (the journal goes beside it) or --journal FILE"
        )
    h = hashlib.blake2b(digest_size=8)
    h.update(settings_digest.encode())
    h.update(source.name.encode())
    if source.name.startswith("<"):
        for row in source.rows():  # in-memory data, read again at no cost: its content names it
            h.update(repr(sorted(row.data.items())).encode())
    elif source.path is not None:
        with contextlib.suppress(OSError):
            st = os.stat(source.path)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(".squall") / f"{h.hexdigest()}.sqlite"


def make_plan(
    data: Any,
    *,
    cfg: RunConfig,
    output: str | Path | None,
    journal: str | Path | None,
    input_format: str | None,
    dry_run: bool,
) -> Plan:
    """Open the input and decide the run; nothing is written.

    Raises:
        ConfigError, InputError: the settings or the input cannot make a run.
    """
    source = open_input(data, fmt=input_format)
    op = choose_operation(cfg, source)
    builder = RequestBuilder(
        template=cfg.template,
        system=cfg.system,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        params=cfg.params,
        source_name=source.name,
        operation=op,
    )
    if not source.is_batch and cfg.template:
        check_template(
            cfg.template, source.columns(), source_name=source.name, line=source.first_row().line
        )
    fp = builder.settings_fingerprint(cfg.model)
    pool_cfg = cfg
    if not dry_run:
        config_mod.require_endpoints(cfg)
        pool_cfg = _with_models(cfg, source)
        _check_cost_cap(pool_cfg)
    if dry_run:
        jpath = Path(os.devnull)
    elif journal is not None:
        jpath = Path(journal)
    else:
        jpath = default_journal(output, source, fp.digest)
    return Plan(
        cfg=cfg,
        pool_cfg=pool_cfg,
        source=source,
        builder=builder,
        fingerprint=fp,
        journal=jpath,
        output=Path(output) if output is not None else None,
        models=endpoint_models(pool_cfg),
        line_models=pool_cfg is not cfg,
        operation=op,
    )


def _with_models(cfg: RunConfig, source: InputSource) -> RunConfig:
    """Return `cfg` with a model for every endpoint, before any file is written.

    OpenAI batch lines name their model in each body, so a batch input needs none in the
    config: the first line's model then stands in for the pool (each line is still sent
    with its own, and a line without one is refused at ingest).

    Raises:
        ConfigError: an endpoint has no model, and the input does not name one either.
    """
    missing = [ep for ep in cfg.endpoints if not (ep.model or cfg.model)]
    if not missing:
        return cfg
    if source.is_batch:
        body = source.first_row().data.get("body")
        model = body.get("model") if isinstance(body, Mapping) else None
        if isinstance(model, str) and model:
            return cfg.model_copy(update={"model": model})
    cfg.model_for(missing[0])  # raises the ConfigError that says where to set it
    return cfg


def _check_cost_cap(cfg: RunConfig) -> None:
    """Refuse a --max-cost that cannot hold: a model it would pay for has no price.

    Raises:
        ConfigError: naming the models and the lines that price them.
    """
    if cfg.max_cost is None:
        return
    unpriced = sorted(set(endpoint_models(cfg).values()) - set(cfg.prices))
    if not unpriced:
        return
    lines = "\n".join(f'[prices."{m}"]\ninput = 0.15\noutput = 0.60' for m in unpriced)
    raise ConfigError(
        f"--max-cost ${cfg.max_cost:g} cannot be held: no price for {', '.join(unpriced)}, so "
        "squall cannot tell what a request costs. Add the model's prices (USD per million "
        f"tokens; these figures are only an example) to the config file:\n{lines}"
    )


def endpoint_models(cfg: RunConfig) -> dict[str, str]:
    """Return each endpoint's model by endpoint name (those that have one)."""
    out = {}
    for ep in cfg.endpoints:
        with contextlib.suppress(ConfigError):
            out[ep.name] = cfg.model_for(ep)
    return out


def dry_run(plan: Plan) -> Summary:
    """Validate every row and estimate tokens and cost; send nothing.

    Its own pass over the input, by design: a dry run writes no journal to read back from.
    """
    cfg = plan.cfg
    n = 0
    tokens = 0
    preview: list[str] = []
    for row in plan.source.rows():
        spec = plan.builder.build(row, batch=plan.batch)
        n += 1
        tokens += spec.est_prompt_tokens
        if len(preview) < 3:
            body = json.dumps({"model": spec.model or cfg.model, **spec.body}, ensure_ascii=False)
            preview.append(f"line {spec.line}: {body[:300]}")
    models = set(endpoint_models(cfg).values()) or ({cfg.model} if cfg.model else set())
    cost = None
    for m in models:
        c = cost_of(cfg.prices, m, tokens, (cfg.max_tokens or 0) * n)
        if c is not None:
            if cfg.batch_api:
                c *= cfg.prices[m].batch  # the Batch API's share of the price
            cost = max(cost or 0.0, c)
    return Summary(
        status="dry-run",
        total=n,
        done=0,
        failed=0,
        pending=n,
        prompt_tokens=tokens,
        completion_tokens=(cfg.max_tokens or 0) * n,
        cost=cost,
        reason="nothing sent; tokens are estimates"
        + ("; cost at the Batch API's price ([prices] batch)" if cfg.batch_api else "")
        + ("" if cfg.max_tokens else ", answers not counted (set max_tokens to bound them)"),
        preview=tuple(preview),
    )
