"""Fixtures for the HL7v2 layer tests: the third-party corpus and a PCD-01 ORU built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS_HL7V2 = REPO.parent / "shared/corpus/hl7v2"


def corpus_files() -> list[Path]:
    """Every file of the HL7v2 corpus; fails loudly (at collection) if the corpus is missing."""
    if not CORPUS_HL7V2.is_dir():
        raise FileNotFoundError(
            f"HL7v2 corpus not found at {CORPUS_HL7V2}: the tests need ../shared/corpus/hl7v2"
        )
    files = sorted(p for p in CORPUS_HL7V2.iterdir() if p.is_file())
    if not files:
        raise FileNotFoundError(f"HL7v2 corpus at {CORPUS_HL7V2} is empty")
    return files


def pcd01_oru() -> bytes:
    """The IHE PCD-01 "Acme" NIBP ORU from the corpus plus a pulse-rate OBX: 6 OBX, CR ends."""
    base = (CORPUS_HL7V2 / "ipf_pcd01_bp-request.hl7").read_bytes().replace(b"\r\n", b"\r")
    base = base.rstrip(b"\r")
    return base + (
        b"\rOBX|6|NM|149546^MDC_PULS_RATE_NON_INV^MDC|1.0.1.4|72|"
        b"264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r"
    )


@pytest.fixture
def oru() -> bytes:
    return pcd01_oru()
