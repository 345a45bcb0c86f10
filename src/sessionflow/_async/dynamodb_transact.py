"""Guarded copies in DynamoDB transactions: up to 100 conditional puts in one request.

One request carries a whole batch, which is what makes a backfill fast: the client's cost
per request (signing, HTTP) is paid once per batch instead of once per item. A transaction
is all or nothing, so a failed condition cancels it: the failed items' verdicts are read
from the cancellation reasons (the item found, ALL_OLD) and the rest are sent again. The
session and conversation backends share this; each says what a failed condition kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from botocore.exceptions import ClientError

from sessionflow._concurrency import async_sleep
from sessionflow._dynamodb_client import dynamodb_errors, error_code
from sessionflow._errors import BackendError, CorruptRecord
from sessionflow._scan import GuardedResult, GuardedWrite

TRANSACT_LIMIT = 100
_CONTENTION_RETRIES = 5
_CONTENDED = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})

Batch = list[tuple[int, dict[str, Any]]]
"""(position in the caller's list, the Put request) of each item of one transaction."""


def transaction_batches(puts: Sequence[tuple[int, str, dict[str, Any]]]) -> list[Batch]:
    """Split (position, item key, Put) into transactions: 100 at most, each key once."""
    batches: list[Batch] = [[]]
    keys: set[str] = set()
    for index, key, put in puts:
        if len(batches[-1]) == TRANSACT_LIMIT or key in keys:
            batches.append([])
            keys = set()
        batches[-1].append((index, put))
        keys.add(key)
    return [batch for batch in batches if batch]


async def transact_guarded(
    client: Any,  # noqa: ANN401 - a boto3 / aioboto3 DynamoDB client
    batch: Batch,
    results: list[GuardedResult | None],
    *,
    kept: Callable[[int, Mapping[str, Any] | None], GuardedWrite],
    on_response: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Write one transaction of guarded puts; fill `results` at the items' positions.

    `kept(position, item found or None)` names what a failed condition kept (raising
    `CorruptRecord` if the item found is unreadable); `on_response` sees each successful
    response (capacity accounting).
    """
    conflicts = 0
    while batch:
        reasons = await _send(client, batch, on_response)
        if reasons is None:
            for index, _ in batch:
                results[index] = GuardedWrite.WRITTEN
            return
        again, contended = _sort_cancelled(batch, reasons, results, kept)
        if contended:
            conflicts += 1
            if conflicts > _CONTENTION_RETRIES:
                raise BackendError("DynamoDB kept cancelling a guarded batch: contention")
            await async_sleep(0.01 * 2**conflicts)
        elif len(again) == len(batch):
            raise BackendError("DynamoDB cancelled a guarded batch without a failed item")
        batch = again


async def _send(
    client: Any,  # noqa: ANN401
    batch: Batch,
    on_response: Callable[[dict[str, Any]], None] | None,
) -> Sequence[Mapping[str, Any]] | None:
    """Send one transaction; None if it landed, else the cancellation reasons."""
    with dynamodb_errors():
        try:
            response = await client.transact_write_items(
                TransactItems=cast("Any", [{"Put": put} for _, put in batch]),
                ReturnConsumedCapacity="TOTAL",
            )
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons: Sequence[Mapping[str, Any]] = exc.response.get("CancellationReasons", [])
            if len(reasons) != len(batch):
                raise BackendError(
                    "DynamoDB cancelled a guarded batch without its reasons"
                ) from exc
            return reasons
    if on_response is not None:
        on_response(response)
    return None


def _sort_cancelled(
    batch: Batch,
    reasons: Sequence[Mapping[str, Any]],
    results: list[GuardedResult | None],
    kept: Callable[[int, Mapping[str, Any] | None], GuardedWrite],
) -> tuple[Batch, bool]:
    """Settle the items of a cancelled transaction whose reason decides them.

    Returns the items to send again and whether contention (a conflicting transaction,
    throttling) was among the reasons, which calls for a pause first.
    """
    again: Batch = []
    contended = False
    for (index, put), reason in zip(batch, reasons, strict=True):
        code = reason.get("Code") or "None"
        if code == "ConditionalCheckFailed":
            try:
                results[index] = kept(index, cast("Mapping[str, Any] | None", reason.get("Item")))
            except CorruptRecord as exc:
                results[index] = exc
        elif code == "None":  # cancelled only because another item failed
            again.append((index, put))
        elif code in _CONTENDED:
            contended = True
            again.append((index, put))
        else:
            results[index] = BackendError(
                f"DynamoDB refused a guarded copy: {code}: {reason.get('Message', '')}"
            )
    return again, contended
