"""OpenTelemetry: one trace per inbound message, a span per stage, counters per outcome.

Off by default; the standard variables turn it on (``OTEL_TRACES_EXPORTER=otlp|console``,
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``...). Span attributes pass an allow-list of
keys whose values are ids and counts the hub generated — never patient identifiers, names or
values, which are PHI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span

ALLOWED_ATTRIBUTES = frozenset({
    "hub.source", "hub.message_id", "hub.channel", "hub.outcome", "hub.measurements",
    "hub.resources", "hub.observations", "hub.batch", "hub.destination", "hub.status_code",
    "hub.delivered", "hub.retried", "hub.dead", "hub.skipped",
})


_NO_SPAN = nullcontext(trace.INVALID_SPAN)


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        name = key if key.startswith("hub.") else f"hub.{key}"
        if name not in ALLOWED_ATTRIBUTES:
            raise ValueError(f"span attribute '{name}' is not on the PHI-safe allow-list")
        out[name] = value
    return out


@dataclass
class Telemetry:
    """Tracer and counters; ``disabled()`` is a no-op twin for tests and ``hub convert``."""

    tracer: trace.Tracer
    messages: metrics.Counter | None
    deliveries: metrics.Counter | None = None
    # Disabled, a span is a shared no-op context: through the no-op tracer a span cost 5.3 us
    # and a message trace 6.0 us, this way 0.7 and 0.9 (measured at load 8), and the worker
    # opens 6 per HL7v2 ORU (4 in prepare, 2 in commit; 9 % of prepare in cProfile of
    # bench.phases --workload hl7).
    _off: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        self._off = isinstance(self.tracer, trace.NoOpTracer)

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(trace.NoOpTracer(), None)

    @classmethod
    def from_env(cls, exporter: SpanExporter | None = None) -> Telemetry:
        """Configure from OTEL_* variables; ``exporter`` (tests) forces an in-process exporter."""
        chosen = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
        if exporter is None and chosen in ("", "none"):
            return cls.disabled()
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "hub")})
        provider = TracerProvider(resource=resource)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif chosen == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        meter = MeterProvider(resource=resource).get_meter("hub")
        counter = meter.create_counter("hub.messages", description="inbound messages by outcome")
        deliveries = meter.create_counter(
            "hub.deliveries", description="outbox rows by destination and delivery outcome")
        return cls(provider.get_tracer("hub"), counter, deliveries)

    def intake(self, source: str, channel: str) -> AbstractContextManager[dict[str, str]]:
        """The root span of a message's trace; yields the carrier to store with the message."""
        attributes = _clean({"source": source, "channel": channel})
        return nullcontext({}) if self._off else self._intake(attributes)

    @contextmanager
    def _intake(self, attributes: dict[str, Any]) -> Iterator[dict[str, str]]:
        with self.tracer.start_as_current_span(
            "hub.intake", context=trace.set_span_in_context(trace.INVALID_SPAN),
            attributes=attributes,
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield carrier

    def message_trace(
        self, source: str, message_id: str, traceparent: str | None = None
    ) -> AbstractContextManager[Any]:
        """Processing of one message: continues its intake trace, else starts a new one (never a
        child of the worker's batch)."""
        attributes = _clean({"source": source, "message_id": message_id})
        if self._off:
            return _NO_SPAN
        parent = (propagate.extract({"traceparent": traceparent}) if traceparent
                  else trace.set_span_in_context(trace.INVALID_SPAN))
        return self.tracer.start_as_current_span("hub.message", context=parent,
                                                 attributes=attributes)

    def span(self, stage: str, **attrs: Any) -> AbstractContextManager[Span]:
        """A stage's span; ``annotate`` adds allow-listed attributes known only at its end."""
        attributes = _clean(attrs)  # checked whether or not anything records them
        if self._off:
            return _NO_SPAN
        return self.tracer.start_as_current_span(f"hub.{stage}", attributes=attributes)

    @staticmethod
    def annotate(span: Span, **attrs: Any) -> None:
        span.set_attributes(_clean(attrs))

    def count_deliveries(self, destination: str, tally: dict[str, int]) -> None:
        """Outbox rows that ended an attempt, by outcome (delivered, pending, dead, skipped)."""
        if self.deliveries is not None:
            for outcome, n in tally.items():
                self.deliveries.add(n, {"hub.destination": destination, "hub.outcome": outcome})

    def count_outcome(self, source: str, outcome: str) -> None:
        if self.messages is not None:
            self.messages.add(1, {"hub.source": source, "hub.outcome": outcome})
