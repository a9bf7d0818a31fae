"""The SQLite ledger: promgate's durable state in one local file that survives restarts.

sqlite3 blocks, so every call runs in a worker thread. One connection, serialised by an
asyncio.Lock, keeps transactions from interleaving inside the process; ``BEGIN IMMEDIATE``
and a busy timeout serialise writers across processes, and WAL lets readers work meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sidecar.actuators.base import TrafficState
from sidecar.domain.artifact import ArtifactRef, normalize_repository
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease
from sidecar.errors import LedgerError
from sidecar.ledger import rules
from sidecar.ledger.base import AuditEntry, NewEvent, Transaction
from sidecar.redaction import strip_userinfo

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]


def _store_manifests_once(conn: sqlite3.Connection) -> None:
    """Move each promotion's manifest out of its body, without URL credentials."""
    rows = conn.execute("SELECT id, body FROM promotions").fetchall()
    for promotion_id, body in rows:
        data = json.loads(body)
        manifest = json.dumps(data.pop("manifest", {}))
        # userinfo never spans a JSON quote, so the text stays valid JSON
        conn.execute(
            "INSERT INTO manifests (promotion_id, body) VALUES (?, ?)",
            (promotion_id, strip_userinfo(manifest)),
        )
        conn.execute(
            "UPDATE promotions SET body = ? WHERE id = ?", (json.dumps(data), promotion_id)
        )


# Each entry upgrades the schema by one version; PRAGMA user_version records how far a file is.
_MIGRATIONS: tuple[tuple[Migration, ...], ...] = (
    (
        """CREATE TABLE promotions (
            id TEXT PRIMARY KEY,
            service TEXT NOT NULL,
            stage TEXT NOT NULL,
            phase TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX promotions_service_stage_phase ON promotions (service, stage, phase)",
        """CREATE TABLE events (
            promotion_id TEXT NOT NULL REFERENCES promotions (id),
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (promotion_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END""",
        """CREATE TABLE stable_history (
            service TEXT NOT NULL,
            stage TEXT NOT NULL,
            idx INTEGER NOT NULL,
            artifact TEXT NOT NULL,
            upstream TEXT NOT NULL,
            promotion_id TEXT NOT NULL,
            promoted_at REAL NOT NULL,
            version TEXT NOT NULL,
            PRIMARY KEY (service, stage, idx)
        )""",
        """CREATE TABLE tags (
            repository TEXT NOT NULL,
            tag TEXT NOT NULL,
            digest TEXT NOT NULL,
            first_seen REAL NOT NULL,
            PRIMARY KEY (repository, tag)
        )""",
        """CREATE TABLE traffic (
            service TEXT NOT NULL,
            stage TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (service, stage)
        )""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL
        )""",
    ),
    (
        """CREATE TABLE manifests (
            promotion_id TEXT PRIMARY KEY REFERENCES promotions (id),
            body TEXT NOT NULL
        ) WITHOUT ROWID""",
        _store_manifests_once,
        "ALTER TABLE audit ADD COLUMN result TEXT NOT NULL DEFAULT 'applied'",
        "ALTER TABLE audit ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_TABLES = ("promotions", "events", "stable_history", "tags", "traffic", "audit")
_DAMAGE = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})  # errors that mean a damaged file

_TERMINAL = tuple(phase.value for phase in Phase if phase.terminal)
_TERMINAL_MARKS = ", ".join("?" * len(_TERMINAL))
_STABLE_COLUMNS = "service, stage, artifact, upstream, promotion_id, promoted_at, version"
_AUDIT_COLUMNS = "id, at, actor, action, target, result, reason"
_PROMOTION_ROWS = (  # (id, body, manifest) of every promotion, as `p`
    "SELECT p.id, p.body, COALESCE(m.body, '{}') FROM promotions AS p "
    "LEFT JOIN manifests AS m ON m.promotion_id = p.id"
)
_BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's transaction


def _in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` as one write transaction, so a check and the write it guards are atomic,
    and a write refused halfway (unknown id, data JSON cannot hold) leaves none behind."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


def _promotion_row(promotion: Promotion) -> tuple[Any, ...]:
    """Column values in the order both the INSERT and the UPDATE statements use."""
    body = rules.dump_promotion(promotion)
    return (
        promotion.service,
        promotion.stage,
        promotion.phase.value,
        promotion.created_at,
        promotion.updated_at,
        body,
        promotion.id,
    )


def _require_promotion(conn: sqlite3.Connection, promotion_id: str) -> None:
    if conn.execute("SELECT 1 FROM promotions WHERE id = ?", (promotion_id,)).fetchone() is None:
        raise rules.unknown_promotion(promotion_id)


def _stable_release(row: tuple[Any, ...]) -> StableRelease:
    service, stage, artifact, upstream, promotion_id, promoted_at, version = row
    return StableRelease(
        service=service,
        stage=stage,
        artifact=ArtifactRef.parse(artifact),
        upstream=upstream,
        promotion_id=promotion_id,
        promoted_at=promoted_at,
        version=version,
    )


def _insert_promotion(conn: sqlite3.Connection, promotion: Promotion) -> None:
    if conn.execute("SELECT 1 FROM promotions WHERE id = ?", (promotion.id,)).fetchone():
        raise rules.duplicate_promotion(promotion.id)
    if promotion.active:
        active = conn.execute(
            "SELECT id FROM promotions WHERE service = ? AND stage = ? "
            f"AND phase NOT IN ({_TERMINAL_MARKS}) ORDER BY created_at LIMIT 1",
            (promotion.service, promotion.stage, *_TERMINAL),
        ).fetchone()
        if active is not None:
            raise rules.active_conflict(promotion, active[0])
    conn.execute(
        "INSERT INTO promotions (service, stage, phase, created_at, updated_at, body, id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        _promotion_row(promotion),
    )
    conn.execute(
        "INSERT INTO manifests (promotion_id, body) VALUES (?, ?)",
        (promotion.id, rules.dump_manifest(promotion)),
    )


def _update_promotion(conn: sqlite3.Connection, promotion: Promotion) -> None:
    cursor = conn.execute(
        "UPDATE promotions SET service = ?, stage = ?, phase = ?, created_at = ?, "
        "updated_at = ?, body = ? WHERE id = ?",
        _promotion_row(promotion),
    )
    if cursor.rowcount == 0:
        raise rules.unknown_promotion(promotion.id)


def _append_event(conn: sqlite3.Connection, event: NewEvent) -> tuple[int, str]:
    """The appended event's seq and its stored JSON."""
    text = rules.dump(rules.event_what(event.promotion_id, event.kind), event.data)
    _require_promotion(conn, event.promotion_id)
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE promotion_id = ?",
        (event.promotion_id,),
    ).fetchone()
    conn.execute(
        "INSERT INTO events (promotion_id, seq, at, kind, data) VALUES (?, ?, ?, ?, ?)",
        (event.promotion_id, seq, event.at, event.kind, text),
    )
    return int(seq), text


def _newest_stable(conn: sqlite3.Connection, service: str, stage: str) -> tuple[Any, ...] | None:
    """(idx, *stable columns) of the newest stable release of (service, stage), if any."""
    row = conn.execute(
        f"SELECT idx, {_STABLE_COLUMNS} FROM stable_history "
        "WHERE service = ? AND stage = ? ORDER BY idx DESC LIMIT 1",
        (service, stage),
    ).fetchone()
    return None if row is None else tuple(row)


def _push_stable(conn: sqlite3.Connection, release: StableRelease) -> None:
    newest = _newest_stable(conn, release.service, release.stage)
    if rules.already_newest(None if newest is None else _stable_release(newest[1:]), release):
        return
    conn.execute(
        f"INSERT INTO stable_history (idx, {_STABLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            1 if newest is None else int(newest[0]) + 1,
            release.service,
            release.stage,
            str(release.artifact),
            release.upstream,
            release.promotion_id,
            release.promoted_at,
            release.version,
        ),
    )


def _pop_stable(
    conn: sqlite3.Connection, service: str, stage: str, expected: StableRelease | None
) -> StableRelease:
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM stable_history WHERE service = ? AND stage = ?", (service, stage)
    ).fetchone()
    rules.check_can_pop(service, stage, count)
    newest = _newest_stable(conn, service, stage)
    assert newest is not None, "counted at least two rows above"
    removed = _stable_release(newest[1:])
    if expected is not None:
        rules.check_newest_stable(removed, expected)
    conn.execute(
        "DELETE FROM stable_history WHERE service = ? AND stage = ? AND idx = ?",
        (service, stage, newest[0]),
    )
    return removed


def _upsert_traffic(conn: sqlite3.Connection, state: TrafficState) -> None:
    body = rules.dump(_traffic_what(state), state.to_dict())
    conn.execute(
        "INSERT INTO traffic (service, stage, body) VALUES (?, ?, ?) "
        "ON CONFLICT (service, stage) DO UPDATE SET body = excluded.body",
        (state.service, state.stage, body),
    )


def _traffic_what(state: TrafficState) -> str:
    return f"traffic state of {state.service}/{state.stage}"


def _describe(tx: Transaction) -> str:
    """What a transaction writes, for error messages: e.g. "save promotion 'p1', append ..."."""
    parts = []
    if tx.create is not None:
        parts.append(f"create promotion {tx.create.id!r}")
    if tx.save is not None:
        parts.append(f"save promotion {tx.save.id!r}")
    for verb, release in (("pop", tx.pop_stable), ("push", tx.push_stable)):
        if release is not None:
            parts.append(f"{verb} stable release of {release.service}/{release.stage}")
    if tx.traffic is not None:
        parts.append(f"save {_traffic_what(tx.traffic)}")
    parts.extend(f"append {rules.event_what(e.promotion_id, e.kind)}" for e in tx.events)
    return ", ".join(parts) or "empty transaction"


class SqliteLedger:
    """A :class:`~sidecar.ledger.base.Ledger` in a SQLite file; its directory is created."""

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect, check and migrate; a second call is a no-op so callers need not track
        state."""
        async with self._lock:
            if self._conn is None:
                self._conn = await self._in_thread("open", self._connect)

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._in_thread("close", conn.close)

    async def create(self, promotion: Promotion) -> None:
        await self.commit(Transaction(create=promotion))

    async def save(self, promotion: Promotion) -> None:
        await self.commit(Transaction(save=promotion))

    async def commit(self, transaction: Transaction) -> Sequence[PromotionEvent]:
        def write(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            if transaction.create is not None:
                _insert_promotion(conn, transaction.create)
            if transaction.save is not None:
                _update_promotion(conn, transaction.save)
            if (popped := transaction.pop_stable) is not None:
                _pop_stable(conn, popped.service, popped.stage, expected=popped)
            if transaction.push_stable is not None:
                _push_stable(conn, transaction.push_stable)
            if transaction.traffic is not None:
                _upsert_traffic(conn, transaction.traffic)
            return [_append_event(conn, event) for event in transaction.events]

        appended = await self._write(_describe(transaction), write)
        return [
            PromotionEvent(
                e.promotion_id,
                seq,
                e.at,
                e.kind,
                rules.load(rules.event_what(e.promotion_id, e.kind), text),
            )
            for e, (seq, text) in zip(transaction.events, appended, strict=True)
        ]

    async def get(self, promotion_id: str) -> Promotion:
        found = await self._promotions(
            f"get promotion {promotion_id!r}", f"{_PROMOTION_ROWS} WHERE p.id = ?", [promotion_id]
        )
        if not found:
            raise rules.unknown_promotion(promotion_id)
        return found[0]

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Promotion]:
        where = ["1 = 1"]
        params: list[Any] = []
        if service is not None:
            where.append("p.service = ?")
            params.append(service)
        if stage is not None:
            where.append("p.stage = ?")
            params.append(stage)
        if active is not None:
            where.append(f"p.phase {'NOT IN' if active else 'IN'} ({_TERMINAL_MARKS})")
            params.extend(_TERMINAL)
        if after is not None:  # keyset: strictly after the cursor in the order below
            where.append(
                "(p.created_at, p.rowid) < (SELECT created_at, rowid FROM promotions WHERE id = ?)"
            )
            params.append(after)
        query = (
            f"{_PROMOTION_ROWS} WHERE {' AND '.join(where)} "
            "ORDER BY p.created_at DESC, p.rowid DESC"
        )
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)

        def cursor_exists(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute("SELECT 1 FROM promotions WHERE id = ?", (after,)).fetchone()
                is not None
            )

        if after is not None and not await self._read("check the list cursor", cursor_exists):
            raise rules.unknown_promotion(after)
        return await self._promotions("list promotions", query, params)

    async def newest(self, phases: Collection[Phase]) -> Sequence[Promotion]:
        values = [phase.value for phase in phases]
        # numbered newest first within each (service, stage), in list()'s order
        query = (
            f"SELECT id, body, manifest FROM (SELECT p.id, p.body, COALESCE(m.body, '{{}}') "
            "AS manifest, p.created_at, p.rowid AS r, ROW_NUMBER() OVER (PARTITION BY "
            "p.service, p.stage ORDER BY p.created_at DESC, p.rowid DESC) AS n FROM promotions "
            "AS p LEFT JOIN manifests AS m ON m.promotion_id = p.id "
            f"WHERE p.phase IN ({', '.join('?' * len(values))})) "
            "WHERE n = 1 ORDER BY created_at DESC, r DESC"
        )
        return await self._promotions("read the newest promotions", query, values)

    async def _promotions(
        self, action: str, query: str, params: Sequence[Any]
    ) -> Sequence[Promotion]:
        """The promotions whose (id, body, manifest) rows ``query`` selects, in its order."""

        def select(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return [(str(i), str(b), str(m)) for i, b, m in conn.execute(query, params).fetchall()]

        rows = await self._read(action, select)
        promotions = []
        for promotion_id, body, manifest in rows:
            what = self._what(f"promotion {promotion_id!r}")
            promotion = rules.load_promotion(what, body)
            manifest_data = rules.load(f"manifest of {what}", manifest)
            promotions.append(dataclasses.replace(promotion, manifest=manifest_data))
        return promotions

    async def append_event(
        self, promotion_id: str, kind: str, data: dict[str, Any], at: float
    ) -> PromotionEvent:
        (event,) = await self.commit(Transaction(events=(NewEvent(promotion_id, kind, data, at),)))
        return event

    async def events(
        self, promotion_id: str, after: int = 0, limit: int | None = None
    ) -> Sequence[PromotionEvent]:
        def select(conn: sqlite3.Connection) -> list[tuple[int, float, str, str]]:
            _require_promotion(conn, promotion_id)
            return conn.execute(
                "SELECT seq, at, kind, data FROM events WHERE promotion_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (promotion_id, after, -1 if limit is None else limit),
            ).fetchall()

        rows = await self._read(f"read events of promotion {promotion_id!r}", select)
        return [
            PromotionEvent(
                promotion_id, seq, at, kind, rules.load(self._what(f"event {seq}"), data)
            )
            for seq, at, kind, data in rows
        ]

    async def remember_tag(self, artifact: ArtifactRef) -> None:
        tag = artifact.tag
        if tag is None:
            return

        def remember(conn: sqlite3.Connection) -> None:
            # Rows written before names were normalized keep their spelling: compare normalized.
            rows = conn.execute(
                "SELECT repository, digest FROM tags WHERE tag = ?", (tag,)
            ).fetchall()
            known = [digest for name, digest in rows if normalize_repository(name) == artifact.name]
            for digest in known:
                rules.check_tag(artifact.name, tag, digest, artifact.digest)
            if not known:
                conn.execute(
                    "INSERT INTO tags (repository, tag, digest, first_seen) VALUES (?, ?, ?, ?)",
                    (artifact.name, tag, artifact.digest, time.time()),
                )

        await self._write(f"remember tag {artifact.name}:{tag}", remember)

    async def push_stable(self, release: StableRelease) -> None:
        await self.commit(Transaction(push_stable=release))

    async def stable_history(self, service: str, stage: str) -> Sequence[StableRelease]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {_STABLE_COLUMNS} FROM stable_history WHERE service = ? AND stage = ? "
                "ORDER BY idx",
                (service, stage),
            ).fetchall()

        rows = await self._read(f"read stable history of {service}/{stage}", select)
        return [_stable_release(row) for row in rows]

    async def pop_stable(self, service: str, stage: str) -> StableRelease:
        return await self._write(
            f"pop stable release of {service}/{stage}",
            functools.partial(_pop_stable, service=service, stage=stage, expected=None),
        )

    async def save_traffic(self, state: TrafficState) -> None:
        await self.commit(Transaction(traffic=state))

    async def traffic(self, service: str, stage: str) -> TrafficState | None:
        what = f"traffic state of {service}/{stage}"

        def select(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT body FROM traffic WHERE service = ? AND stage = ?", (service, stage)
            ).fetchone()
            return None if row is None else str(row[0])

        body = await self._read(f"read {what}", select)
        return None if body is None else TrafficState.from_dict(rules.load(self._what(what), body))

    async def all_traffic(self) -> Sequence[TrafficState]:
        def select(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return conn.execute(
                "SELECT service, stage, body FROM traffic ORDER BY service, stage"
            ).fetchall()

        rows = await self._read("read all traffic states", select)
        return [
            TrafficState.from_dict(rules.load(self._what(f"traffic state of {sv}/{st}"), body))
            for sv, st, body in rows
        ]

    async def promoted_stages(self, service: str, digest: str) -> set[str]:
        def select(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(
                "SELECT DISTINCT stage, artifact FROM stable_history WHERE service = ?",
                (service,),
            ).fetchall()

        rows = await self._read(f"read promoted stages of {service}", select)
        return {stage for stage, artifact in rows if ArtifactRef.parse(artifact).digest == digest}

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        at: float,
        *,
        result: str = "applied",
        reason: str = "",
    ) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO audit (at, actor, action, target, result, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (at, actor, action, target, result, reason),
            )

        await self._write(f"audit {action} by {actor}", insert)

    async def audit_trail(self, *, limit: int, before: int | None = None) -> Sequence[AuditEntry]:
        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                (rules.MAX_ID if before is None else before, limit),
            ).fetchall()

        return [AuditEntry(*row) for row in await self._read("read the audit trail", select)]

    def _what(self, thing: str) -> str:
        return f"{thing} in {self._path}"

    def _connect(self) -> sqlite3.Connection:
        """Open the file, creating it when absent; refuse one that is damaged or empty."""
        if not self._path.exists():
            self._create()
        conn = self._sqlite_connect(self._path)
        try:
            self._check_integrity(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            _in_transaction(conn, self._migrate)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if exc.sqlite_errorname in _DAMAGE:
                raise self._damaged(f"the file is damaged ({exc})") from exc
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self) -> None:
        """A new ledger appears only complete: built beside the path, then linked into place
        (never over a file another process created meanwhile). So an existing file without
        promgate's schema is always damage, never a first start that was interrupted."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        os.close(fd)
        building = Path(name)
        try:
            conn = self._sqlite_connect(building)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                _in_transaction(conn, self._migrate)
            finally:
                conn.close()  # the last connection checkpoints: the file holds everything
            with contextlib.suppress(FileExistsError):
                os.link(building, self._path)
        finally:
            building.unlink(missing_ok=True)

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA quick_check`` and promgate's tables, before anything reads or writes."""
        found = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        if found != ["ok"]:
            raise self._damaged("the integrity check failed: " + "; ".join(found[:5]))
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if version == 0 and not tables:
            raise self._damaged(
                f"the file is empty ({self._path.stat().st_size} bytes, no promgate schema), "
                "but promgate creates a ledger with its schema in place"
            )
        missing = sorted(set(_TABLES) - tables)
        if version <= SCHEMA_VERSION and missing:
            raise self._damaged(f"the tables {', '.join(missing)} are missing")

    def _damaged(self, what: str) -> LedgerError:
        path = self._path
        return LedgerError(
            f"cannot open ledger {path}: {what}. promgate does not start on a damaged or "
            "empty ledger, as it would forget every stage's stable release. To restore: stop "
            f"promgate, move {path} and any -wal and -shm file beside it aside, and copy your "
            f"latest backup to {path} (sqlite3 {path} '.backup FILE' makes one); without a "
            f"backup, sqlite3 MOVED-FILE .recover | sqlite3 {path} salvages what is readable. "
            "To start with an empty ledger on purpose, move the file aside and start again."
        )

    @staticmethod
    def _sqlite_connect(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(
            path,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,  # transactions are explicit: see _in_transaction
            check_same_thread=False,  # worker threads take turns under self._lock
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file to SCHEMA_VERSION; inside the write lock, so two processes cannot race."""
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self._path} has schema version {version}, newer than the version "
                f"{SCHEMA_VERSION} this promgate understands; upgrade promgate or use another file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for step in _MIGRATIONS[target - 1]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute(f"PRAGMA user_version = {target}")

    async def _read(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._locked(operation, work, write=False)

    async def _write(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._locked(operation, work, write=True)

    async def _locked(
        self, operation: str, work: Callable[[sqlite3.Connection], T], *, write: bool
    ) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerError(
                    f"{operation}: the ledger {self._path} is not open; call open() first"
                )
            if write:
                return await self._in_thread(
                    operation, functools.partial(_in_transaction, conn, work)
                )
            return await self._in_thread(operation, functools.partial(work, conn))

    async def _in_thread(self, operation: str, job: Callable[[], T]) -> T:
        """Run ``job`` off the event loop; sqlite3 and OS errors become LedgerError here."""
        future = asyncio.ensure_future(asyncio.to_thread(job))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: keep the lock until it is done with the connection.
            await asyncio.wait({future})
            raise
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"ledger {self._path}: {operation} failed: {exc}") from exc
