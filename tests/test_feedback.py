"""The feedback database (digitlab.feedback) and `digitlab feedback`: storing, counting,
deleting, the schema and its upgrade from an older version, several processes writing at once,
the exported dataset that `digitlab train --data-dir` reads, and the stored images.

The tests marked with the ``database`` fixture run on SQLite, and on PostgreSQL too when
``DIGITLAB_TEST_POSTGRES_URL`` names an empty database to use (its feedback tables are dropped
first), e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/feedback_test``.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import sqlite3
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from digitlab import cli
from digitlab.data import load_dataset
from digitlab.feedback import (FeedbackDBError, NewFeedback, export_dataset, input_png,
                               open_store, stored_png)
from digitlab.feedback.store import VERSION_TABLE, Base, schema_head
from digitlab.server.ratelimit import RateLimiter

MODEL_ID = "ab" * 32

# The schema as revision 0001 made it, written out by hand: an "older database" for the upgrade
# test does not come from the code under test.
V1_SCHEMA = f"""
CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO {VERSION_TABLE} VALUES ('0001');
CREATE TABLE feedback (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    created_at DATETIME NOT NULL,
    label SMALLINT NOT NULL,
    predicted SMALLINT,
    confidence FLOAT,
    model_id VARCHAR(64) NOT NULL,
    image_png BLOB NOT NULL,
    input_png BLOB NOT NULL,
    CONSTRAINT ck_feedback_label CHECK (label >= 0 AND label <= 9)
);
"""


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def drawing(img28: np.ndarray, size: int = 140) -> bytes:
    """An MNIST digit as the page's canvas sends it: dark ink on white, as a PNG."""
    return png(np.asarray(Image.fromarray(255 - img28).resize((size, size), Image.BILINEAR)))


def entry(image: bytes, label: int, predicted: int | None = None, confidence=0.5) -> NewFeedback:
    return NewFeedback(image_png=image, input_png=input_png(np.zeros((28, 28), np.uint8)),
                       label=label, predicted=predicted, confidence=confidence,
                       model_id=MODEL_ID)


POSTGRES_URL = os.environ.get("DIGITLAB_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """A new feedback database: an SQLite file, or the PostgreSQL database of
    DIGITLAB_TEST_POSTGRES_URL emptied of feedback tables."""
    if request.param == "sqlite":
        return str(tmp_path / "feedback.db")
    if not POSTGRES_URL:
        pytest.skip("DIGITLAB_TEST_POSTGRES_URL is not set (a PostgreSQL database to use)")
    from sqlalchemy import create_engine, text
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS feedback, {VERSION_TABLE}"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def store(database):
    with open_store(database) as s:
        yield s


def test_add_stats_delete(store, database):
    ids = [store.add(entry(b"a", 3, 3)), store.add(entry(b"b", 3, 5)),
           store.add(entry(b"c", 7, None, None)), store.add(entry(b"d", 0, 0, 0.99))]
    assert ids == [1, 2, 3, 4]
    s = store.stats()
    assert (s.total, s.right, s.wrong, s.rejected) == (4, 2, 1, 1)
    assert s.by_label["3"] == {"total": 2, "right": 1, "wrong": 1, "rejected": 0}
    assert s.by_label["7"] == {"total": 1, "right": 0, "wrong": 0, "rejected": 1}
    assert set(s.by_label) == {str(k) for k in range(10)} and s.by_label["9"]["total"] == 0
    row = store.get(2)
    assert (row.label, row.predicted, row.model_id, row.image_png) == (3, 5, MODEL_ID, b"b")
    assert row.image_sha256 == hashlib.sha256(b"b").hexdigest() and row.created_at is not None

    assert store.delete([4, 2, 99]) == [2, 4]
    assert store.get(2) is None and store.stats().total == 2
    assert store.delete([2]) == []
    # Ids are never reused, so an exported <id>.png always names one drawing.
    assert store.add(entry(b"e", 1)) == 5
    with pytest.raises(ValueError, match="0-9"):
        store.add(entry(b"f", 10))
    if store.engine.dialect.name == "sqlite":
        # The file holds people's drawings: only its owner may read it.
        assert os.stat(database).st_mode & 0o077 == 0


def test_sqlite_is_set_up_for_concurrent_writers(tmp_path):
    store = open_store(tmp_path / "f.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    statements = []
    from sqlalchemy import event
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cur, stmt, *a: statements.append(stmt))
    store.add(entry(b"x", 1))
    store.stats()
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"], statements  # the writer takes the lock first
    store.close()


def test_schema_matches_the_model(store):
    """The migrations build exactly the table the ORM class describes."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(ctx, Base.metadata) == []
    assert store.revision() == schema_head() == "0002"


def test_upgrade_from_version_1_keeps_the_rows(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(V1_SCHEMA)
    rows = [(1, "2024-05-01 10:00:00", 4, 9, 0.61, MODEL_ID, b"first image", b"in1"),
            (2, "2024-05-01 10:01:00", 8, None, None, MODEL_ID, b"second", b"in2"),
            (7, "2024-05-02 09:00:00", 2, 2, 0.97, "cd" * 32, b"third", b"in3")]
    con.executemany("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()

    with open_store(path, create=False) as store:
        assert store.revision() == schema_head()
        for id, _, label, predicted, confidence, model, image, inp in rows:
            row = store.get(id)
            assert (row.label, row.predicted, row.confidence, row.model_id, row.image_png,
                    row.input_png) == (label, predicted, confidence, model, image, inp)
            assert row.image_sha256 == hashlib.sha256(image).hexdigest()  # filled in
        assert store.stats().total == 3
        assert store.add(entry(b"new", 5)) == 8  # after the highest id, as before
    with sqlite3.connect(path) as con:
        index = con.execute("SELECT name FROM sqlite_master WHERE type='index' AND "
                            "tbl_name='feedback'").fetchall()
    assert ("ix_feedback_image_sha256",) in index
    with open_store(path, create=False) as store:  # opening again changes nothing
        assert store.stats().total == 4


def test_databases_it_refuses(tmp_path):
    newer = tmp_path / "newer.db"
    con = sqlite3.connect(newer)
    con.executescript(V1_SCHEMA.replace("'0001'", "'0099'"))
    con.close()
    with pytest.raises(FeedbackDBError, match="0099 is newer than this digitlab knows"):
        open_store(newer)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(FeedbackDBError, match="not a digitlab feedback database.*invoices"):
        open_store(other)

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(FeedbackDBError, match="not a database"):
        open_store(junk)

    with pytest.raises(FeedbackDBError, match="no such feedback database"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(FeedbackDBError, match="no such folder"):
        open_store(tmp_path / "nowhere" / "f.db")
    with pytest.raises(FeedbackDBError, match="in-memory"):
        open_store("sqlite:///:memory:")
    with pytest.raises(FeedbackDBError, match="no driver"):
        open_store("nosuchdialect://host/db")


# ---- several processes writing at once -----------------------------------------------------------

def _writer(path: str, seconds: float, worker: int, queue) -> None:
    """Add rows for ``seconds``; report the ids the store returned and any error."""
    ids, errors = [], []
    image = png(np.full((40, 40), worker * 40, np.uint8))
    with open_store(path) as store:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                ids.append(store.add(entry(image, worker % 10, worker % 10)))
            except Exception as exc:  # noqa: BLE001 - the test reports every failure
                errors.append(f"{type(exc).__name__}: {exc}")
    queue.put((worker, ids, errors))


def test_two_processes_write_at_once(database):
    """Two processes add rows for ~10 s (DIGITLAB_FEEDBACK_SOAK_S) while this one reads: every
    id a writer got back is a row, and no write failed ("database is locked"). The database
    is new: whichever process opens it first makes its schema."""
    seconds = float(os.environ.get("DIGITLAB_FEEDBACK_SOAK_S", "10"))
    path = database
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as uvicorn's workers are
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), seconds, w, queue)) for w in (1, 2)]
    for p in procs:
        p.start()
    reads = 0
    with open_store(path) as reader:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(p.is_alive() for p in procs):
            reader.stats()
            reads += 1
            time.sleep(0.05)
        results = [queue.get(timeout=seconds + 60) for _ in procs]
        for p in procs:
            p.join(30)
        errors = [e for _, _, errs in results for e in errs]
        assert errors == [], errors[:5]
        ids = [i for _, got, _ in results for i in got]
        assert all(len(got) > 10 for _, got, _ in results), [len(g) for _, g, _ in results]
        assert len(set(ids)) == len(ids)
        with reader.engine.connect() as conn:
            stored = {r[0] for r in conn.exec_driver_sql("SELECT id FROM feedback")}
        assert stored == set(ids)
        assert reader.stats().total == len(ids)
    print(f"\n{len(ids)} rows from 2 processes in {seconds:g} s, {reads} reads meanwhile")


# ---- export and `digitlab train --data-dir` -------------------------------------------------------

def test_export_is_a_dataset_train_reads(tmp_path, database, mnist):
    images = mnist.test_images[:12].numpy()
    labels = [int(y) for y in mnist.test_labels[:12]]
    with open_store(database) as store:
        ids = [store.add(entry(drawing(img), y, None)) for img, y in zip(images, labels)]
        dup = store.add(entry(drawing(images[0]), labels[0]))        # same image, same label
        relabelled = store.add(entry(drawing(images[1]), (labels[1] + 1) % 10))  # another label
        store.delete([ids[5]])
        out = tmp_path / "export"
        summary = export_dataset(store, out)

    expected = {(y, i) for i, y in zip(ids, labels) if i != ids[5]}
    expected.add(((labels[1] + 1) % 10, relabelled))
    written = {(int(p.parent.name), int(p.stem)) for p in out.glob("*/*.png")}
    assert written == expected
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [str(k) for k in range(10)]
    assert (out / str(labels[0]) / f"{ids[0]}.png").read_bytes() == drawing(images[0])
    assert not (out / str(labels[0]) / f"{dup}.png").exists()
    manifest = json.loads((out / "feedback-export.json").read_text())
    assert manifest == summary and summary["images"] == len(expected)
    assert summary["duplicates_skipped"] == 1 and summary["schema_revision"] == "0002"

    data = load_dataset(out)
    assert data.classes == [str(k) for k in range(10)]
    assert sorted(data.train_labels.tolist()) == sorted(y for y, _ in expected)
    assert data.train_images.shape == (len(expected), 28, 28)
    assert int(data.train_images.float().mean()) > 5  # digits found, not blank fields


def test_export_refuses_to_overwrite(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        first = store.add(entry(png(np.zeros((10, 10), np.uint8)), 1))
        second = store.add(entry(png(np.ones((10, 10), np.uint8)), 2))
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "notes.txt").write_text("keep me")
        with pytest.raises(FeedbackDBError, match="not an earlier feedback export"):
            export_dataset(store, mine, force=True)
        assert (mine / "notes.txt").read_text() == "keep me"

        out = tmp_path / "out"
        export_dataset(store, out)
        with pytest.raises(FeedbackDBError, match="--force"):
            export_dataset(store, out)
        store.delete([first])  # a privacy request: the next export no longer has it
        export_dataset(store, out, force=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.png")) == \
        [f"2/{second}.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_cli(tmp_path, capsys):
    db = tmp_path / "f.db"
    with open_store(db) as store:
        for k, (label, predicted) in enumerate(((1, 1), (1, 7), (4, None))):
            store.add(entry(png(np.full((8, 8), k * 20, np.uint8)), label, predicted))
    assert cli.main(["feedback", "stats", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 stored: 1 right, 1 wrong, 1 without an answer")
    assert cli.main(["feedback", "stats", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_label"]["1"]["wrong"] == 1

    assert cli.main(["feedback", "export", "--db", str(db), "--out", str(tmp_path / "ds")]) == 0
    assert "3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "ds").glob("*/*.png"))) == 3

    assert cli.main(["feedback", "delete", "--db", str(db), "1", "9"]) == 1
    captured = capsys.readouterr()
    assert "deleted 1 row(s): 1" in captured.out and "no feedback with id 9" in captured.err
    assert cli.main(["feedback", "stats", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such feedback database" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


# ---- the stored images ----------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_stored_png():
    plain = png(np.full((30, 20), 200, np.uint8))
    assert stored_png(plain) == plain  # the canvas PNG, byte for byte

    # A PNG with text (author, location...) is re-encoded without it.
    texted = plain[:-12] + _chunk(b"tEXt", b"Author\0Jane Doe, 12 Main St") + plain[-12:]
    out = stored_png(texted)
    assert b"Jane" not in out and out.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), np.full((30, 20), 200))

    # A phone photo: EXIF orientation applied, the EXIF itself (GPS...) not kept.
    photo = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[None, :], (40, 1)) * 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "PhoneMaker"
    buf = io.BytesIO()
    photo.convert("RGB").save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = Image.open(io.BytesIO(stored_png(buf.getvalue())))
    assert out.format == "PNG" and out.size == (40, 60)  # displayed upright
    assert not out.getexif() and "exif" not in out.info

    big = Image.fromarray(np.zeros((1500, 3000), np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="JPEG")
    assert Image.open(io.BytesIO(stored_png(buf.getvalue()))).size == (1024, 512)

    small = input_png(np.arange(784, dtype=np.uint8).reshape(28, 28))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(small))),
                          np.arange(784, dtype=np.uint8).reshape(28, 28))


def test_rate_limiter():
    now = [100.0]
    limiter = RateLimiter(rate=0.5, burst=3, max_clients=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)      # one token every 2 s
    assert limiter.take("b") == 0.0                     # each client has its own bucket
    now[0] += 1.0
    assert limiter.take("a") == pytest.approx(1.0)      # refused requests spend nothing
    now[0] += 1.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    limiter.take("c")                                   # a third client: "b" is forgotten
    assert list(limiter._buckets) == ["a", "c"]
