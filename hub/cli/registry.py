"""``hub registry device|patient|assign|unassign|list``: the identity registry.

Identifiers are written as FHIR search tokens, ``system|value`` (``urn:acme:serial|AC-2291``);
instants in ISO 8601 with an offset (``2026-11-20T08:00:00Z``, ``...-05:00``) or ``now``. Each
change releases the quarantined messages waiting for what it touched (the count is printed;
hub.identity.admin says which). Errors are one line on stderr and exit 2 (via ``hub.cli.main``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import cast

import typer
from sqlalchemy.engine import Engine

from hub.contracts import Code, Identifier
from hub.errors import RequestError
from hub.identity import admin
from hub.identity.admin import AssignmentView, Gender, Registered
from hub.settings import Settings
from hub.store.db import make_engine
from hub.sync.config import DestinationsFile, load_destinations, resolve_destinations_file
from hub.sync.routing import OutboxRouter
from hub.sync.settings import SyncSettings

app = typer.Typer(no_args_is_help=True,
                  help="identity registry: devices, patients, device assignments")
GENDERS = ("male", "female", "other", "unknown")


@contextmanager
def _engine() -> Iterator[Engine]:
    settings = Settings()
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        yield engine
    finally:
        engine.dispose()


def _route() -> admin.Route:
    """Outbox routing as ``hub serve`` does it, so sync delivers registered resources."""
    path = resolve_destinations_file(SyncSettings().destinations_file)
    return OutboxRouter.from_config(load_destinations(path) if path else DestinationsFile()).route


def parse_identifier(text: str, what: str = "identifier") -> Identifier:
    system, sep, value = text.partition("|")
    if not (sep and system.strip() and value.strip()):
        raise RequestError(f"{what} must be written system|value (e.g. urn:acme:serial|AC-2291)")
    return Identifier(system.strip(), value.strip())


def parse_instant(text: str, what: str) -> datetime:
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RequestError(f"{what} is not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise RequestError(f"{what} needs an offset (Z or ±hh:mm): without one its instant is "
                           "unknown")
    return when


def _iso(when: datetime | None) -> str:
    return "open" if when is None else when.isoformat().replace("+00:00", "Z")


def _echo_registered(found: Registered) -> None:
    res = found.resource
    state = "registered" if found.created else "updated"
    typer.echo(f"{state} {res['resourceType']}/{res['id']} (released {found.released} "
               "quarantined messages)")


def _line(view: AssignmentView) -> str:
    a = view.assignment
    device = ",".join(i.token() for i in view.device)
    return (f"{a.id}\tDevice/{a.device_id}\t{device}\tPatient/{a.patient_id}\t"
            f"{_iso(a.start)}\t{_iso(a.end)}")


@app.command("device")
def device(
    identifier: list[str] = typer.Argument(..., help="system|value, one or more"),
    device_type: str | None = typer.Option(None, "--type",
                                           help="Device.type as system|code[|display]"),
    model: str | None = typer.Option(None, "--model", help="Device.modelNumber"),
    manufacturer: str | None = typer.Option(None, "--manufacturer"),
) -> None:
    """Register a device (or update the one its identifiers are bound to)."""
    kind = None
    if device_type is not None:
        parts = device_type.split("|")
        if len(parts) not in (2, 3) or not all(p.strip() for p in parts[:2]):
            raise RequestError("--type must be written system|code or system|code|display")
        kind = Code(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    idents = [parse_identifier(i) for i in identifier]
    with _engine() as engine:
        found = admin.register_device(engine, idents, device_type=kind, model=model,
                                      manufacturer=manufacturer, route=_route())
    _echo_registered(found)


@app.command("patient")
def patient(
    identifier: list[str] = typer.Argument(..., help="system|value, one or more"),
    family: str | None = typer.Option(None, "--family"),
    given: list[str] | None = typer.Option(None, "--given", help="repeat for each given name"),
    birth_date: str | None = typer.Option(None, "--birth-date", help="YYYY-MM-DD"),
    gender: str | None = typer.Option(None, "--gender", help="|".join(GENDERS)),
) -> None:
    """Register a patient (or update the one its identifiers are bound to)."""
    born = None
    if birth_date is not None:
        try:
            born = date.fromisoformat(birth_date)
        except ValueError:
            raise RequestError("--birth-date must be YYYY-MM-DD") from None
    if gender is not None and gender not in GENDERS:
        raise RequestError(f"--gender must be one of {', '.join(GENDERS)}")
    idents = [parse_identifier(i) for i in identifier]
    with _engine() as engine:
        found = admin.register_patient(engine, idents, family=family, given=given or None,
                                       birth_date=born, gender=cast(Gender | None, gender),
                                       route=_route())
    _echo_registered(found)


@app.command("assign")
def assign(
    device_ident: str = typer.Argument(..., metavar="DEVICE", help="system|value"),
    patient_ident: str = typer.Argument(..., metavar="PATIENT", help="system|value"),
    start: str = typer.Option("now", "--start", help="ISO 8601 with offset, or now"),
    end: str | None = typer.Option(None, "--end", help="ISO 8601 with offset (default: open)"),
) -> None:
    """Assign a registered device to a registered patient for [start, end)."""
    device, patient = parse_identifier(device_ident, "DEVICE"), parse_identifier(patient_ident,
                                                                                "PATIENT")
    since, until = parse_instant(start, "--start"), None if end is None else parse_instant(
        end, "--end")
    with _engine() as engine:
        made = admin.assign(engine, device, patient, since, until)
    typer.echo(f"assignment {made.assignment.id}: Device/{made.assignment.device_id} → "
               f"Patient/{made.assignment.patient_id} from {_iso(made.assignment.start)} until "
               f"{_iso(made.assignment.end)} (released {made.released} quarantined messages)")


@app.command("unassign")
def unassign(
    device_ident: str = typer.Argument(..., metavar="DEVICE", help="system|value"),
    at: str = typer.Option("now", "--at", help="when the device left the patient"),
) -> None:
    """End the device's assignment in force at --at (default now) there."""
    device, when = parse_identifier(device_ident, "DEVICE"), parse_instant(at, "--at")
    with _engine() as engine:
        ended = admin.unassign(engine, device, when)
    what = "removed" if ended.removed else f"ended at {_iso(ended.assignment.end)}"
    typer.echo(f"assignment {ended.assignment.id} {what} (released {ended.released} "
               "quarantined messages)")


@app.command("list")
def list_(
    device_ident: str | None = typer.Option(None, "--device", help="system|value"),
    patient_ident: str | None = typer.Option(None, "--patient", help="system|value"),
    at: str | None = typer.Option(None, "--at", help="only those in force then"),
) -> None:
    """Assignments: id, device, its identifiers, patient, start, end (tab-separated)."""
    device = None if device_ident is None else parse_identifier(device_ident, "--device")
    patient = None if patient_ident is None else parse_identifier(patient_ident, "--patient")
    when = None if at is None else parse_instant(at, "--at")
    with _engine() as engine:
        found = admin.list_assignments(engine, device=device, patient=patient, at=when)
    for view in found:
        typer.echo(_line(view))
