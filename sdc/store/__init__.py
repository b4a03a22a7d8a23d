"""The evidence store: one place that writes records to the database or, failing that, the outbox.

``Store.deliver`` is what producers call (sweeps, the sentinel's background thread, the
analysis): it never loses a record. ``Store.engine()`` is for readers and refuses a database
whose schema is not at head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from sdc.records import Record
from sdc.store.engine import StoreError, make_engine
from sdc.store.migrate import require_head
from sdc.store.outbox import Outbox
from sdc.store.writer import WriteResult, write_records

log = logging.getLogger(__name__)

__all__ = ["AnalysisNotStored", "Delivery", "Store", "StoreError", "Outbox", "unreachable"]


@dataclass(frozen=True)
class Delivery:
    """What happened to a batch: stored now, or spooled (with why and where)."""

    stored: int = 0
    spooled: int = 0
    replayed: int = 0
    spool_path: Path | None = None
    reason: str = ""
    lost: int = 0  # neither stored nor spooled: the outbox could not keep them either
    outbox_reason: str = ""

    @property
    def message(self) -> str:
        if self.lost:
            return (
                f"database unavailable ({self.reason}) and the outbox cannot keep records ({self.outbox_reason}): "
                f"{self.lost} records were NOT kept; free space or fix the outbox directory, then run again"
            )
        if self.spooled:
            return (
                f"database unavailable ({self.reason}); {self.spooled} records kept in the outbox "
                f"{self.spool_path}; 'sdc flush' delivers them"
            )
        extra = f" (+{self.replayed} replayed from the outbox)" if self.replayed else ""
        return f"stored {self.stored} records{extra}"


def unreachable(exc: BaseException) -> bool:
    """True for failures that may pass (database down, locked, or not yet upgraded)."""
    return isinstance(exc, (OperationalError, StoreError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


class Store:
    def __init__(self, url: str, outbox_dir: str | Path | None = None):
        self.url = url
        self.outbox = Outbox(outbox_dir) if outbox_dir is not None else None
        self._engine: Engine | None = None
        self._checked = False

    def engine(self) -> Engine:
        """A connected engine on a database at schema head; raises StoreError otherwise."""
        if self._engine is None:
            self._engine = make_engine(self.url)
        if not self._checked:
            require_head(self._engine)
            self._checked = True
        return self._engine

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Write now, in one transaction; raises if the database cannot take it."""
        return write_records(self.engine(), records)

    def deliver(self, records: Sequence[Record]) -> Delivery:
        """Store records, or spool them if the database is unreachable; never loses any.

        Whatever earlier deliveries left in the outbox is replayed first, so records spooled
        while the database was down (a sweep's chips and sweep, say) are stored before the
        records that refer to them.
        """
        records = list(records)
        try:
            replayed = self.flush()
            self.write(records)
        except Exception as exc:
            if self.outbox is None or not unreachable(exc):
                raise
            reason = short_reason(exc)
            self._checked = False
            if any(record.KIND == "verdict" for record in records):
                # An analysis decides from the evidence as it is now; replayed later, its
                # transitions would land on top of a newer analysis's and double them.
                raise AnalysisNotStored(
                    f"the database could not take this analysis ({reason}); none of its "
                    f"{len(records)} verdicts and transitions were stored: run 'sdc analyze' again"
                ) from None
            try:
                spool = self.outbox.spool(records)
            except OSError as spool_exc:
                log.error("outbox %s cannot keep records: %s", self.outbox.directory, spool_exc)
                return Delivery(lost=len(records), reason=reason, outbox_reason=_os_reason(self.outbox.directory, spool_exc))
            log.warning("%s: spooled %d records to %s", reason, spool.records, spool.path)
            return Delivery(spooled=spool.records, spool_path=spool.path, reason=reason)
        return Delivery(stored=len(records), replayed=replayed)

    def flush(self) -> int:
        """Replay the outbox into the database; returns the records delivered."""
        if self.outbox is None:
            return 0
        return self.outbox.replay(self.write, unreachable)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._checked = False


class AnalysisNotStored(StoreError):
    """An analysis's verdicts and transitions could not be stored; none were (never spooled)."""


def _os_reason(directory: Path, exc: OSError) -> str:
    return f"{directory}: {exc.strerror or exc}"


def short_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
