"""Which tables and indexes one worker commit writes, page by page (SQLite).

    .venv/bin/python -m bench.commit_pages                 # 20,000 messages stored first
    .venv/bin/python -m bench.commit_pages --messages 100000

A commit writes every page it dirtied, whole, to the WAL (and a checkpoint copies it again into
the database file). A B-tree whose keys arrive in order (rowids, times, UUIDv7 ids) takes a
commit's new entries on a few pages at its right edge; one keyed by a random value (UUIDv5
resource ids, UUIDv4) takes about one page per entry, up to every page it has. This processes
``--messages`` of the PCD-01 ORUs of ``bench.hl7_mllp`` (a database of that size), then one more
batch of ``HUB_WORKER_BATCH`` messages with the WAL emptied just before, and counts the frames
of that one commit by the B-tree their page belongs to (SQLite's ``dbstat``).

Last line JSON: frames by B-tree.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import struct
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.hl7_mllp import messages
from bench.ingest import REPO, SECRET
from hub.runtime import Hub
from hub.settings import Settings
from hub.store import inbox
from hub.store.db import upgrade, write_tx
from hub.telemetry import Telemetry

WAL_HEADER, FRAME_HEADER = 32, 24


def wal_pages(path: str) -> list[int]:
    """The page number of every frame in a WAL file (sqlite.org/fileformat2.html#walformat)."""
    data = Path(path).read_bytes()
    if len(data) < WAL_HEADER:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, offset = [], WAL_HEADER
    while offset + FRAME_HEADER <= len(data):
        pages.append(struct.unpack(">I", data[offset:offset + 4])[0])
        offset += FRAME_HEADER + page_size
    return pages


def store(hub: Hub, bodies: list[bytes], first: int) -> None:
    rows = [{"source": "hl7v2", "channel": "mllp", "content_type": "x-application/hl7-v2+er7",
             "body": body, "dedupe_key": f"bench:{first + i}", "status": inbox.STATUS_RECEIVED,
             "error": None, "client": None, "reply": None, "traceparent": None, "meta": None}
            for i, body in enumerate(bodies)]
    with write_tx(hub.engine) as conn:
        inbox.insert_many(conn, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    batch = Settings().worker_batch
    bodies = messages(args.messages + batch)
    with tempfile.TemporaryDirectory(prefix="hub-bench-pages-") as scratch:
        path = f"{scratch}/hub.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        hub = Hub.build(Settings(database_url=url, env="test", secret_key=SECRET,
                                 mappings_dir=REPO / "mappings", inline_worker=False),
                        Telemetry.disabled())
        for start in range(0, args.messages, 5_000):
            store(hub, bodies[start:min(start + 5_000, args.messages)], start)
            while hub.pipeline.run_batch(hub.engine, batch):
                pass
        store(hub, bodies[args.messages:], args.messages)
        hub.engine.dispose()  # its connections gone: their caches, their WAL read marks
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if os.path.getsize(f"{path}-wal"):
            raise SystemExit("the WAL could not be emptied")

        @event.listens_for(hub.engine, "connect")
        def _no_checkpoint(dbapi_conn: Any, _record: Any) -> None:
            # (an automatic checkpoint would empty the WAL the commit is counted from)
            dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

        done = hub.pipeline.run_batch(hub.engine, batch)
        pages = wal_pages(f"{path}-wal")
        hub.engine.dispose()
        with sqlite3.connect(path) as conn:
            names = dict(conn.execute("SELECT pageno, name FROM dbstat").fetchall())
    frames = collections.Counter(names.get(p, "(freed)") for p in pages)
    print(f"one commit of {done} PCD-01 ORUs on a database of {args.messages:,} messages: "
          f"{len(pages):,} pages written ({len(pages) / max(done, 1):.2f} a message)")
    for name, count in frames.most_common():
        print(f"  {name:36s} {count:6,d}")
    print(json.dumps({"messages_before": args.messages, "committed": done,
                      "pages": len(pages), "by_btree": dict(frames.most_common())}))


if __name__ == "__main__":
    main()
