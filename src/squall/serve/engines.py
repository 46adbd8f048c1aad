"""The engines `squall serve` can start, and the one call that plans a launch for any of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import llamacpp, llamafactory, vllm
from .launch import Launch, Program
from .spec import EngineName, ServeSpec


@dataclass(frozen=True)
class Engine:
    """One engine: how to find it installed, and how to build its command."""

    name: EngineName
    locate: Callable[[str | None], Program]
    plan: Callable[[ServeSpec, Program, str | None, Path], Launch]


ENGINES: dict[EngineName, Engine] = {
    "vllm": Engine("vllm", vllm.locate, vllm.plan),
    "llamafactory": Engine("llamafactory", llamafactory.locate, llamafactory.plan),
    "llamacpp": Engine("llamacpp", llamacpp.locate, llamacpp.plan),
}


def plan_launch(
    spec: ServeSpec,
    *,
    python: str | None,
    api_key: str | None,
    workdir: Path,
    program: Program | None = None,
) -> Launch:
    """Return the launch for `spec.engine`.

    Finds the engine (unless `program` is given) and builds its command.

    Raises:
        ConfigError: the spec does not suit the engine.
        ServeError: the engine is not installed where squall looked.
    """
    engine = ENGINES[spec.engine]
    found = program if program is not None else engine.locate(python)
    return engine.plan(spec, found, api_key, workdir)
