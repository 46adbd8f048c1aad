"""A simulated OpenAI-compatible provider on 127.0.0.1: test equipment, not a real API.

This is a SIMULATOR. It answers like a third-party API relay (per-key limits, 429s with
Retry-After, faults, odd error bodies) so squall's tests, benchmarks and `squall demo` have
something realistic and free to talk to. Its answers are computed, not generated:
`expected_answer(prompt)` says what each prompt gets, and `expected_embedding(text, dims)`
each text's vector, so a test can check every answer belongs to its row.

Endpoints:
    POST /v1/chat/completions   the chat API (Authorization: Bearer KEY)
    POST /v1/completions        the legacy completions API (`prompt` in, `text` out)
    POST /v1/embeddings         embeddings: one text or a list, float or base64, data shuffled
    POST /v1/files              upload a file (multipart: purpose, file); GET, DELETE, content
    POST /v1/batches            the Batch API: create, GET one or a page, POST .../cancel
    GET  /v1/models             the configured model names
    GET  /_squall/ledger        everything served so far, as JSON

Run it in a thread (`with Simulator(cfg) as sim: sim.base_url`) or as a process:
`python -m squall.simulator --port 0 --config cfg.json --ledger-file served.jsonl`, which
prints its base URL as its first stdout line and serves until SIGTERM or SIGINT.

The package, one noun a module:

    settings.py   SimKey, SimConfig (to_dict/from_dict), BatchSettings, demo_config,
                  load_config
    answers.py    what an answer holds: expected_answer, expected_embedding, prompt_digest,
                  token counts
    routes.py     URL path -> request kind; the one table to extend for a new endpoint
    chat.py       the chat completions kind: its body parsed, its chat.completion built
    completions.py  the legacy completions kind: prompt(s) in, text_completion out
    embeddings.py the embeddings kind: input(s) in, deterministic vectors out (shuffled)
    limits.py     per-key limits: token buckets or sliding windows, requests in flight
    faults.py     injected 5xx, resets, malformed bodies, hangs; the wording of refusals
    files.py      the Files API: uploads and batch output, per key, in memory
    batches.py    the Batch API's endpoints: create, retrieve, list, cancel
    batchrun.py   one batch's state and run: validating ... completed, cancelled, expired
    batchlines.py a batch's lines: checked, answered as online, written to output lines
    ledger.py     LedgerEntry, the ledger and its file, max_in_window
    provider.py   how one request is checked, refused, broken or answered
    server.py     Simulator: serving the provider on 127.0.0.1 (thread or running loop)
    command.py    the command line behind `python -m squall.simulator` (__main__.py)

A new stateless endpoint is one module like chat.py plus one entry in `routes.REQUEST_KINDS`
(a batch may then name it as its endpoint); see routes.py.
"""

from .answers import expected_answer, expected_embedding, prompt_digest
from .command import main
from .ledger import LedgerEntry, iter_ledger_file, max_in_window
from .limits import format_duration
from .server import HOST, Simulator
from .settings import (
    BatchSettings,
    BusyWording,
    ErrorShape,
    LimitMode,
    MalformedShape,
    RetryAfterStyle,
    SimConfig,
    SimKey,
    demo_config,
    load_config,
)

__all__ = [
    "HOST",
    "BatchSettings",
    "BusyWording",
    "ErrorShape",
    "LedgerEntry",
    "LimitMode",
    "MalformedShape",
    "RetryAfterStyle",
    "SimConfig",
    "SimKey",
    "Simulator",
    "demo_config",
    "expected_answer",
    "expected_embedding",
    "format_duration",
    "iter_ledger_file",
    "load_config",
    "main",
    "max_in_window",
    "prompt_digest",
]
