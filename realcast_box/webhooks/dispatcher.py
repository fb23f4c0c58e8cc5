"""The webhook dispatcher: delivers the outbox's pending deliveries.

Pending deliveries live in SQLite (webhook_deliveries), so they survive a
restart, and the dispatcher picks them up again at start. One scheduler
task finds the webhooks that have a delivery due and starts one worker task
per webhook. A worker sends that webhook's due deliveries one at a time,
oldest due first, so a receiver that hangs holds up only its own worker, for
at most the timeout. At most ``max_workers`` webhooks are served at once.

A failed attempt is retried after an exponential backoff with jitter until
the retry policy's attempts run out; then the delivery is failed. After
``disable_after`` deliveries in a row have failed, or at once when the
receiver responds with 410 Gone, the webhook is disabled, its pending deliveries
are failed, and ``on_disabled`` records the security event.

An attempt in flight when the box stops is not recorded, so its delivery is
sent again after the next start: delivery is at least once, and receivers
drop duplicates by the event id in the webhook-id header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp

from realcast_box.store import webhooks as webhook_store
from realcast_box.store.db import Database
from realcast_box.store.ids import utc_now
from realcast_box.webhooks.delivery import AttemptResult, Message, send_attempt
from realcast_box.webhooks.urls import DenyList, DenyListResolver

logger = logging.getLogger(__name__)

MAX_WORKERS = 64
# The scheduler looks at the outbox at least this often, in seconds.
IDLE_WAIT = 60.0
# Pause before a webhook's worker runs again after it crashed, in seconds.
ERROR_PAUSE = 5.0
# A receiver's Retry-After can push the next attempt out by at most this.
MAX_RETRY_AFTER = 3600.0
PRUNE_INTERVAL = 86400.0
# A failure streak logs its first failed attempt and then every this many.
FAILURE_LOG_INTERVAL = 100

DisabledHook = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again.

    The delay after attempt n is base_delay * multiplier ** (n - 1),
    scaled by a random factor within 1 +- jitter. With the defaults (8
    attempts, 80 s, x3, 20%) the seven retries come after about 80 s, 4 min,
    12 min, 36 min, 1.8 h, 5.4 h and 16 h: about a day in all.
    """

    max_attempts: int = 8
    base_delay: float = 80.0
    multiplier: float = 3.0
    jitter: float = 0.2

    def next_delay(self, attempts_made: int, random_value: float) -> float | None:
        """Return seconds until the next attempt, or None when none is left.

        ``random_value`` is uniform in [0, 1) and sets the jitter.
        """
        if attempts_made >= self.max_attempts:
            return None
        delay = self.base_delay * self.multiplier ** (attempts_made - 1)
        return delay * (1 + self.jitter * (2 * random_value - 1))


@dataclass
class DeliveryCounts:
    """Attempts and finished deliveries since the dispatcher started."""

    attempts_succeeded: int = 0
    attempts_failed: int = 0
    # Deliveries marked failed: out of attempts, rejected with 410 Gone, or
    # still pending when the dispatcher disabled their webhook.
    deliveries_failed: int = 0


@dataclass(frozen=True)
class DispatchSettings:
    timeout: float = 10.0
    retry: RetryPolicy = RetryPolicy()
    # Deliveries in a row that fail before the webhook is disabled; 0 never.
    disable_after: int = 5
    deny_list: DenyList = field(default_factory=DenyList)
    retention_days: int = 30


class Dispatcher:
    """Sends pending deliveries; call ``start`` and ``close``, ``wake`` on news."""

    def __init__(
        self,
        database: Database,
        settings: DispatchSettings,
        *,
        on_disabled: DisabledHook | None = None,
        max_workers: int = MAX_WORKERS,
        clock: Callable[[], float] = time.time,
        random_value: Callable[[], float] = random.random,
    ) -> None:
        self._database = database
        self._settings = settings
        self._on_disabled = on_disabled
        self._max_workers = max_workers
        self._clock = clock
        self._random_value = random_value
        self._session: aiohttp.ClientSession | None = None
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Webhook id -> its running worker.
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Webhook id -> clock time before which its worker may not run.
        self._paused_until: dict[str, float] = {}
        # Webhook id -> (failed attempts, finally failed deliveries) in a row.
        self._failure_streaks: dict[str, tuple[int, int]] = {}
        self.counts = DeliveryCounts()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=DenyListResolver(self._settings.deny_list),
            use_dns_cache=False,
            limit=self._max_workers,
        )
        self._session = aiohttp.ClientSession(connector=connector)
        self._tasks = [
            asyncio.create_task(self._schedule_forever(), name="webhook-scheduler"),
            asyncio.create_task(self._prune_forever(), name="webhook-pruner"),
        ]
        logger.info("webhook dispatcher running")

    def wake(self) -> None:
        """Make the scheduler look at the outbox now (new or changed deliveries)."""
        self._wakeup.set()

    async def close(self) -> None:
        """Stop every task; attempts in flight stay pending for the next start."""
        tasks = [*self._tasks, *self._workers.values()]
        self._tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        logger.info("webhook dispatcher stopped")

    # --- scheduling -----------------------------------------------------------

    async def _schedule_forever(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                wait = await self._schedule()
            except Exception:
                logger.exception(
                    "webhook dispatcher failed to read the outbox; retrying in %g s",
                    ERROR_PAUSE,
                )
                wait = ERROR_PAUSE
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns
            # normally when the cancel of close() arrives just as the wakeup
            # is set, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()

    async def _schedule(self) -> float:
        """Start workers for due webhooks; return seconds until the next look."""
        now = self._clock()
        for webhook_id, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[webhook_id]
        free = self._max_workers - len(self._workers)
        if free > 0:
            due = await webhook_store.due_webhook_ids(
                self._database, now, busy=self._busy(), limit=free
            )
            for webhook_id in due:
                self._workers[webhook_id] = asyncio.create_task(
                    self._work(webhook_id), name=f"webhook {webhook_id}"
                )
        if len(self._workers) >= self._max_workers:
            # Every worker is busy, and each one wakes the scheduler when done.
            return IDLE_WAIT
        wait = IDLE_WAIT
        next_due = await webhook_store.next_due_time(self._database, busy=self._busy())
        if next_due is not None:
            wait = min(wait, next_due - self._clock())
        if self._paused_until:
            wait = min(wait, min(self._paused_until.values()) - now)
        return max(0.0, wait)

    def _busy(self) -> set[str]:
        return set(self._workers) | set(self._paused_until)

    async def _work(self, webhook_id: str) -> None:
        try:
            while True:
                delivery = await webhook_store.next_due_delivery(
                    self._database, webhook_id, self._clock()
                )
                if delivery is None:
                    return
                await self._deliver(webhook_id, delivery)
        except Exception:
            logger.exception(
                "webhook %s: delivery worker failed; retrying in %g s",
                webhook_id,
                ERROR_PAUSE,
            )
            self._paused_until[webhook_id] = self._clock() + ERROR_PAUSE
        finally:
            if self._workers.get(webhook_id) is asyncio.current_task():
                del self._workers[webhook_id]
            self.wake()

    # --- one attempt ------------------------------------------------------------

    async def _deliver(self, webhook_id: str, delivery: dict) -> None:
        assert self._session is not None
        message = Message(
            url=delivery["url"],
            secret=delivery["secret"],
            event_id=delivery["event_id"],
            event_type=delivery["event_type"],
            delivery_id=delivery["id"],
            body=delivery["body"].encode("utf-8"),
        )
        attempt = delivery["attempt_count"] + 1
        attempted_at = utc_now()
        try:
            result = await send_attempt(
                self._session,
                message,
                timeout=self._settings.timeout,
                deny_list=self._settings.deny_list,
            )
        except Exception as exc:
            # Recorded as a failed attempt, so that a delivery which breaks
            # the client backs off and runs out of attempts like any other.
            logger.exception(
                "webhook %s: attempt %d of delivery %s failed unexpectedly",
                webhook_id,
                attempt,
                message.delivery_id,
            )
            result = AttemptResult(None, f"internal error: {exc!r}", None, 0)
        next_attempt_at = None
        if not result.succeeded and not result.gone:
            next_attempt_at = self._next_attempt_at(attempt, result)
        record = webhook_store.AttemptRecord(
            delivery_id=message.delivery_id,
            attempt=attempt,
            attempted_at=attempted_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            response_body=result.response_body,
            delivered=result.succeeded,
            next_attempt_at=next_attempt_at,
        )
        if not await webhook_store.record_attempt(self._database, record):
            return  # the webhook was deleted, or disabled, during the attempt
        self._count_attempt(result, next_attempt_at)
        self._log_attempt(webhook_id, message, attempt, result, next_attempt_at)
        if result.succeeded:
            await webhook_store.reset_failures(self._database, webhook_id)
        elif result.gone:
            reason = "the receiver answered 410 Gone"
            if await webhook_store.disable_webhook(self._database, webhook_id, reason):
                await self._after_disable(webhook_id, reason)
        elif next_attempt_at is None:
            await self._count_failure(webhook_id)

    def _count_attempt(
        self, result: AttemptResult, next_attempt_at: float | None
    ) -> None:
        if result.succeeded:
            self.counts.attempts_succeeded += 1
            return
        self.counts.attempts_failed += 1
        if next_attempt_at is None:
            self.counts.deliveries_failed += 1

    def _next_attempt_at(self, attempt: int, result: AttemptResult) -> float | None:
        delay = self._settings.retry.next_delay(attempt, self._random_value())
        if delay is None:
            return None
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, MAX_RETRY_AFTER))
        return self._clock() + delay

    async def _count_failure(self, webhook_id: str) -> None:
        disable_after = self._settings.disable_after
        counted = await webhook_store.count_failure(
            self._database, webhook_id, disable_after=disable_after
        )
        if counted is not None and counted["status"] == "disabled":
            reason = (
                f"{disable_after} deliveries in a row failed after their last attempt"
            )
            await self._after_disable(webhook_id, reason)

    async def _after_disable(self, webhook_id: str, reason: str) -> None:
        failed = await webhook_store.fail_pending_deliveries(
            self._database, webhook_id, f"webhook disabled: {reason}"
        )
        self.counts.deliveries_failed += failed
        self._failure_streaks.pop(webhook_id, None)
        logger.warning(
            "webhook %s: disabled because %s; %d pending deliveries failed."
            " PUT status 'active' to enable it again",
            webhook_id,
            reason,
            failed,
        )
        if self._on_disabled is None:
            return
        try:
            await self._on_disabled(webhook_id, reason)
        except Exception:
            logger.exception(
                "webhook %s: failed to record that it was disabled", webhook_id
            )

    def _log_attempt(
        self,
        webhook_id: str,
        message: Message,
        attempt: int,
        result: AttemptResult,
        next_attempt_at: float | None,
    ) -> None:
        """Log an attempt; a failure streak logs its first and every 100th failure."""
        attempts, deliveries = self._failure_streaks.get(webhook_id, (0, 0))
        if result.succeeded:
            if attempts:
                logger.info(
                    "webhook %s: delivered %s after %d failed attempts in a row",
                    webhook_id,
                    message.delivery_id,
                    attempts,
                )
                del self._failure_streaks[webhook_id]
            logger.debug(
                "webhook %s: delivered %s (%s %s, attempt %d) in %d ms",
                webhook_id,
                message.delivery_id,
                message.event_type,
                message.event_id,
                attempt,
                result.latency_ms,
            )
            return
        attempts += 1
        final = next_attempt_at is None
        deliveries += int(final)
        self._failure_streaks[webhook_id] = (attempts, deliveries)
        if final and deliveries % FAILURE_LOG_INTERVAL != 1:
            logger.debug(
                "webhook %s: delivery %s failed after %d attempts: %s",
                webhook_id,
                message.delivery_id,
                attempt,
                result.error,
            )
        elif final:
            logger.warning(
                "webhook %s: delivery %s of %s %s failed after %d attempts: %s"
                " (%d deliveries failed in a row)",
                webhook_id,
                message.delivery_id,
                message.event_type,
                message.event_id,
                attempt,
                result.error,
                deliveries,
            )
        elif attempts % FAILURE_LOG_INTERVAL == 1:
            logger.info(
                "webhook %s: attempt %d of delivery %s failed: %s; retrying in"
                " %.0f s (%d failed attempts in a row; the next ones log at"
                " debug level)",
                webhook_id,
                attempt,
                message.delivery_id,
                result.error,
                (next_attempt_at or 0) - self._clock(),
                attempts,
            )
        else:
            logger.debug(
                "webhook %s: attempt %d of delivery %s failed: %s",
                webhook_id,
                attempt,
                message.delivery_id,
                result.error,
            )

    # --- retention ------------------------------------------------------------

    async def _prune_forever(self) -> None:
        while True:
            cutoff = datetime.now(UTC) - timedelta(days=self._settings.retention_days)
            try:
                deleted = await webhook_store.prune_deliveries(self._database, cutoff)
            except Exception:
                logger.exception("failed to prune webhook deliveries")
            else:
                if deleted:
                    logger.info(
                        "pruned %d webhook deliveries older than %d days",
                        deleted,
                        self._settings.retention_days,
                    )
            await asyncio.sleep(PRUNE_INTERVAL)
