"""The feedback database through SQLAlchemy 2: the table, opening and upgrading, and the
operations the server and the CLI need (add, stats, delete, export).

SQLite is set up for several processes writing at once: WAL journal (readers never wait for
the writer), a 30 s busy timeout (a writer waits for the lock instead of failing with
"database is locked"), and writes in ``BEGIN IMMEDIATE`` transactions, which take the write
lock when they start: a transaction that reads first and writes later would otherwise fail at
once, busy timeout or not, when another process wrote in between (SQLite cannot upgrade a
stale read snapshot). Deleted rows are overwritten (``secure_delete``), and a delete ends with
a WAL checkpoint so that old copies of the pages leave the log too.

Opening a store upgrades its schema in place with the Alembic migrations in ``migrations/``,
under a lock (SQLite: the write lock; PostgreSQL: an advisory lock), so that several workers or
replicas starting at once upgrade it once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (CheckConstraint, DateTime, Float, LargeBinary, SmallInteger, String,
                        case, create_engine, delete, event, func, inspect, select, text)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..errors import DigitlabError
from ..io import write_json

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "digitlab_feedback_version"  # Alembic's table, named so as not to meet another app's
LABELS = tuple(range(10))
BUSY_TIMEOUT_S = 30.0  # how long an SQLite writer waits for another one's lock
_MIGRATION_LOCK = 0x6469676974  # PostgreSQL advisory lock key ("digit") held while upgrading
_WRITE = "digitlab_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
MANIFEST = "feedback-export.json"


class FeedbackDBError(DigitlabError):
    """The feedback database cannot be opened, is not digitlab's, or has a schema this
    version of digitlab does not know."""


class Base(DeclarativeBase):
    pass


class Feedback(Base):
    """One answer a user judged: the image, the digit they say it is, what the model said.
    This is the schema as the newest migration leaves it (a test checks that they agree)."""

    __tablename__ = "feedback"
    # AUTOINCREMENT: ids are never reused after a delete, so <id>.png always names one drawing.
    __table_args__ = (CheckConstraint("label >= 0 AND label <= 9", name="ck_feedback_label"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    label: Mapped[int] = mapped_column(SmallInteger)  # the digit the user says it is
    predicted: Mapped[int | None] = mapped_column(SmallInteger)  # None: the model gave no digit
    confidence: Mapped[float | None] = mapped_column(Float)  # of the model's top class, 0..1
    model_id: Mapped[str] = mapped_column(String(64))  # SHA-256 of the served model's weights
    image_png: Mapped[bytes] = mapped_column(LargeBinary)  # the original (images.stored_png)
    input_png: Mapped[bytes] = mapped_column(LargeBinary)  # the 28x28 the model saw
    image_sha256: Mapped[str] = mapped_column(String(64), index=True, server_default="")


@dataclass(frozen=True)
class NewFeedback:
    image_png: bytes
    input_png: bytes
    label: int
    predicted: int | None
    confidence: float | None
    model_id: str


@dataclass
class Stats:
    """Counts of stored feedback: ``right`` (the model's digit was the label), ``wrong`` (it
    gave another digit), ``rejected`` (it gave none); the same per label."""

    total: int = 0
    right: int = 0
    wrong: int = 0
    rejected: int = 0
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def database_url(spec: str | os.PathLike) -> URL:
    """``--feedback-db``'s value as a URL: a file path is an SQLite database, anything with
    ``://`` a SQLAlchemy URL (``postgresql+psycopg://user@host/db``)."""
    raw = os.fspath(spec)
    if "://" in raw:
        try:
            url = make_url(raw)
        except ArgumentError as exc:
            raise FeedbackDBError(f"not a database URL: {exc}") from None
    else:
        if not raw.strip():
            raise FeedbackDBError("empty feedback database path")
        url = URL.create("sqlite", database=str(Path(raw).expanduser().absolute()))
    if url.get_backend_name() == "sqlite" and (
            not url.database or url.database == ":memory:" or "mode=memory" in url.database
            or url.query.get("mode") == "memory"):
        raise FeedbackDBError("an in-memory SQLite database would lose every row and cannot "
                              "be shared by workers: give a file path")
    return url


def shown(url: URL) -> str:
    """A URL as messages show it: without its password."""
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url: URL, create: bool) -> Engine:
    path = Path(url.database)
    if not path.exists():
        if not create:
            raise FeedbackDBError(f"{path}: no such feedback database")
        if not path.parent.is_dir():
            raise FeedbackDBError(f"{path.parent}: no such folder for the feedback database")
        try:
            # Readable by this user only: it holds people's drawings. SQLite gives its -wal
            # and -shm files the same permissions.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:  # another worker was first
            pass
        except OSError as exc:
            raise FeedbackDBError(f"{path}: cannot create the feedback database: "
                                  f"{exc.strerror}") from None
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):
        # The driver's own transaction handling off: SQLAlchemy emits BEGIN itself (below),
        # so that reads are in a transaction too and writers can ask for the lock up front.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: journal mode is %s, not WAL (a network file system?): readers "
                        "will wait for writers", path, mode)
        cur.execute("PRAGMA secure_delete = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE)
                             else "BEGIN")

    return engine


def _engine(url: URL, create: bool) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url, create)
        return create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        hint = (" (pip install 'psycopg[binary]', or digitlab[postgres])"
                if url.get_backend_name() == "postgresql" else "")
        raise FeedbackDBError(f"{shown(url)}: no driver for this database: {exc}{hint}") from None


def _db_error(url: URL, exc: SQLAlchemyError) -> FeedbackDBError:
    reason = getattr(exc, "orig", None) or exc
    return FeedbackDBError(f"{shown(url)}: {str(reason).splitlines()[0]}")


def open_store(spec: str | os.PathLike | URL, *, create: bool = True) -> FeedbackStore:
    """Open the feedback database at ``spec`` (path or URL) and bring its schema up to date.
    ``create``: make a new SQLite file if there is none (else that is an error)."""
    url = spec if isinstance(spec, URL) else database_url(spec)
    engine = _engine(url, create)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _db_error(url, exc) from None
    except BaseException:
        engine.dispose()
        raise
    return FeedbackStore(engine, url)


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def schema_head() -> str:
    """The newest schema revision this digitlab knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision, in one transaction holding a lock that the
    other processes upgrading the same database wait for. Refuses a database that is not a
    feedback database, or one a newer digitlab has upgraded past what this one knows."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)
    with engine.execution_options(**{_WRITE: True}).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables:
            others = tables if conn.dialect.name == "sqlite" else tables & {Feedback.__tablename__}
            if others:
                raise FeedbackDBError(
                    f"{shown(engine.url)}: not a digitlab feedback database (it has tables "
                    f"{', '.join(sorted(others))} but no {VERSION_TABLE}); give a new file or "
                    f"an empty database")
        current = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
        known = {s.revision for s in script.walk_revisions()}
        unknown = sorted(set(current) - known)
        if unknown:
            raise FeedbackDBError(
                f"{shown(engine.url)}: schema revision {', '.join(unknown)} is newer than this "
                f"digitlab knows (up to {script.get_current_head()}): upgrade digitlab")
        if set(current) == set(script.get_heads()):
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        log.info("feedback database %s upgraded from %s to %s", shown(engine.url),
                 ", ".join(current) or "empty", script.get_current_head())


class FeedbackStore:
    """An open feedback database. Safe to share between threads; each call is one transaction.
    Database failures raise SQLAlchemy's errors (the server answers 503, the CLI one line)."""

    def __init__(self, engine: Engine, url: URL):
        self.engine = engine
        self.url = url
        self._read = sessionmaker(engine)
        self._write = sessionmaker(engine.execution_options(**{_WRITE: True}),
                                   expire_on_commit=False)

    def __repr__(self) -> str:
        return f"FeedbackStore({shown(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

    def add(self, entry: NewFeedback) -> int:
        """Store one entry; returns its id (once this returns, the row is committed)."""
        if entry.label not in LABELS:
            raise ValueError(f"label must be 0-9, got {entry.label!r}")
        row = Feedback(created_at=datetime.now(timezone.utc), label=entry.label,
                       predicted=entry.predicted, confidence=entry.confidence,
                       model_id=entry.model_id, image_png=entry.image_png,
                       input_png=entry.input_png,
                       image_sha256=hashlib.sha256(entry.image_png).hexdigest())
        with self._write() as session, session.begin():
            session.add(row)
        return row.id

    def get(self, id: int) -> Feedback | None:
        with self._read() as session:
            return session.get(Feedback, id)

    def stats(self) -> Stats:
        right = func.sum(case((Feedback.predicted == Feedback.label, 1), else_=0))
        rejected = func.sum(case((Feedback.predicted.is_(None), 1), else_=0))
        query = select(Feedback.label, func.count(), right, rejected).group_by(Feedback.label)
        out = Stats(by_label={str(k): {"total": 0, "right": 0, "wrong": 0, "rejected": 0}
                              for k in LABELS})
        with self._read() as session:
            for label, total, r, rej in session.execute(query):
                r, rej = int(r or 0), int(rej or 0)
                counts = {"total": total, "right": r, "wrong": total - r - rej, "rejected": rej}
                out.by_label[str(label)] = counts
                out.total += total
                out.right += r
                out.wrong += counts["wrong"]
                out.rejected += rej
        return out

    def delete(self, ids: Iterable[int]) -> list[int]:
        """Delete these rows; returns the ids that existed (the others are ignored)."""
        ids = sorted({int(i) for i in ids})
        with self._write() as session, session.begin():
            found = list(session.scalars(select(Feedback.id).where(Feedback.id.in_(ids))))
            if found:
                session.execute(delete(Feedback).where(Feedback.id.in_(found)))
        if found and self.engine.dialect.name == "sqlite":
            self._checkpoint()
        return found

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and empty it, so that the deleted rows' old pages
        are gone from the log too (best effort: a long reader elsewhere can hold it back)."""
        raw = self.engine.raw_connection()
        try:
            busy, _, _ = raw.driver_connection.execute(
                "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.info("WAL checkpoint after a delete was held back by a reader")
        except Exception as exc:  # noqa: BLE001 - the delete itself has been committed
            log.warning("WAL checkpoint after a delete failed: %s", exc)
        finally:
            raw.close()

    def rows(self, batch: int = 200) -> Iterator[tuple[int, int, str, bytes]]:
        """(id, label, image_sha256, image_png) of every row in id order, ``batch`` rows in
        memory at a time."""
        query = (select(Feedback.id, Feedback.label, Feedback.image_sha256, Feedback.image_png)
                 .order_by(Feedback.id).execution_options(yield_per=batch))
        with self._read() as session:
            for row in session.execute(query):
                yield tuple(row)


def export_dataset(store: FeedbackStore, out: str | os.PathLike, force: bool = False) -> dict:
    """Write every stored original image as ``out/<label>/<id>.png``: the image-folder layout
    ``digitlab train --data-dir`` reads (``data.load_image_folder``). All ten label folders are
    made, empty or not, so that the classes are always 0-9. An image stored twice with the same
    label is written once. The folder is built beside ``out`` and moved into place whole;
    ``force`` replaces an earlier export (never a folder that is not one). Returns the summary
    also written to ``out/feedback-export.json``."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise FeedbackDBError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not (out / MANIFEST).is_file():
                raise FeedbackDBError(f"{out}: not empty and not an earlier feedback export; "
                                      f"choose a new or empty folder")
            if not force:
                raise FeedbackDBError(f"{out}: holds an earlier export; --force replaces it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for label in LABELS:
            (tmp / str(label)).mkdir()
        seen: set[tuple[str, int]] = set()
        counts = {str(k): 0 for k in LABELS}
        duplicates = 0
        for id, label, digest, png in store.rows():
            if (digest, label) in seen:
                duplicates += 1
                continue
            seen.add((digest, label))
            (tmp / str(label) / f"{id}.png").write_bytes(png)
            counts[str(label)] += 1
        summary = {"format": "digitlab-feedback-export", "images": sum(counts.values()),
                   "by_label": counts, "duplicates_skipped": duplicates,
                   "schema_revision": store.revision(),
                   "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(tmp / MANIFEST, summary)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "export")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
