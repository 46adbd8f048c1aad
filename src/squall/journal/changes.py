"""The SQL of the row changes (`mark_sent`, `record_*`): the hot path.

At thousands of rows a second. Module constants, so sqlite3's statement cache always hits;
each refuses a DONE row (`state != DONE`), so an answer is never overwritten.
"""

from __future__ import annotations

from .schema import DONE, FAILED, PENDING, SENT

MARK_SENT = (
    f"UPDATE rows SET state = {SENT}, sent_count = sent_count + 1, updated_at = ? "
    f"WHERE idx = ? AND state != {DONE}"
)


def _success_sql(request_id: bool, raw: bool) -> str:
    # Variants that write NULL in the SQL for an absent request id or raw body: sqlite3 binds
    # a None parameter through its adapter lookup, two failed attribute lookups that cost
    # more than the rest of the binding.
    return (
        f"UPDATE rows SET state = {DONE}, response = ?, finish_reason = ?, prompt_tokens = ?, "
        "completion_tokens = ?, latency_s = ?, attempts = ?, endpoint = ?, model = ?, "
        f"request_id = {'?' if request_id else 'NULL'}, raw = {'?' if raw else 'NULL'}, "
        "error_type = NULL, error_status = NULL, error_message = NULL, "
        f"retryable = 0, updated_at = ? WHERE idx = ? AND state != {DONE}"
    )


SUCCESS = {(rid, raw): _success_sql(rid, raw) for rid in (False, True) for raw in (False, True)}
"""By (has a request id, has a raw body)."""
RETRY = (
    f"UPDATE rows SET state = {PENDING}, retries = retries + 1, error_type = ?, "
    f"error_status = ?, error_message = ?, updated_at = ? WHERE idx = ? AND state != {DONE}"
)
"""Counts the retry in the row (schema 3), so the account sums retries over every session."""
FAILURE = (
    f"UPDATE rows SET state = {FAILED}, error_type = ?, error_status = ?, error_message = ?, "
    "attempts = ?, endpoint = ?, retryable = ?, updated_at = ? "
    f"WHERE idx = ? AND state != {DONE}"
)
