"""Parse-only benchmark: hub.hl7v2 vs python-hl7 vs hl7apy on one PCD-01 ORU^R01 with 6 OBX.

The message is the corpus's IHE PCD-01 "Acme" NIBP example (oehf/ipf, ../shared/corpus) plus a
pulse-rate OBX, so it has 6 OBX like the issue's end-to-end benchmark. Every parser gets the
same bytes and must read the same OBX-5 values (checked before timing). Each figure is the best
of 5 runs; bytes are decoded inside the timed call for every parser.

Usage: ``python bench/hl7_parse.py``; the last line is a JSON object with the figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import hl7  # noqa: E402  (python-hl7)
from hl7apy.parser import parse_message as hl7apy_parse  # noqa: E402

from hub.hl7v2 import parse_message  # noqa: E402

CORPUS = REPO.parent / "shared/corpus/hl7v2"


def pcd01_oru() -> bytes:
    # The corpus file ends segments with CRLF; use plain CR (the HL7 terminator) because
    # python-hl7 only splits on CR.
    base = (CORPUS / "ipf_pcd01_bp-request.hl7").read_bytes().replace(b"\r\n", b"\r")
    base = base.rstrip(b"\r")
    return base + (
        b"\rOBX|6|NM|149546^MDC_PULS_RATE_NON_INV^MDC|1.0.1.4|72|"
        b"264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r"
    )


def ours(data: bytes) -> list[str]:
    msg = parse_message(data)
    return [obx.field(5) for obx in msg.segments_named("OBX")]


def ours_full(data: bytes) -> list[str]:
    """Parse plus what an ORU mapper reads from each OBX (type, code, containment, value...)."""
    msg = parse_message(data)
    values = []
    for obx in msg.segments_named("OBX"):
        _ = (obx.field(2), obx.component(3, 1), obx.component(3, 2), obx.component(3, 3),
             obx.field(4), obx.component(6, 1), obx.component(6, 2), obx.field(11),
             obx.field(14), obx.field(18))
        values.append(obx.field(5))
    return values


def python_hl7(data: bytes) -> list[str]:
    msg = hl7.parse(data.decode("utf-8"))
    return [str(seg[5]) for seg in msg.segments("OBX")]


def hl7apy(data: bytes) -> list[str]:
    msg = hl7apy_parse(data.decode("utf-8"))
    return [obx.obx_5.to_er7() if obx.obx_5 else "" for obx in _obx(msg)]


def _obx(msg: object) -> list[object]:
    # hl7apy groups OBX under ORU_R01_PATIENT_RESULT/.../OBSERVATION; walk the tree generically.
    found: list[object] = []

    def walk(node: object) -> None:
        for child in getattr(node, "children", []):
            if getattr(child, "name", "") == "OBX":
                found.append(child)
            else:
                walk(child)

    walk(msg)
    return found


def best_us(fn: Callable[[bytes], list[str]], data: bytes, n: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn(data)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> None:
    data = pcd01_oru()
    expected = ours(data)
    assert expected == ["", "", "120", "80", "100", "72"], expected
    for name, fn in (("python-hl7", python_hl7), ("hl7apy", hl7apy), ("full", ours_full)):
        assert fn(data) == expected, f"{name} read different OBX-5 values: {fn(data)}"

    runs = [
        ("hub.hl7v2 parse", ours, 20_000),
        ("hub.hl7v2 parse + read 11 OBX fields x6", ours_full, 5_000),
        ("python-hl7 0.4.5 hl7.parse", python_hl7, 500),
        ("hl7apy 1.3.5 parse_message", hl7apy, 20),
    ]
    figures: dict[str, float] = {}
    print(f"message: {len(data)} bytes, 6 OBX, PCD-01 ORU^R01 v2.6 (best of 5)")
    for label, fn, n in runs:
        us = best_us(fn, data, n)
        figures[label] = us
        print(f"{label:42s} {us:10.1f} us/msg {1e6 / us:12,.0f} msg/s")
    hub_us = figures["hub.hl7v2 parse"]
    result = {
        "message_bytes": len(data),
        "hub_hl7v2_us": round(hub_us, 2),
        "hub_hl7v2_with_field_reads_us": round(figures["hub.hl7v2 parse + read 11 OBX fields x6"],
                                               2),
        "python_hl7_us": round(figures["python-hl7 0.4.5 hl7.parse"], 2),
        "hl7apy_us": round(figures["hl7apy 1.3.5 parse_message"], 2),
        "hub_hl7v2_msg_per_s": round(1e6 / hub_us),
        "python_hl7_msg_per_s": round(1e6 / figures["python-hl7 0.4.5 hl7.parse"]),
        "hl7apy_msg_per_s": round(1e6 / figures["hl7apy 1.3.5 parse_message"]),
        "speedup_vs_python_hl7": round(figures["python-hl7 0.4.5 hl7.parse"] / hub_us, 1),
        "speedup_vs_hl7apy": round(figures["hl7apy 1.3.5 parse_message"] / hub_us, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
