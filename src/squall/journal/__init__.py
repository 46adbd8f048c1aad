"""The journal: a SQLite file (WAL mode) that keeps every row's state, so no paid work is lost.

Each state change is one committed transaction, unless the journal is opened with
`group_commits=True`: then row changes (`mark_sent`, `record_*`) join one open transaction
until `commit()`, which the engine calls once per event-loop turn, before any request marked
sent in that turn leaves (the journal's CPU per row falls from ~28 to ~6 us). With
`synchronous=NORMAL` (the default) a committed row survives `kill -9` of the process;
`sync="full"` also survives a power cut, at the price of one fsync per commit. A row whose
change was not committed yet when the process died is found as it was before it: an answer
that arrived in the turn of a `kill -9` counts, like any request in flight, as SENT.

A row's life (see `squall.records.RowState`)::

                 ingest
                   |
                   v
              +---------+   mark_sent    +------+   record_success   +------+
              | PENDING | -------------> | SENT | -----------------> | DONE |  final
              +---------+                +------+                    +------+
                   ^      record_retry     |  |
                   +-----------------------+  | record_failure
                                              v
                                         +--------+
                                         | FAILED | --mark_sent--> SENT, when iter_todo
                                         +--------+   gives it again (retryable, or
                                                      retry_failed=True)

- A row found SENT when a journal is opened was in flight when a run died: it may have been
  billed. `iter_todo` gives it again; `in_flight_at_open()` counts such rows.
- A DONE row is final: every write refuses to touch it, so an answer is never overwritten.
- PENDING rows may carry the last error of a retry; FAILED rows carry the final one.

One thread uses a `Journal` at a time (it is opened with `check_same_thread=False` so that
the thread may change, e.g. a worker thread under Jupyter). One writing process per journal:
`Journal.open` takes an exclusive lock on `PATH-lock`; a second run on the same journal gets
a `JournalError` instead of sending every row twice. API keys are never stored: endpoints
are recorded by name only.

The package, one job per module: `schema` (DDL, migrations, opening the file), `lock` (the
writer lock), `store` (`Journal`), `changes` (the row verbs' SQL: the hot path), `ingest`
(checking and adding the input's rows), `reader` (rows to send, results, output rows,
statistics), `settings` (the run's settings check), `sessions`, `meta` (`RunMeta`, the meta
table) and `rows` (the typed records). All of squall's SQL is here.

Since schema 2 the journal also keeps what sending and writing need, in `row_inputs` beside
`rows` (`IngestRow`: the row's input fields, its request body, estimated tokens, its own
model and custom_id; a table of its own so the row verbs never rewrite them), so data
flows one way: each input row is read once into the journal, requests are sent from it
(`iter_todo_requests`) and the merged output is written from it (`iter_output`).

Since schema 3 the journal keeps the account over every session: each row counts its
retries (in the same UPDATE as `record_retry`), and `end_session(outcome, keys)` stores each
key's counters (label, endpoint, masked form: never the key) in `session_keys`;
`statistics()` gives their totals (`JournalStats.retries`, `JournalStats.keys`).

Since schema 4 the journal keeps the provider's Batch API batches it made (`batches`: one
chunk per batch input file, see `squall.journal.batches`), and on each row the live chunk
that holds it (`rows.batch_chunk`): such a row is not given to be sent again, online or in
another batch, until its chunk is collected.
"""

from __future__ import annotations

from ..errors import InputChangedError, JournalError
from .batches import BatchRecord, BatchTable
from .ingest import IngestItem
from .meta import ModelPrice, RunMeta
from .rows import (
    IngestReport,
    IngestRow,
    JournalStats,
    KeyTotals,
    OutputRow,
    SessionRecord,
    StoredRequest,
    TokenUsage,
)
from .schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, discard, migrate
from .sessions import SessionOutcome
from .store import Journal

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BatchRecord",
    "BatchTable",
    "IngestItem",
    "IngestReport",
    "IngestRow",
    "InputChangedError",
    "Journal",
    "JournalError",
    "JournalStats",
    "KeyTotals",
    "ModelPrice",
    "OutputRow",
    "RunMeta",
    "SessionOutcome",
    "SessionRecord",
    "StoredRequest",
    "TokenUsage",
    "discard",
    "migrate",
]
