"""``hub hl7 validate FILE...``: check HL7v2 messages against the standard with hl7apy.

hl7apy knows every segment, field, data type, cardinality and table of v2.1-2.8.2, which makes
it the right tool for structure validation and far too slow (~10 ms a message) for the ingest
path, where the hub's own tokenizer runs. Each message of each file (batch files are split) is
parsed by hl7apy with group detection and validated; errors (structure, cardinality, data type)
and warnings (table values, lengths) are printed one per line, without the values themselves
(they may be patient data). Exit 1 when any message has an error or cannot be read.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import typer

from hub.hl7v2 import Hl7ParseError, decode_bytes, split_batch

app = typer.Typer(no_args_is_help=True, help="HL7v2 tools")
_QUOTED_VALUE = re.compile(r"Value .*? not in table", re.DOTALL)


def _clean(text: str) -> str:
    """hl7apy quotes table values; drop them (PHI rule), keep table and element names."""
    return _QUOTED_VALUE.sub("value not in table", " ".join(text.split()))[:300]


def validate_message(data: bytes) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one message, as hl7apy reports them against the standard."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator

    text, _, _ = decode_bytes(data, None)
    text = re.sub(r"\r\n|\n", "\r", text.lstrip("\ufeff"))
    try:
        msg = parse_message(text.strip("\r") + "\r", find_groups=True,
                            validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception as exc:  # hl7apy's parse errors may quote the offending value: name only
        return [f"cannot parse ({type(exc).__name__})"], []
    with tempfile.TemporaryDirectory(prefix="hub-hl7-") as scratch:
        report = Path(scratch) / "report.txt"
        try:
            Validator.validate(msg, report_file=str(report))
        except HL7apyException:
            pass  # every problem is in the report; the exception is only the first
        except Exception as exc:
            return [f"validator failed: {type(exc).__name__}"], []
        lines = report.read_text().splitlines() if report.exists() else []
    errors = [_clean(ln[len("Error: "):]) for ln in lines if ln.startswith("Error: ")]
    warnings = [_clean(ln[len("Warning: "):]) for ln in lines if ln.startswith("Warning: ")]
    return errors, warnings


@app.command("validate")
def validate(files: list[Path] = typer.Argument(..., help="ER7 files (batches are split)"),
             warnings: bool = typer.Option(True, "--warnings/--no-warnings",
                                           help="also print warnings (table values, lengths)"),
             ) -> None:
    """Validate messages against the HL7v2 standard (hl7apy); exit 1 on any error."""
    failed = False
    for path in files:
        try:
            messages = split_batch(path.read_bytes())
        except OSError as exc:
            typer.echo(f"{path}: cannot read ({exc.strerror})")
            failed = True
            continue
        except Hl7ParseError as exc:
            typer.echo(f"{path}: error: {exc.message}")
            failed = True
            continue
        for number, data in enumerate(messages, start=1):
            where = f"{path}" + (f" message #{number}" if len(messages) > 1 else "")
            errors, warns = validate_message(data)
            for problem in errors:
                typer.echo(f"{where}: error: {problem}")
            for problem in warns if warnings else []:
                typer.echo(f"{where}: warning: {problem}")
            if not errors:
                typer.echo(f"{where}: valid" + (f" ({len(warns)} warning(s))" if warns else ""))
            failed = failed or bool(errors)
    if failed:
        raise typer.Exit(1)
