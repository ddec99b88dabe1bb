"""Tables, declared once with SQLModel. Alembic migrations (store/migrations) create them.

Times are stored as UTC. Resource JSON is stored as text exactly as served, minus
``meta.versionId``/``meta.lastUpdated``, which come from their columns.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlalchemy import DateTime as SADateTime
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = False, index: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(SADateTime(timezone=True), nullable=nullable, index=index)


class InboundMessage(SQLModel, table=True):
    """A raw inbound message, durable before it is acknowledged; the root of all lineage."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("source", "dedupe_key", name="uq_inbound_dedupe"),
        Index("ix_inbound_status_seq", "status", "seq"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=36, unique=True, description="public message id (UUID)")
    source: str = Field(max_length=64)
    channel: str = Field(max_length=16, description="http, mllp, mqtt, file, fhir")
    received_at: datetime = Field(sa_column=_ts())
    content_type: str = Field(max_length=128)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)
    dedupe_key: str = Field(max_length=200)
    status: str = Field(max_length=16, description="received|processed|partial|failed|quarantined")
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    notes: str | None = Field(default=None, sa_column=Column(Text, nullable=True),
                              description="warnings that did not stop processing (held readings)")
    resource_refs: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    client: str | None = Field(default=None, max_length=64)
    reply: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    traceparent: str | None = Field(default=None, max_length=64,
                                    description="W3C trace context of the intake span")
    meta: str | None = Field(default=None, sa_column=Column(Text, nullable=True),
                             description="JSON: what the channel knew beside the body (MQTT topic)")
    attempts: int = 0
    processed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Resource(SQLModel, table=True):
    """A FHIR resource (current version) with the columns searches use."""

    __tablename__ = "resource"
    __table_args__ = (
        Index("ix_resource_subject_code_eff", "res_type", "subject", "code", "effective"),
        Index("ix_resource_type_eff", "res_type", "effective"),
        Index("ix_resource_type_code", "res_type", "code"),
        Index("ix_resource_type_second_code", "res_type", "second_code"),
        Index("ix_resource_type_updated", "res_type", "last_updated"),
    )

    res_type: str = Field(primary_key=True, max_length=64)
    res_id: str = Field(primary_key=True, max_length=64)
    version_id: int = 1
    content_hash: str = Field(max_length=64, description="hash of the content without meta")
    subject: str | None = Field(default=None, max_length=128)
    code_system: str | None = Field(default=None, max_length=128)
    code: str | None = Field(default=None, max_length=64)
    # The second coding of ``code`` (the MDC code of a dual-coded vital sign, the sender's local
    # code beside LOINC): searchable like ``code``. Further codings are in ``resource_token``.
    second_code_system: str | None = Field(default=None, max_length=128)
    second_code: str | None = Field(default=None, max_length=128)
    category: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=32)
    effective: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_updated: datetime = Field(sa_column=_ts())
    message_id: str | None = Field(default=None, max_length=36, index=True)
    content: str = Field(sa_column=Column(Text, nullable=False))


class ResourceToken(SQLModel, table=True):
    """Searchable codings of a resource beyond its ``code`` and ``second_code`` columns (the
    third coding of ``code`` on)."""

    __tablename__ = "resource_token"
    __table_args__ = (Index("ix_token_lookup", "res_type", "param", "code", "system"),)

    res_type: str = Field(primary_key=True, max_length=64)
    res_id: str = Field(primary_key=True, max_length=64)
    param: str = Field(primary_key=True, max_length=32)
    system: str = Field(primary_key=True, max_length=128)
    code: str = Field(primary_key=True, max_length=128)


class RegistryIdentifier(SQLModel, table=True):
    """Business identifier → resource id, for Patients and Devices (the identity registry)."""

    __tablename__ = "registry_identifier"

    res_type: str = Field(primary_key=True, max_length=16)
    system: str = Field(primary_key=True, max_length=200)
    value: str = Field(primary_key=True, max_length=200)
    res_id: str = Field(max_length=64, index=True)


class InboxHold(SQLModel, table=True):
    """What a quarantined message waits for: one row per identity key (type, system, value) it
    could not resolve, or ``*`` for "any registry change" (hub.store.quarantine)."""

    __tablename__ = "inbox_hold"
    __table_args__ = (Index("ix_inbox_hold_key", "res_type", "system", "value"),)

    message_id: str = Field(primary_key=True, max_length=36)
    res_type: str = Field(primary_key=True, max_length=16)
    system: str = Field(primary_key=True, max_length=200)
    value: str = Field(primary_key=True, max_length=200)


class DeviceAssignment(SQLModel, table=True):
    """Device ↔ patient for a validity period [start, end); end NULL means still assigned."""

    __tablename__ = "device_assignment"
    __table_args__ = (Index("ix_assignment_device_start", "device_id", "start"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=64)
    patient_id: str = Field(max_length=64, index=True)
    start: datetime = Field(sa_column=_ts())
    end: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    created_at: datetime = Field(sa_column=_ts())


class RegistryEpoch(SQLModel, table=True):
    """One row (id 1): a counter bumped by every change that moves identifier bindings (a patient
    merge), so processes caching identifier → id bindings notice and drop them (hub.identity)."""

    __tablename__ = "registry_epoch"

    id: int = Field(primary_key=True)
    epoch: int = Field(sa_column=Column(BigInteger, nullable=False))


class OutboxItem(SQLModel, table=True):
    """One resource version to deliver to one destination (filled by sync; written with the
    resource in one transaction)."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("destination", "res_type", "res_id", "version_id", name="uq_outbox_item"),
        Index("ix_outbox_pending", "destination", "status", "next_attempt_at"),
        Index("ix_outbox_order", "destination", "order_key", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    destination: str = Field(max_length=64)
    res_type: str = Field(max_length=64)
    res_id: str = Field(max_length=64)
    version_id: int
    order_key: str = Field(max_length=128, description="per-patient ordering key")
    status: str = Field(default="pending", max_length=16, description="pending|delivered|dead")
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_ts())
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class SyncHeartbeat(SQLModel, table=True):
    """A running sync worker per destination: the destination's rate limits are shared among
    the live ones (``hub.store.heartbeats``)."""

    __tablename__ = "sync_heartbeat"

    worker_id: str = Field(primary_key=True, max_length=36)
    destination: str = Field(primary_key=True, max_length=64)
    seen_at: datetime = Field(sa_column=_ts())


class DeadLetter(SQLModel, table=True):
    """Something that could not be processed or delivered, kept with the reason for replay."""

    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16, description="inbound|delivery")
    message_id: str | None = Field(default=None, max_length=36, index=True)
    outbox_id: int | None = Field(default=None, index=True)
    destination: str | None = Field(default=None, max_length=64)
    stage: str = Field(max_length=32)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(sa_column=_ts())
    replayed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class ApiKey(SQLModel, table=True):
    """A client's API key, stored as an HMAC; scoped to the sources it may post to."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=12)
    sources: str = Field(max_length=1000, description="comma-separated sources, or *")
    created_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    rate_limit: str | None = Field(
        default=None, max_length=200,
        description='the client\'s own request-rate limit ("20/second;1000/minute"); NULL: '
                    "the process default (HUB_RATE_LIMIT)")


class RulePatientState(SQLModel, table=True):
    """Every rule's rolling state for one patient (baselines, counters), in one row: one line
    ``<rule id>\t<state JSON>`` per rule (hub/rules/store.py). One row read and at most one
    written per message, however many rules the message moves: constant work per reading."""

    __tablename__ = "rule_patient_state"

    patient_id: str = Field(primary_key=True, max_length=64)
    states: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=_ts())


# Sync (hub/store/delivery.py): partial indexes over open outbox rows only (migration 0003). The
# claim scans due rows in id order, and its per-patient order check probes earlier open rows of
# one order_key, without walking the delivered history that accumulates beside them.
_OPEN_OUTBOX = text("status IN ('pending', 'inflight')")
Index("ix_outbox_open", OutboxItem.__table__.c.destination, OutboxItem.__table__.c.id,  # type: ignore[attr-defined]
      sqlite_where=_OPEN_OUTBOX, postgresql_where=_OPEN_OUTBOX)
Index("ix_outbox_open_key", OutboxItem.__table__.c.destination,  # type: ignore[attr-defined]
      OutboxItem.__table__.c.order_key, OutboxItem.__table__.c.id,  # type: ignore[attr-defined]
      sqlite_where=_OPEN_OUTBOX, postgresql_where=_OPEN_OUTBOX)


# Rules (hub/rules, migration 0004): per-patient overrides of a rule's parameters (set through
# the API), and when each time-based rule must next run for a patient, so the scheduler reads
# only what is due (index on due_at) instead of every patient's state.
class RuleOverride(SQLModel, table=True):
    """One patient's parameters for one rule (a JSON merge patch of the rule's fields); rule id
    ``*`` holds the patient's own settings for every rule (time zone)."""

    __tablename__ = "rule_override"

    patient_id: str = Field(primary_key=True, max_length=64)
    rule_id: str = Field(primary_key=True, max_length=64)
    params: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=_ts())
    updated_by: str | None = Field(default=None, max_length=64)


class RuleSchedule(SQLModel, table=True):
    """The next scheduled evaluation of one time-based rule for one patient."""

    __tablename__ = "rule_schedule"
    __table_args__ = (Index("ix_rule_schedule_due", "due_at"),)

    patient_id: str = Field(primary_key=True, max_length=64)
    rule_id: str = Field(primary_key=True, max_length=64)
    due_at: datetime = Field(sa_column=_ts())


# File imports (hub import, hub/store/imports.py, migration 0007): how far each import got,
# committed in the same transaction as the inbox rows of each chunk, so an interrupted import
# resumes after its last committed chunk and never sends one twice.
class ImportCheckpoint(SQLModel, table=True):
    """One import of one file (by content) into one source with one layout and variables."""

    __tablename__ = "import_checkpoint"

    import_key: str = Field(primary_key=True, max_length=64,
                            description="sha256 of file content hash, source, layout, variables")
    source: str = Field(max_length=64)
    layout: str = Field(max_length=64, description="the layout name, or empty")
    file_sha256: str = Field(max_length=64)
    path: str = Field(sa_column=Column(Text, nullable=False), description="last read from")
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    position: int = Field(sa_column=Column(BigInteger, nullable=False),
                          description="next unread byte (NDJSON, CSV) or array element (JSON)")
    line: int = Field(sa_column=Column(BigInteger, nullable=False),
                      description="lines read up to position")
    items: int = Field(sa_column=Column(BigInteger, nullable=False))
    refused: int = Field(sa_column=Column(BigInteger, nullable=False))
    messages: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(max_length=16, description="running|done")
    started_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
