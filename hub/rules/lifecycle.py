"""The life of a rule's alert: one active Flag per patient and rule, escalation, auto-resolve,
and the Communications each step sends (with suppression windows).

State lives in the rule's JSON state under ``"alert"``::

    {"flag": {"id", "start", "priority", "finding", "cleared"} | null,
     "sent": {"<notify index>:<event>": <last sent, epoch s>}, "episodes": <count>}

Every time in here is an *event* time (a reading's effective time, or the due time of a
scheduled check), never the wall clock, so replaying the same readings gives the same
resources (ids, periods, ``sent``) and therefore changes nothing.

- ``fire(t, priority, finding)``: no active Flag → a new Flag (id from patient, rule and ``t``)
  and the ``raise`` notices; active with a higher priority → the same Flag at the new priority
  and the ``escalate`` notices; otherwise nothing (no churn). Any fire resets clearing.
- ``clearing(t)``: the condition is clear at ``t``; the Flag resolves once it has stayed clear
  for the rule's ``flag.resolve_after`` (``settle``), with ``period.end`` = the instant the
  clear period completed — deterministic whenever the check runs.
- ``not_clear()``: a reading inside the hysteresis band or still abnormal: clearing restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.fhir.ids import stable_id
from hub.rules import outputs
from hub.rules.model import Measure, Notify, Recipient, Rule
from hub.rules.outputs import PRIORITY_RANK, Finding


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(slots=True)
class Ctx:
    """One patient and one (effective) rule during an evaluation; collects the outputs.
    ``tz``: the patient's time zone for this rule (local days, dose times)."""

    patient: str
    rule: Rule
    version: int
    care_team: Recipient
    measures: dict[str, Measure]
    tz: str = "UTC"
    out: list[dict[str, Any]] = field(default_factory=list)

    def label(self, measure: str) -> tuple[str, str | None]:
        """A measure's title and unit, for findings."""
        spec = self.measures.get(measure)
        return (spec.title, spec.unit) if spec is not None else (measure, None)

    def emit(self, resource: dict[str, Any]) -> None:
        self.out.append(resource)

    # ------------------------------------------------------------------ alert lifecycle

    @staticmethod
    def _alert(st: dict[str, Any]) -> dict[str, Any]:
        # (not setdefault: its default would be built, two dicts, on every call)
        alert: dict[str, Any] | None = st.get("alert")
        if alert is None:
            alert = st["alert"] = {"flag": None, "sent": {}, "episodes": 0}
        return alert

    def active(self, st: dict[str, Any]) -> dict[str, Any] | None:
        alert = st.get("alert")  # (_alert's lookup here: called per rule per message)
        if alert is None:
            alert = self._alert(st)
        flag: dict[str, Any] | None = alert["flag"]
        return flag

    def fire(self, st: dict[str, Any], t: float, priority: str, finding: Finding) -> None:
        alert = self._alert(st)
        flag = alert["flag"]
        if flag is None:
            flag = alert["flag"] = {
                "id": stable_id("Flag", self.patient, self.rule.id, outputs.iso(t)),
                "start": t, "priority": priority, "finding": finding, "cleared": None}
            alert["episodes"] += 1
            self._emit_flag(flag, None)
            self._notify(st, "raise", t, flag["id"], finding, [flag["id"]])
            return
        flag["cleared"] = None
        if PRIORITY_RANK[priority] > PRIORITY_RANK[flag["priority"]]:
            flag["priority"] = priority
            flag["finding"] = finding
            self._emit_flag(flag, None)
            self._notify(st, "escalate", t, f"{flag['id']}|{priority}", finding, [flag["id"]])

    def clearing(self, st: dict[str, Any], t: float) -> None:
        flag = self.active(st)
        if flag is not None and flag["cleared"] is None:
            flag["cleared"] = t
        self.settle(st, t)

    def not_clear(self, st: dict[str, Any]) -> None:
        flag = self.active(st)
        if flag is not None:
            flag["cleared"] = None

    def settle(self, st: dict[str, Any], now: float) -> None:
        """Resolve the Flag if it has been clear for ``resolve_after`` by ``now``."""
        flag = self.active(st)
        if flag is None or flag["cleared"] is None:
            return
        end = flag["cleared"] + self.rule.flag.resolve_after
        if now < end:
            return
        self._alert(st)["flag"] = None
        self._emit_flag(flag, end)
        self._notify(st, "resolve", end, f"{flag['id']}|resolved", flag["finding"], [flag["id"]])

    def resolve_now(self, st: dict[str, Any], t: float) -> None:
        """End the Flag at ``t`` (used when the condition is gone by definition, e.g. data)."""
        flag = self.active(st)
        if flag is not None:
            flag["cleared"] = t - self.rule.flag.resolve_after
            self.settle(st, t)

    def new_finding(self, st: dict[str, Any], t: float) -> None:
        """End the active Flag at ``t`` because a *different* finding follows (e.g. a baseline
        deviation changed direction): its ``raise`` notices are not held back by the
        suppression windows of the episode that ended."""
        self.resolve_now(st, t)
        sent = self._alert(st)["sent"]
        for key in [k for k in sent if k.endswith(":raise")]:
            del sent[key]

    def due(self, st: dict[str, Any]) -> float | None:
        alert = st.get("alert")  # (active's lookup here: called per rule per message)
        flag = alert["flag"] if alert is not None else self.active(st)
        if flag is None or flag["cleared"] is None:
            return None
        cleared: float = flag["cleared"]
        return cleared + self.rule.flag.resolve_after

    def event(self, st: dict[str, Any], t: float, key: str, finding: Finding,
              about: list[str] | None = None) -> None:
        """A one-off occurrence (missed dose, silence): the ``event`` notices, no Flag."""
        self._notify(st, "event", t, key, finding, about or [])

    # ------------------------------------------------------------------ resources

    def _emit_flag(self, flag: dict[str, Any], end: float | None) -> None:
        spec = self.rule.flag
        self.emit(outputs.flag(
            fid=flag["id"], patient=self.patient, rule_id=self.rule.id, version=self.version,
            title=self.rule.title, text=spec.text or self.rule.title, category=spec.category,
            codes=[c.model_dump(exclude_none=True) for c in spec.codes],
            priority=flag["priority"], start=flag["start"], end=end, finding=flag["finding"]))

    def recipient(self, notify: Notify) -> dict[str, Any]:
        if notify.to == "patient":
            return {"reference": f"Patient/{self.patient}"}
        who = self.care_team if notify.to == "care-team" else notify.to
        assert isinstance(who, Recipient)
        return who.model_dump(exclude_none=True)

    def _notify(self, st: dict[str, Any], on: str, t: float, key: str, finding: Finding,
                flags: list[str]) -> None:
        sent = self._alert(st)["sent"]
        for index, notify in enumerate(self.rule.notify):
            if on not in notify.on:
                continue
            # Suppression is per notice and event: an escalation is never held back by the
            # raise it follows, but a second reminder within the window is.
            key_sent = f"{index}:{on}"
            last = sent.get(key_sent)
            if last is not None and notify.suppress and t - last < notify.suppress:
                continue  # the same notice went out within its suppression window
            sent[key_sent] = t
            text = finding["summary"]
            if on == "resolve":
                text = f"Resolved: {self.rule.title}. It had been raised for: {text}"
            if notify.text:
                text = notify.text.format_map(_Blank(summary=text, title=self.rule.title))
            about = [f"Flag/{f}" for f in flags] + list(finding.get("evidence", ()))
            self.emit(outputs.communication(
                cid=stable_id("Communication", self.patient, self.rule.id, str(index), on, key),
                patient=self.patient, rule_id=self.rule.id, version=self.version,
                category=notify.category, priority=notify.priority,
                recipient=self.recipient(notify), sent=t, text=text, about=about,
                finding=finding))
