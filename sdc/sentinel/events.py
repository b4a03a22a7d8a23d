"""Delivers the sentinel's JobEvents from a background thread, so the training loop never
waits for the database: ``submit`` only appends to a queue. The thread hands batches to
``sdc.store.Store.deliver``, which spools to the outbox when the database is unreachable;
if even that fails the batch is logged and dropped rather than stopping training."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Sequence

from sdc.records import JobEvent, Record

log = logging.getLogger(__name__)

Deliver = Callable[[Sequence[Record]], object]


def store_deliver(database_url: str | None, outbox_dir: str | None) -> tuple[Deliver, Callable[[], None], Callable[[], object]]:
    """Deliver, close and connect functions over sdc's store (settings fill what is not given)."""
    from sdc.config import load_settings
    from sdc.store import Store

    settings = load_settings(database_url=database_url)
    store = Store(settings.database_url, outbox_dir or settings.outbox_dir)
    return store.deliver, store.dispose, store.engine


class EventSink:
    """A queue and one daemon thread that delivers what is queued, in batches."""

    def __init__(
        self,
        deliver: Deliver,
        close: Callable[[], None] | None = None,
        flush_seconds: float = 1.0,
        connect: Callable[[], object] | None = None,
    ):
        self._deliver = deliver
        self._close = close
        self._connect = connect
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[JobEvent | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sdc-sentinel-events", daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0

    def submit(self, event: JobEvent) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        if self._connect is not None:
            # Connect and check the schema now, while the job starts, not at the first event.
            try:
                self._connect()
            except Exception as exc:
                log.info("sdc sentinel: store not reachable yet (%s); events will be spooled", exc)
        stop = False
        while not stop:
            batch: list[JobEvent] = []
            try:
                item = self._queue.get(timeout=self._flush_seconds)
                while True:
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if batch:
                self._send(batch)

    def _send(self, batch: list[JobEvent]) -> None:
        try:
            self._deliver(batch)
            self.delivered += len(batch)
        except Exception:  # the hook never breaks training, not even from its own thread
            self.failed += len(batch)
            log.exception("sdc sentinel: could not deliver %d events (neither database nor outbox took them)", len(batch))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, then stop the thread (waits at most ``timeout`` seconds)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self._close is not None:
            try:
                self._close()
            except Exception:
                log.exception("sdc sentinel: closing the event store failed")
