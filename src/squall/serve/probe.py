"""Prove each adapter is applied: the same greedy prompts to the base and to each adapter.

An adapter that is loaded but not applied (wrong name, ignored `model`, zero weights) gives
exactly the base's answers. With temperature 0 the base's answers are fixed, so any answer
that differs is the adapter at work. An engine that cannot reach the bare base beside its
adapters (LLaMA-Factory merges them at load) gets no verdict: `ProbeReport` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ServeError
from .client import ask

# Short, varied prompts: arithmetic (what the example adapter learns), facts and wording.
# Greedy answers of a few tokens are enough for any trained adapter to change some of them.
PROBE_PROMPTS: tuple[str, ...] = (
    "37 + 48",
    "92 - 15 x 3",
    "What is 12 x 11?",
    "Name the capital of France.",
    "Translate to French: good morning",
    "Write one word that rhymes with cat.",
    "List three colours.",
    "Extract the person's name as JSON: Alice met Bob in Paris.",
)

# A name no real deployment serves: used to learn whether the engine answers any name.
UNKNOWN_MODEL = "squall-probe-no-such-model"


@dataclass(frozen=True)
class AdapterVerdict:
    """How one adapter's answers compare with the base's on the probe prompts."""

    name: str
    differ: int
    total: int
    examples: tuple[tuple[str, str, str], ...] = ()
    """Up to three (prompt, base answer, adapter answer) where they differ."""

    @property
    def applied(self) -> bool:
        """True when at least one greedy answer differs from the base's."""
        return self.differ > 0


@dataclass(frozen=True)
class ProbeReport:
    """What the probe found for every adapter, or why it could not judge."""

    verdicts: tuple[AdapterVerdict, ...] = ()
    unjudged: str | None = None
    """Why no comparison was made (the engine cannot address the base), else None."""
    answers_any_name: bool | None = None
    """True when the engine answered a model name it does not serve; None if not tried."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def all_applied(self) -> bool:
        """True when every adapter was judged and changed at least one answer."""
        return self.unjudged is None and all(v.applied for v in self.verdicts)

    def lines(self) -> list[str]:
        """Return the report as lines for the terminal."""
        out: list[str] = []
        if self.unjudged:
            out.append(f"adapter check: not judged: {self.unjudged}")
        for v in self.verdicts:
            if v.applied:
                out.append(
                    f"adapter {v.name!r}: applied: {v.differ}/{v.total} greedy answers differ "
                    "from the base"
                )
            else:
                out.append(
                    f"adapter {v.name!r}: NOT shown applied: all {v.total} greedy answers equal "
                    "the base's (wrong path, untrained adapter, or an engine ignoring `model`)"
                )
            for prompt, base, adapted in v.examples:
                out.append(f"    {prompt!r}: base {_short(base)!r} -> {v.name} {_short(adapted)!r}")
        if self.answers_any_name:
            out.append(
                f"note: the engine answered model {UNKNOWN_MODEL!r}, which it does not serve: "
                "a misspelt model name will not fail"
            )
        out.extend(self.notes)
        return out


def _short(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def compare_adapters(
    base_url: str,
    base_name: str | None,
    adapter_names: Sequence[str],
    *,
    api_key: str | None,
    prompts: Sequence[str] = PROBE_PROMPTS,
    max_tokens: int = 24,
    timeout_s: float = 120.0,
) -> ProbeReport:
    """Return how each adapter's greedy answers differ from the base's.

    `base_name` None means the engine cannot address the base apart from its adapters: the
    report then says so and judges nothing.

    Raises:
        ServeError: a probe request failed.
    """
    if not adapter_names:
        return ProbeReport(notes=("no adapter to check: serving the base only",))
    if base_name is None:
        return ProbeReport(
            unjudged=(
                "this engine merges the adapter into the one model it serves, so the bare base "
                "cannot be asked beside it; to compare, serve the base alone on another port "
                "(squall serve --model BASE --port N) and evaluate both"
            )
        )
    base_answers = [
        ask(base_url, base_name, p, api_key=api_key, max_tokens=max_tokens, timeout_s=timeout_s)
        for p in prompts
    ]
    verdicts = []
    for name in adapter_names:
        answers = [
            ask(base_url, name, p, api_key=api_key, max_tokens=max_tokens, timeout_s=timeout_s)
            for p in prompts
        ]
        diffs = [
            (p, b, a)
            for p, b, a in zip(prompts, base_answers, answers, strict=True)
            if a.strip() != b.strip()
        ]
        verdicts.append(
            AdapterVerdict(
                name=name, differ=len(diffs), total=len(prompts), examples=tuple(diffs[:3])
            )
        )
    return ProbeReport(verdicts=tuple(verdicts))


def answers_unknown_name(base_url: str, *, api_key: str | None, timeout_s: float = 120.0) -> bool:
    """Return True when the engine answers a request for a model name it does not serve."""
    try:
        ask(base_url, UNKNOWN_MODEL, "Say OK.", api_key=api_key, max_tokens=2, timeout_s=timeout_s)
    except ServeError:
        return False
    return True
