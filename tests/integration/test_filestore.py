"""The filestore in-process over the real RabbitMQ and its real database: bytes in and out in
chunks, stored once, verified, and deleted only when nothing needs them any more."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from freight_server.services.filestore import schema
from freight_server.services.filestore.blobs import BlobMismatch, LocalBlobStore
from freight_server.services.filestore.logs import LogStore
from freight_server.services.filestore.main import Filestore, build
from freight_server.services.filestore.retention import Retention
from freight_server.shared import filestore_protocol as protocol
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, EventType
from freight_server.shared.filestore_client import FilestoreClient
from freight_server.shared.filestore_protocol import log_record, log_records
from freight_server.shared.rpc import CHUNK, CHUNK_BYTES, WINDOW, Node, NodeConfig, RemoteError
from tests.waiting import wait_until


@pytest.fixture
def store_settings(settings: Settings) -> Settings:
    return replace(settings, transfer_timeout=2.0, file_gc_interval=0.1)


def start_filestore(settings: Settings) -> Iterator[Filestore]:
    filestore = build(settings)
    stop = threading.Event()
    thread = threading.Thread(target=filestore.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield filestore
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.fixture
def filestore(store_settings: Settings) -> Iterator[Filestore]:
    yield from start_filestore(store_settings)


@pytest.fixture
def node(store_settings: Settings) -> Iterator[Node]:
    s = store_settings
    publisher = Publisher(s.amqp_url, Topology.from_settings(s), "test-client", s.publish_timeout)
    node = Node(NodeConfig(s.amqp_url, f"{s.namespace}.test", timeout=5.0), publisher).start()
    yield node
    node.close()
    publisher.close()


@pytest.fixture
def client(node: Node, store_settings: Settings) -> FilestoreClient:
    return FilestoreClient(node, store_settings.namespace)


def blob_files(settings: Settings) -> list[Path]:
    return sorted((settings.home / "blobs" / "sha256").glob("*/*"))


def partial_files(settings: Settings) -> list[Path]:
    return sorted((settings.home / "blobs" / "tmp").iterdir())


def pack_files(settings: Settings) -> list[Path]:
    return sorted((settings.home / "blobs" / "packs").iterdir())


def stored_rows(settings: Settings) -> list[tuple[str, str | None]]:
    """Each blob the filestore recorded, with its pack."""
    engine = create_engine(settings.database_url_for("filestore"))
    try:
        with engine.connect() as connection:
            query = sa.select(schema.blobs.c.digest, schema.blobs.c.pack)
            return [(row.digest, row.pack) for row in connection.execute(query)]
    finally:
        engine.dispose()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_bytes_go_in_and_come_back_identical_and_are_stored_once(filestore, client, store_settings):
    data = os.urandom(5 * 1024 * 1024 + 123)
    stored = client.upload(pieces(data, 300_000))
    assert stored.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert stored.size == len(data)

    again = client.upload(pieces(data, 1 << 20))
    assert again.digest == stored.digest and again.upload != stored.upload
    assert len(blob_files(store_settings)) == 1 and partial_files(store_settings) == []

    with client.download(stored.digest) as download:
        assert download.head["size"] == len(data)
        assert b"".join(download) == data


def test_an_empty_file_is_a_blob_too(filestore, client):
    stored = client.upload([])
    assert stored.size == 0
    with client.download(stored.digest) as download:
        assert b"".join(download) == b""


def test_small_blobs_go_in_together_in_one_pack_each_stored_once_and_held(
    filestore, client, store_settings
):
    blobs = [b"one", os.urandom(100_000), b"", b"one"]
    stored = client.upload_many(blobs)

    assert [s.digest for s in stored] == [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in blobs]
    assert [s.size for s in stored] == [len(b) for b in blobs]
    assert len({s.upload for s in stored}) == 1  # the batch's: one hold for what it stored
    assert blob_files(store_settings) == [] and partial_files(store_settings) == []
    (pack,) = pack_files(store_settings)
    assert pack.stat().st_size == 3 + 100_000  # "one" once
    assert sorted(stored_rows(store_settings)) == sorted(
        (s.digest, None if s.size == 0 else pack.name) for s in stored[:3]
    )  # the empty blob is in no pack: it is there, stored or not
    for blob, saved in zip(blobs, stored, strict=True):
        with client.download(saved.digest) as download:
            assert download.head["size"] == len(blob)
            assert b"".join(download) == blob

    # Sent again with one new blob: only that one is recorded, in a pack of its own; a pack of
    # nothing new is not kept.
    again = client.upload_many([b"one", b"two"])
    assert [s.digest for s in again] == [stored[0].digest, _digest(b"two")]
    # "one" was stored already: held apart from this batch, and from the batch before.
    assert len({again[0].upload, again[1].upload, stored[0].upload}) == 3
    assert sorted(p.stat().st_size for p in pack_files(store_settings)) == [3, 100_003]
    assert client.upload_many([b"one", b"two"])[1].digest == _digest(b"two")
    assert len(pack_files(store_settings)) == 2 and partial_files(store_settings) == []
    with client.download(again[1].digest) as download:
        assert b"".join(download) == b"two"


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_job_that_printed_nothing_refers_to_bytes_never_stored(filestore, client):
    with client.download(protocol.EMPTY_DIGEST) as download:
        assert download.head["size"] == 0 and b"".join(download) == b""


def test_a_missing_blob_is_not_found(filestore, client):
    with pytest.raises(RemoteError) as raised:
        client.download("sha256:" + "0" * 64)
    assert raised.value.code == protocol.NOT_FOUND


def test_an_upload_whose_source_fails_leaves_nothing(filestore, client, store_settings):
    def broken() -> Iterator[bytes]:
        yield os.urandom(3 * 1024 * 1024)
        raise ConnectionResetError("the user went away")

    with pytest.raises(ConnectionResetError):
        client.upload(broken())
    wait_until(lambda: partial_files(store_settings) == [], what="the partial upload to go")
    assert blob_files(store_settings) == []


def test_an_upload_that_fails_windows_in_leaves_nothing(filestore, client, store_settings):
    # Past the first batches: the filestore has written some chunks when ABORT comes.
    def broken() -> Iterator[bytes]:
        for _ in range(3 * WINDOW):
            yield os.urandom(CHUNK_BYTES)
        raise ConnectionResetError("the user went away")

    with pytest.raises(ConnectionResetError):
        client.upload(broken())
    wait_until(lambda: partial_files(store_settings) == [], what="the partial upload to go")
    assert blob_files(store_settings) == []


def test_a_silent_uploader_is_given_up_on(filestore, node, store_settings):
    conversation = node.conversation(protocol.filestore_queue(store_settings.namespace))
    conversation.send(protocol.PUT)
    conversation.send(CHUNK, b"x" * 1000, headers={"seq": 0})
    wait_until(lambda: len(partial_files(store_settings)) == 1, what="the upload to begin")
    # Then nothing more: after FREIGHT_TRANSFER_TIMEOUT the filestore discards it.
    wait_until(lambda: partial_files(store_settings) == [], timeout=10, what="the upload to go")
    conversation.close()


def test_bytes_that_do_not_match_their_digest_are_refused(filestore, node, store_settings):
    with node.conversation(protocol.filestore_queue(store_settings.namespace)) as conversation:
        conversation.send(protocol.PUT)
        conversation.send(CHUNK, b"hello", headers={"seq": 0})
        conversation.send(protocol.COMMIT, data={"digest": "sha256:" + "1" * 64, "size": 5})
        with pytest.raises(RemoteError) as raised:
            conversation.receive()
    assert raised.value.code == protocol.MISMATCH
    wait_until(lambda: partial_files(store_settings) == [], what="the refused upload to go")
    assert blob_files(store_settings) == []


def test_local_store_checks_digest_and_size(tmp_path):
    store = LocalBlobStore(tmp_path)
    writer = store.begin()
    writer.write(b"abc")
    with pytest.raises(BlobMismatch):
        writer.seal(f"sha256:{hashlib.sha256(b'abc').hexdigest()}", 4)
    writer.discard()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_local_store_keeps_bytes_sent_again_once(tmp_path):
    store = LocalBlobStore(tmp_path)
    digest = f"sha256:{hashlib.sha256(b'abc').hexdigest()}"

    def put() -> None:
        writer = store.begin()
        writer.write(b"abc")
        writer.seal(digest, 3)
        writer.publish({digest})
        writer.discard()

    put()
    put()  # already stored: not made durable again, and its copy goes
    assert [p.name for p in (tmp_path / "sha256").glob("*/*")] == [digest.removeprefix("sha256:")]
    assert list((tmp_path / "tmp").iterdir()) == []

    # Stored when sealed, deleted before published: published (and made durable) after all.
    writer = store.begin()
    writer.write(b"abc")
    writer.seal(digest, 3)
    store.delete(digest)
    writer.publish({digest})
    writer.discard()
    reader = store.open(digest)
    assert b"".join(reader.chunks(2)) == b"abc"
    reader.close()


class TestRetention:
    """Against SQLite and PostgreSQL: the deletion rules are queries."""

    @pytest.fixture
    def store_settings(self, settings: Settings, database_url: str) -> Settings:
        return replace(
            settings,
            database_url=database_url,
            transfer_timeout=2.0,
            file_gc_interval=0.1,
            upload_grace=1.0,
            file_retention=0.0,
        )

    @pytest.fixture
    def log(self, store_settings: Settings) -> Iterator[Publisher]:
        s = store_settings
        publisher = Publisher(s.amqp_url, Topology.from_settings(s), "test-log", s.publish_timeout)
        yield publisher
        publisher.close()

    def test_release_deletes_what_no_job_uses(self, filestore, client, store_settings):
        wait_until(filestore.retention.caught_up.is_set, what="the filestore to catch up")
        stored = client.upload([b"abandoned"])
        kept = client.upload([b"abandoned"])  # another upload of the same bytes holds them
        client.release([stored.upload])
        assert len(blob_files(store_settings)) == 1
        client.release([kept.upload])
        assert blob_files(store_settings) == []

    def test_a_blob_lives_while_a_job_needs_it(self, filestore, client, store_settings, log):
        new_event = EventFactory("test")
        stored = client.upload([b"input bytes"])
        orphan = client.upload([b"nobody's"])
        submitted = new_event(
            EventType.JOB_SUBMITTED,
            "job-1",
            command="true",
            image="x",
            files=[{"path": "/job/in", "digest": stored.digest, "size": stored.size}],
        )
        log.append(submitted)
        # The holds expire after a second: the orphan goes, the job's input stays.
        wait_until(lambda: len(blob_files(store_settings)) == 1, what="the orphan to go")
        with client.download(stored.digest) as download:
            assert b"".join(download) == b"input bytes"
        with pytest.raises(RemoteError):
            client.download(orphan.digest)

        log.append(
            new_event(EventType.JOB_ASSIGNED, "job-1", runner="r", attempt=1, gpus=[]),
            new_event(EventType.JOB_FINISHED, "job-1", attempt=1, outcome="succeeded"),
        )
        # Retention is zero here: once the job has ended, nothing keeps its input.
        wait_until(lambda: blob_files(store_settings) == [], what="the input to go")
        # Nor its rows: the tables hold one retention period's jobs, not all of them.
        engine = create_engine(store_settings.database_url_for("filestore"))
        try:
            wait_until(
                lambda: all(
                    _count_rows(engine, table) == 0 for table in (schema.refs, schema.jobs)
                ),
                what="the job's rows to go",
            )
        finally:
            engine.dispose()

    def test_a_pack_goes_with_the_last_of_its_blobs(self, filestore, client, store_settings, log):
        new_event = EventFactory("test")
        output, orphan = client.upload_many([b"an output", b"nobody's"])
        (pack,) = pack_files(store_settings)
        saved = {"path": "/job/out", "digest": output.digest, "size": output.size}
        log.append(
            new_event(EventType.JOB_SUBMITTED, "job-2", command="true", image="x"),
            new_event(EventType.JOB_ASSIGNED, "job-2", runner="r", attempt=1, gpus=[]),
            new_event(EventType.JOB_OUTPUTS_SAVED, "job-2", attempt=1, files=[saved]),
        )
        # The orphan's hold expires and it goes; the pack stays for the output.
        wait_until(
            lambda: [digest for digest, _ in stored_rows(store_settings)] == [output.digest],
            what="the orphan to go",
        )
        assert pack_files(store_settings) == [pack]
        with client.download(output.digest) as download:
            assert b"".join(download) == b"an output"
        with pytest.raises(RemoteError):
            client.download(orphan.digest)

        log.append(new_event(EventType.JOB_FINISHED, "job-2", attempt=1, outcome="succeeded"))
        wait_until(lambda: pack_files(store_settings) == [], what="the pack to go")
        assert stored_rows(store_settings) == []

    def test_ending_one_batchs_hold_leaves_another_batchs_on_the_same_bytes(
        self, store_settings, client, log
    ):
        # A grace long enough that only an ended hold lets a blob go.
        with contextmanager(start_filestore)(replace(store_settings, upload_grace=60)) as fs:
            wait_until(fs.retention.caught_up.is_set, what="the filestore to catch up")
            (first,) = client.upload_many([b"the same output"])
            again, other = client.upload_many([b"the same output", b"another"])
            assert again.upload not in (first.upload, other.upload)
            new_event = EventFactory("test")
            saved = {"path": "/job/out", "digest": first.digest, "size": first.size}
            log.append(
                new_event(EventType.JOB_SUBMITTED, "job-3", command="true", image="x"),
                new_event(EventType.JOB_ASSIGNED, "job-3", runner="r", attempt=1, gpus=[]),
                new_event(
                    EventType.JOB_OUTPUTS_SAVED,
                    "job-3",
                    attempt=1,
                    files=[{**saved, "upload": first.upload}],
                ),
                new_event(EventType.JOB_FINISHED, "job-3", attempt=1, outcome="succeeded"),
            )
            # Retention is zero: job-3's end and the end of the first batch's hold free the
            # bytes, but the second batch still holds them for a job yet to come.
            engine = create_engine(store_settings.database_url_for("filestore"))
            try:
                wait_until(lambda: _count_rows(engine, schema.jobs) == 0, what="job-3's rows to go")
            finally:
                engine.dispose()
            fs.retention.collect()
            with client.download(first.digest) as download:
                assert b"".join(download) == b"the same output"


def test_bytes_outlive_a_failed_commit_of_their_collection(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/filestore.db")
    migrate(engine, "filestore")
    store = LocalBlobStore(tmp_path / "blobs")
    now = datetime.now(UTC)
    retention = Retention(
        engine, store, LogStore(tmp_path / "logs"), threading.RLock(), timedelta(0), lambda: now
    )
    retention.caught_up.set()
    staged = store.stage([b"doomed"], lambda digests: set())
    (digest,) = staged.digests
    place = staged.place_of(digest, 6)
    assert place is not None
    with engine.begin() as connection:
        connection.execute(
            schema.blobs.insert(),
            {"digest": digest, "size": 6, "stored_at": now, "pack": place.pack, "pack_offset": 0},
        )
        staged.publish({digest})

    def refuse(_connection: sa.Connection) -> None:
        raise OSError("the disk is full")

    sa.event.listen(engine, "commit", refuse)
    with pytest.raises(OSError):
        retention.collect()
    sa.event.remove(engine, "commit", refuse)
    # Still recorded, so still there.
    assert b"".join(store.open(digest, place).chunks(1024)) == b"doomed"

    assert retention.collect() == 1
    assert list(store.packs.iterdir()) == []
    engine.dispose()


def test_a_pack_never_recorded_goes_at_start_and_a_recorded_one_stays(store_settings, client):
    with contextmanager(start_filestore)(store_settings):
        (stored,) = client.upload_many([b"kept"])
    (recorded,) = pack_files(store_settings)
    # A pack written in place by a filestore that died before recording its blobs:
    recorded.with_name(uuid.uuid4().hex).write_bytes(b"lost")

    with contextmanager(start_filestore)(store_settings):
        assert pack_files(store_settings) == [recorded]
        with client.download(stored.digest) as download:
            assert b"".join(download) == b"kept"


def _count_rows(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_a_log_is_appended_once_read_by_stream_and_tailed(filestore, client):
    job_id, attempt = "job-logs", 1
    first = log_record(1, b"one\ntw") + log_record(2, b"oops\n")
    size = client.append_log(job_id, attempt, 0, first)
    assert client.append_log(job_id, attempt, 0, first) == size  # a retried batch, not repeated
    second = log_record(1, b"o\nthree\n")
    size = client.append_log(job_id, attempt, size, second)
    with pytest.raises(RemoteError) as raised:
        client.append_log(job_id, attempt, 3, second)  # not where the log ends
    assert raised.value.code == protocol.INVALID

    chunk = client.read_log(job_id, attempt, 0, ["stdout", "stderr"])
    bodies = [body for _, body in log_records(chunk.records)]
    assert bodies == [b"one\ntw", b"oops\n", b"o\nthree\n"]
    assert chunk.next == size and not chunk.closed
    stdout = client.read_log(job_id, attempt, 0, ["stdout"])
    assert b"".join(body for _, body in log_records(stdout.records)) == b"one\ntwo\nthree\n"

    offset, skip = client.tail_log(job_id, attempt, 2, ["stdout"])
    tail = client.read_log(job_id, attempt, offset, ["stdout"])
    assert b"".join(body for _, body in log_records(tail.records))[skip:] == b"two\nthree\n"

    client.close_log(job_id, attempt)
    assert client.read_log(job_id, attempt, size, ["stdout"]).closed
    assert client.log_state(job_id, attempt) == {"size": size, "payload": 19, "closed": True}

    saved = client.save_log(job_id, attempt)  # the job's /.freight/stdout and stderr
    for stream, expected in (("stdout", b"one\ntwo\nthree\n"), ("stderr", b"oops\n")):
        with client.download(saved[stream].digest) as download:
            assert b"".join(download) == expected and saved[stream].size == len(expected)
