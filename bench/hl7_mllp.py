"""HL7v2 end to end: PCD-01 ORUs over MLLP until every one is stored as Observations.

    .venv/bin/python -m bench.hl7_mllp                       # 20,000 messages, 8 connections
    .venv/bin/python -m bench.hl7_mllp --messages 50000 --topology inline
    .venv/bin/python -m bench.hl7_mllp --topology phases --prepare-procs 1

Workload: the corpus's IHE PCD-01 "Acme" NIBP ORU with a pulse-rate OBX added (6 OBX: MDS and
channel rows, systolic/diastolic/mean, pulse rate), each message with its own MSH-10 and
measurement time, so each yields 2 Observations (the BP panel and a heart rate) plus the device
tree. A fresh SQLite database (``synchronous=FULL``: every ACK follows an fsynced commit) and a
real hub in subprocesses: ``hub mllp`` plus one ``hub worker`` (``--topology split``, the
default: one core each on 2 cores) or ``hub mllp --worker`` (``inline``). ``--connections``
senders each send their share over one connection, waiting for every ACK (MLLP is synchronous).
The clock runs from the first frame until the database holds every Observation (polled); the
ACK rate is reported too. ``--prepare-procs N`` starts the worker with that many preparing
processes (``hub worker --prepare-procs``). ``--topology phases`` separates the two halves:
``hub mllp`` alone until every ACK (the listener's own rate, no worker competing for SQLite's
write lock), then ``hub worker`` alone until every Observation (the pipeline's rate). Every ACK
must be AA and every message ``processed``.

Baselines, measured in this same run on the same bytes (single process, parse only, no I/O):
hl7apy ``parse_message`` and python-hl7 ``hl7.parse`` (bench/hl7_parse.py), the hub's tokenizer.

The CPU time of each hub process (a worker's with its preparing processes) per message is
printed too, and the senders' (this process, until the last ACK: they share the 2 cores):
wall-clock rates move with other jobs on a shared machine, CPU per message much less.
(``phases``: the worker's includes its start-up, about 1 s of CPU.)

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.hl7_parse import best_us, hl7apy, ours, pcd01_oru, python_hl7
from connectors.mllp import MllpClient
from hub.store.db import make_engine, upgrade

REPO = Path(__file__).resolve().parent.parent


def messages(count: int) -> list[bytes]:
    """``count`` PCD-01 ORUs: distinct MSH-10 and a distinct second for every measurement."""
    base = pcd01_oru()
    out = []
    for i in range(count):
        stamp = f"2026{1 + i // 2_678_400 % 12:02d}{1 + i // 86_400 % 28:02d}" \
                f"{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}+0000".encode()
        msg = base.replace(b"MSGID1234", f"BENCH{i:09d}".encode())
        msg = msg.replace(b"20090813095715+0500", stamp)
        out.append(msg)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants (a worker's preparing
    processes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        here = todo.pop()
        if here in stats:
            total += (int(stats[here][11]) + int(stats[here][12])) / tick
        todo += children.get(here, [])
    return total


@contextmanager
def hub_processes(url: str, port: int, topology: str, prepare_procs: int = 0
                  ) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_MAPPINGS_DIR": str(REPO / "mappings"),
           "HUB_ENV": "test", "HUB_SECRET_KEY": "bench-secret-not-for-production"}
    mllp = [sys.executable, "-m", "hub", "mllp", "--no-migrate", "--port", str(port)]
    commands = [mllp + (["--worker"] if topology == "inline" else [])]
    worker = [sys.executable, "-m", "hub", "worker", "--prepare-procs", str(prepare_procs)]
    if topology == "split":
        commands.append(worker)
    if topology == "worker":
        commands = [worker]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in commands]
    try:
        deadline = time.monotonic() + 30
        while topology != "worker":
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError("hub did not start") from None
                time.sleep(0.1)
        if topology != "worker":  # (a worker alone starts on its backlog at once)
            time.sleep(2.0)  # every process imported and idle: its CPU from here is the work's
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


async def send_all(port: int, payloads: list[bytes], connections: int) -> list[bytes]:
    shares = [payloads[i::connections] for i in range(connections)]

    async def one(share: list[bytes]) -> list[bytes]:
        acks = []
        async with MllpClient("127.0.0.1", port, timeout_secs=120) as client:
            for payload in share:
                acks.append(await client.send(payload))
        return acks

    results = await asyncio.gather(*(one(s) for s in shares))
    return [a for r in results for a in r]


def wait_stored(engine: Any, want: int) -> None:
    while True:
        with engine.connect() as conn:
            stored = conn.execute(text(
                "select count(*) from resource where res_type = 'Observation'")).scalar()
        if stored is not None and stored >= want:
            return
        time.sleep(0.05)


def run(count: int, connections: int, topology: str, prepare_procs: int) -> dict[str, float]:
    payloads = messages(count)
    with tempfile.TemporaryDirectory(prefix="hub-bench-hl7-") as scratch:
        url = f"sqlite:///{scratch}/hub.db"
        upgrade(url)
        port = free_port()
        engine = make_engine(url)
        listener = "mllp-only" if topology == "phases" else topology
        cpu: dict[str, float] = {}
        with hub_processes(url, port, listener, prepare_procs) as procs:
            before = [cpu_seconds(p.pid) for p in procs]
            start = time.perf_counter()
            senders = time.process_time()
            acks = asyncio.run(send_all(port, payloads, connections))
            cpu["senders"] = time.process_time() - senders
            acked = time.perf_counter()
            if any(b"MSA|AA|" not in a for a in acks):
                raise SystemExit("a message was not answered AA")
            if topology != "phases":
                wait_stored(engine, 2 * count)
            done = time.perf_counter()
            for name, p, was in zip(("listener", "worker"), procs, before, strict=False):
                cpu[name] = cpu_seconds(p.pid) - was
        if topology == "phases":
            with hub_processes(url, port, "worker", prepare_procs) as procs:
                drain_start = time.perf_counter()
                wait_stored(engine, 2 * count)
                done = time.perf_counter()
                cpu["worker"] = cpu_seconds(procs[0].pid)  # its start-up included (~1 s)
        with engine.connect() as conn:
            statuses: dict[str, int] = dict(conn.execute(text(
                "select status, count(*) from inbound_message group by status")).all())
        engine.dispose()
    if statuses != {"processed": count}:
        raise SystemExit(f"unexpected inbox statuses: {statuses}")
    figures = {f"{name}_cpu_us_per_msg": seconds / count * 1e6 for name, seconds in cpu.items()}
    if topology == "phases":
        return {**figures, "ack_msg_per_s": count / (acked - start),
                "worker_msg_per_s": count / (done - drain_start),
                "end_to_end_msg_per_s": count / (acked - start + done - drain_start)}
    return {**figures, "ack_msg_per_s": count / (acked - start),
            "end_to_end_msg_per_s": count / (done - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--topology", choices=["split", "inline", "phases"], default="split")
    parser.add_argument("--prepare-procs", type=int, default=0,
                        help="hub worker --prepare-procs (split and phases)")
    args = parser.parse_args()
    figures = run(args.messages, args.connections, args.topology, args.prepare_procs)
    data = pcd01_oru()
    parse = {"hl7apy_parse_us": best_us(hl7apy, data, 20),
             "python_hl7_parse_us": best_us(python_hl7, data, 500),
             "hub_tokenizer_us": best_us(ours, data, 20_000)}
    e2e = figures["end_to_end_msg_per_s"]
    print(f"PCD-01 ORU, 6 OBX, {len(data)} bytes; {args.messages} messages over "
          f"{args.connections} MLLP connections; SQLite synchronous=FULL; {args.topology}; "
          f"worker --prepare-procs {args.prepare_procs}; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  ACKed (durable):          {figures['ack_msg_per_s']:10,.0f} msg/s")
    if "worker_msg_per_s" in figures:
        print(f"  worker alone:             {figures['worker_msg_per_s']:10,.0f} msg/s")
    print(f"  end to end (Observations): {e2e:9,.0f} msg/s  ({2 * e2e:,.0f} Observations/s)")
    for name in ("listener", "worker", "senders"):
        if f"{name}_cpu_us_per_msg" in figures:
            print(f"  {name + ' CPU':26s} {figures[f'{name}_cpu_us_per_msg']:10,.0f} us/msg")
    for name, label in (("hl7apy_parse_us", "hl7apy 1.3.5 parse only"),
                        ("python_hl7_parse_us", "python-hl7 0.4.5 parse only"),
                        ("hub_tokenizer_us", "hub.hl7v2 tokenizer only")):
        print(f"  {label:27s} {1e6 / parse[name]:10,.0f} msg/s ({parse[name]:.1f} us/msg)")
    hl7apy_rate = 1e6 / parse["hl7apy_parse_us"]
    result = {
        "messages": args.messages, "connections": args.connections, "topology": args.topology,
        "prepare_procs": args.prepare_procs, "load_average": round(os.getloadavg()[0], 2),
        "message_bytes": len(data), "obx_per_message": 6,
        "ack_msg_per_s": round(figures["ack_msg_per_s"]),
        "end_to_end_msg_per_s": round(e2e),
        **({"worker_msg_per_s": round(figures["worker_msg_per_s"])}
           if "worker_msg_per_s" in figures else {}),
        **{k: round(v) for k, v in figures.items() if k.endswith("_cpu_us_per_msg")},
        "hl7apy_parse_msg_per_s": round(hl7apy_rate),
        "python_hl7_parse_msg_per_s": round(1e6 / parse["python_hl7_parse_us"]),
        "hub_tokenizer_msg_per_s": round(1e6 / parse["hub_tokenizer_us"]),
        "end_to_end_vs_hl7apy_parse": round(e2e / hl7apy_rate, 1),
        "end_to_end_vs_python_hl7_parse": round(e2e * parse["python_hl7_parse_us"] / 1e6, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
