"""Claims of inbox files as warehouse rows: for storage where a claim cannot be a rename.

On object storage (S3 and the stores that speak its API) a move is a copy and a delete, and a
conditional write is only as atomic as the store makes it (moto's is a check then a write), so
two workers could both "win" a file. Here the claim is a database fact instead: one row of
``inbox_claims`` per object identity (the data directory, the object's key, its ETag and size),
taken with ``INSERT ... ON CONFLICT DO NOTHING`` in its own short transaction. Of two workers
inserting the same identity exactly one gets the row; the database's unique index decides, on
PostgreSQL and SQLite alike.

A row carries a lease: its owner's host and pid, and ``lease_until``, which a live owner keeps
extending (``renew``, from `pipeline.datadir.objectstore`'s heartbeat). A row whose lease ran out,
or whose owner ran on this host and is dead, is adopted by the next pass (``adopt``: the row
gets a new claim id, the old one joins ``adopted_from``, in one compare-and-swap UPDATE, so of
two adopters one wins). ``hand_off`` keeps a claim from being adopted for that long although its
claimer exited (an Airflow task claims, mapped tasks process).

When the file's ledger row is recorded, ``finish`` stamps its file id on the claim in the same
transaction (``ledger.record_file`` calls it), so "applied" and "its claim is done" commit
together; the row itself goes once the file is filed away (``drop``). A file put back in the
inbox (a failure that will pass) keeps its row as ``returned``, with its received time, and the
next claim of the same identity takes that row over.

The local data directory keeps its rename claims; ``finish`` there finds no row and does
nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.warehouse.schema import inbox_claims, now

CLAIMED, RETURNED = "claimed", "returned"
_c = inbox_claims.c


@dataclass(frozen=True)
class ClaimRow:
    """One claim of one object, as the warehouse holds it."""

    claim_id: str
    store: str
    object_key: str
    etag: str
    size: int
    offer_source: str | None
    kind: str
    mode: str | None
    received_at: datetime
    claimed_at: datetime
    lease_until: datetime
    handed_off_until: datetime | None
    owner_host: str
    owner_pid: int
    adopted_from: tuple[str, ...]
    state: str
    file_id: int | None


def take(
    engine: Engine,
    *,
    store: str,
    object_key: str,
    etag: str,
    size: int,
    offer_source: str | None,
    kind: str,
    mode: str | None,
    received_at: datetime,
    lease: timedelta,
    hand_off: timedelta | None = None,
) -> ClaimRow | None:
    """Claim one object; None if another worker holds it.

    A new identity is inserted (``ON CONFLICT DO NOTHING``: the loser inserts nothing); an
    identity put back by ``give_back`` is taken over from its ``returned`` row, keeping that
    row's received time. Either is one statement in its own transaction.
    """
    claim_id = uuid.uuid4().hex
    values = _owner(claim_id, lease, hand_off) | {
        "store": store,
        "object_key": object_key,
        "etag": etag,
        "size": size,
        "offer_source": offer_source,
        "kind": kind,
        "mode": mode,
        "received_at": received_at,
        "adopted_from": "",
    }
    with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        statement = insert(inbox_claims).values(**values).on_conflict_do_nothing()
        # RETURNING says whether this insert won (rowcount is not reliable after ON CONFLICT).
        if conn.execute(statement.returning(_c.claim_id)).first() is not None:
            return _get(conn, claim_id)
        returned = conn.execute(
            update(inbox_claims)
            .where(
                _c.store == store,
                _c.object_key == object_key,
                _c.etag == etag,
                _c.size == size,
                _c.state == RETURNED,
            )
            .values(_owner(claim_id, lease, hand_off))
            .returning(_c.claim_id)
        ).first()
        return _get(conn, claim_id) if returned is not None else None


def adopt(
    engine: Engine, row: ClaimRow, lease: timedelta, hand_off: timedelta | None = None
) -> ClaimRow | None:
    """Take over ``row`` under a new claim id; None if another process adopted it first.

    The UPDATE matches the row by its current claim id, which it changes: of two adopters the
    second matches nothing (PostgreSQL re-checks the condition after the first one's row lock).
    """
    new_id = uuid.uuid4().hex
    with engine.begin() as conn:
        changed = conn.execute(
            update(inbox_claims)
            .where(_c.claim_id == row.claim_id)
            .values(
                _owner(new_id, lease, hand_off)
                | {"adopted_from": " ".join((*row.adopted_from, row.claim_id))}
            )
            .returning(_c.claim_id)
        ).first()
        return _get(conn, new_id) if changed is not None else None


def stale(engine: Engine, store: str, at: datetime | None = None) -> list[ClaimRow]:
    """The claims of ``store`` whose owner is gone: its lease ran out, or it ran on this host
    and its pid is dead (once any hand-off has passed). Oldest claim first."""
    at = at or now()
    host = socket.gethostname()
    with engine.connect() as conn:
        rows = conn.execute(
            select(inbox_claims)
            .where(_c.store == store, _c.state == CLAIMED)
            .order_by(_c.claimed_at, _c.claim_id)
        ).mappings()
        found = [_row(r) for r in rows]
    return [
        r
        for r in found
        if r.lease_until <= at
        or (
            r.owner_host == host
            and not _pid_alive(r.owner_pid)
            and (r.handed_off_until is None or r.handed_off_until <= at)
        )
    ]


def renew(engine: Engine, claim_ids: Collection[str], lease: timedelta) -> set[str]:
    """Extend the leases of the claims ``claim_ids`` this process holds to now + ``lease``
    (never shorter than they are: a hand-off's may be longer); the ids still held. An id
    missing from the answer was adopted by another process (its lease ran out before a
    renewal got through) or ended: its holder must know that it no longer owns the file."""
    if not claim_ids:
        return set()
    until = now() + lease
    with engine.begin() as conn:
        owned = set(
            conn.execute(
                select(_c.claim_id).where(_c.claim_id.in_(list(claim_ids)), _c.state == CLAIMED)
            ).scalars()
        )
        if owned:
            conn.execute(
                update(inbox_claims)
                .where(_c.claim_id.in_(list(owned)), _c.lease_until < until)
                .values(lease_until=until)
            )
    return owned


def held(engine: Engine, store: str) -> set[tuple[str, str, int]]:
    """(key, ETag, size) of every object of ``store`` that is claimed now: a scan skips them."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_c.object_key, _c.etag, _c.size).where(_c.store == store, _c.state == CLAIMED)
        ).all()
    return {(key, etag, int(size)) for key, etag, size in rows}


def returned(engine: Engine, store: str) -> list[ClaimRow]:
    """The rows of files put back in the inbox (each waits for its next claim)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(inbox_claims).where(_c.store == store, _c.state == RETURNED)
        ).mappings()
        return [_row(r) for r in rows]


def find(engine: Engine, store: str, claim_id: str) -> ClaimRow | None:
    """The claim ``claim_id`` of ``store``, or the one it was adopted as since."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(inbox_claims).where(
                    _c.store == store,
                    _c.state == CLAIMED,
                    or_(_c.claim_id == claim_id, _c.adopted_from.contains(claim_id)),
                )
            )
            .mappings()
            .first()
        )
    return _row(row) if row else None


def get(engine: Engine, claim_id: str) -> ClaimRow | None:
    with engine.connect() as conn:
        return _get(conn, claim_id)


def finish(conn: Connection, claim_id: str, file_id: int) -> None:
    """Record, in the transaction of the ledger row ``file_id``, that the claim is done."""
    conn.execute(update(inbox_claims).where(_c.claim_id == claim_id).values(file_id=file_id))


def give_back(engine: Engine, claim_id: str, keep_received: bool) -> None:
    """The file goes back to waiting: its row is kept as ``returned`` (with its received time,
    for the next claim of the same bytes) or, without ``keep_received``, dropped."""
    with engine.begin() as conn:
        if keep_received:
            conn.execute(
                update(inbox_claims)
                .where(_c.claim_id == claim_id)
                .values(state=RETURNED, file_id=None, handed_off_until=None)
            )
        else:
            conn.execute(delete(inbox_claims).where(_c.claim_id == claim_id))


def drop(engine: Engine, claim_id: str) -> None:
    """The file was filed away: its claim is over."""
    with engine.begin() as conn:
        conn.execute(delete(inbox_claims).where(_c.claim_id == claim_id))


def forget_returned(engine: Engine, store: str, keep: set[tuple[str, str, int]]) -> None:
    """Drop ``returned`` rows whose object is no longer in the inbox as it was (the sender
    replaced or removed it): nothing will claim those bytes again."""
    rows = returned(engine, store)
    gone = [r.claim_id for r in rows if (r.object_key, r.etag, r.size) not in keep]
    if gone:
        with engine.begin() as conn:
            conn.execute(
                delete(inbox_claims).where(and_(_c.claim_id.in_(gone), _c.state == RETURNED))
            )


def _owner(claim_id: str, lease: timedelta, hand_off: timedelta | None) -> dict:
    at = now()
    until = at + max(lease, hand_off or timedelta(0))
    return {
        "claim_id": claim_id,
        "state": CLAIMED,
        "claimed_at": at,
        "lease_until": until,
        "handed_off_until": at + hand_off if hand_off is not None else None,
        "owner_host": socket.gethostname(),
        "owner_pid": os.getpid(),
    }


def _get(conn: Connection, claim_id: str) -> ClaimRow | None:
    row = conn.execute(select(inbox_claims).where(_c.claim_id == claim_id)).mappings().first()
    return _row(row) if row else None


def _row(row) -> ClaimRow:
    values = dict(row)
    values["adopted_from"] = tuple(values["adopted_from"].split())
    values["size"] = int(values["size"])
    return ClaimRow(**values)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
