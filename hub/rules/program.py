"""Load ``mappings/rules/`` into one immutable ``Program``: rules, measures and the code index.

Loading reports the problems of all files at once (file:line:column through
``hub.mappings.yamlfile``) and either loads whole or not at all, as mapping sets do. Cross-file
checks: rule ids unique, every measure a rule names defined, time zones known.

Per-patient overrides are merge patches of one rule (``with_override``; semantics in
hub/rules/overrides.py); the result is validated by the same model, so an override can never
produce a rule a file could not. Day boundaries follow the patient's time zone (their settings),
else the rule's ``timezone``, else the program's (``Program.timezone``, a rules file's top-level
``timezone``, default UTC); a patient's override of the rule's ``timezone`` beats them all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from hub.errors import ErrorLocation, MappingError
from hub.mappings.yamlfile import field_path, load_model, mark, read_yaml
from hub.rules.model import Measure, PatientSettings, Recipient, Rule, RulesFile
from hub.rules.overrides import merge

RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
DEFAULT_CARE_TEAM = Recipient(display="Remote monitoring care team")
SCENARIO_SUFFIX = ".scenario.yaml"


def _at(path: Path, loc: tuple[int | str, ...], problem: str) -> ErrorLocation:
    """A cross-file problem, positioned (re-reads the file: only done when there is one)."""
    line, col = mark(read_yaml(path), loc)
    return ErrorLocation(str(path), line, col, field_path(loc), problem)


def rule_files(folder: Path) -> list[Path]:
    """The program files of a folder (scenarios and other suffixes excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.yaml") if not p.name.endswith(SCENARIO_SUFFIX))


def fingerprint(folder: Path) -> str:
    """A hash over names, sizes and mtimes: cheap enough to poll for hot reload."""
    digest = hashlib.sha256()
    for path in rule_files(folder):
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def measure_names(rule: Rule) -> list[str]:
    """Every measure a rule reads (its inputs)."""
    names: list[str] = []
    for attr in ("measure", "missed_measure", "respiration_rate", "spo2", "systolic", "pulse",
                 "temperature", "consciousness", "oxygen"):
        value = getattr(rule, attr, None)
        if isinstance(value, str):
            names.append(value)
    names.extend(getattr(rule, "measures", []) or [])
    for trigger in getattr(rule, "any", []) or []:
        names.append(trigger.measure)
    for level in getattr(rule, "escalate", []) or []:
        names.extend(t.measure for t in level.any)
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Effective:
    """A rule as it applies to one patient: overrides merged, time zone resolved."""

    rule: Rule
    tz: str


@dataclass(frozen=True)
class Program:
    """All rules and measures; ``versions`` names each rule's version for its outputs."""

    rules: dict[str, Rule]
    measures: dict[str, Measure]
    versions: dict[str, int]
    files: dict[str, str]
    care_team: Recipient = DEFAULT_CARE_TEAM
    fingerprint: str = ""
    # (system|code) → [(measure, factor by unit)]; built once, read per Observation
    by_code: dict[str, list[tuple[str, Measure]]] = field(default_factory=dict)
    # measure → rule ids reading it; "*" lists rules that read every measure (silence, days)
    by_measure: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # code → [(system, measure, spec)]: the hot path looks a coding up without building a key
    by_bare_code: dict[str, list[tuple[str, str, Measure]]] = field(default_factory=dict)
    timezone: str = "UTC"

    _effective: dict[tuple[str, str | None, str | None], Effective] = field(default_factory=dict)
    _zones: dict[str, str | None] = field(default_factory=dict)

    def effective(self, rule_id: str, params_json: str | None,
                  patient_tz: str | None = None) -> Effective:
        """The rule as it applies to a patient with these override params (JSON text) and
        this time zone of their own (``patient_zone``).

        Cached per (rule, params, zone): the same override validates once per loaded program.
        Raises ValueError when the override no longer fits the rule (e.g. after a file edit).
        """
        key = (rule_id, params_json or None, patient_tz)
        found = self._effective.get(key)
        if found is None:
            base = self.rules[rule_id]
            params = orjson.loads(params_json) if params_json else {}
            rule = with_override(base, params)
            tz = params.get("timezone") or patient_tz or getattr(base, "timezone", None) \
                or self.timezone
            found = self._effective[key] = Effective(rule, tz)
        return found

    def patient_zone(self, settings_json: str | None) -> str | None:
        """The time zone in a patient's settings (JSON text), or None."""
        if not settings_json:
            return None
        if settings_json not in self._zones:
            try:
                zone = PatientSettings.model_validate_json(settings_json).timezone
            except ValueError:
                zone = None  # unreadable settings: the program's zone, as for no settings
            self._zones[settings_json] = zone
        return self._zones[settings_json]

    @property
    def time_based(self) -> tuple[str, ...]:
        return tuple(rid for rid, r in self.rules.items()
                     if r.kind in ("silence", "days-with-data", "cgm-summary",
                                   "medication-adherence"))


def _index(rules: dict[str, Rule], measures: dict[str, Measure]
           ) -> tuple[dict[str, list[tuple[str, Measure]]], dict[str, tuple[str, ...]]]:
    by_code: dict[str, list[tuple[str, Measure]]] = {}
    for name, measure in measures.items():
        for code in measure.codes:
            by_code.setdefault(code, []).append((name, measure))
    by_measure: dict[str, list[str]] = {}
    for rid, rule in rules.items():
        if not rule.enabled:
            continue
        names = measure_names(rule)
        if rule.kind in ("silence", "days-with-data") and not names:
            names = ["*"]
        for name in names:
            by_measure.setdefault(name, []).append(rid)
    return by_code, {k: tuple(v) for k, v in by_measure.items()}


def _bare(by_code: dict[str, list[tuple[str, Measure]]]
          ) -> dict[str, list[tuple[str, str, Measure]]]:
    bare: dict[str, list[tuple[str, str, Measure]]] = {}
    for key, hits in by_code.items():
        system, code = key.split("|", 1)
        bare.setdefault(code, []).extend((system, name, measure) for name, measure in hits)
    return bare


def _check_rule(rule: Rule, measures: dict[str, Measure]) -> list[str]:
    return [f"measure '{name}' is not defined in any rules file"
            for name in measure_names(rule) if name not in measures]


def load_program(folder: Path) -> Program:
    """Load every rules file under ``folder``; MappingError lists every problem at once."""
    problems: list[ErrorLocation] = []
    loaded: list[tuple[Path, RulesFile]] = []
    for path in rule_files(folder):
        try:
            loaded.append((path, load_model(path, RulesFile, what="rules file")))
        except MappingError as exc:
            problems.extend(exc.problems or [ErrorLocation(str(path), None, None, "", exc.message)])
    measures: dict[str, Measure] = {}
    measure_origin: dict[str, str] = {}
    care_team = DEFAULT_CARE_TEAM
    timezone: tuple[str, Path] | None = None
    for path, file in loaded:
        if file.timezone is not None:
            if timezone is not None and timezone[0] != file.timezone:
                problems.append(_at(path, ("timezone",), f"'{file.timezone}' differs from "
                                                         f"'{timezone[0]}' in {timezone[1]}"))
            else:
                timezone = (file.timezone, path)
        for name, measure in file.measures.items():
            if name in measures:
                problems.append(_at(path, ("measures", name),
                                    f"already defined in {measure_origin[name]}"))
            measures[name], measure_origin[name] = measure, str(path)
        if file.care_team is not None:
            care_team = file.care_team
    rules: dict[str, Rule] = {}
    versions: dict[str, int] = {}
    files: dict[str, str] = {}
    for path, file in loaded:
        for index, rule in enumerate(file.rules):
            if rule.id in rules:
                problems.append(_at(path, ("rules", index, "id"),
                                    f"'{rule.id}' already defined in {files[rule.id]}"))
                continue
            for problem in _check_rule(rule, measures):
                problems.append(_at(path, ("rules", index), problem))
            rules[rule.id] = rule
            versions[rule.id] = rule.version or file.version
            files[rule.id] = path.name
    if problems:
        raise MappingError(f"{len(problems)} problem(s) in rules under {folder}",
                           problems=problems)
    by_code, by_measure = _index(rules, measures)
    return Program(rules, measures, versions, files, care_team, fingerprint(folder),
                   by_code, by_measure, _bare(by_code),
                   timezone[0] if timezone is not None else "UTC")


def empty_program() -> Program:
    return Program({}, {}, {}, {})


def restrict(program: Program, rule_ids: list[str]) -> Program:
    """The program with only ``rule_ids`` (golden scenarios test one rule at a time)."""
    unknown = [r for r in rule_ids if r not in program.rules]
    if unknown:
        raise ValueError(f"unknown rule(s): {', '.join(unknown)}")
    rules = {rid: program.rules[rid] for rid in rule_ids}
    by_code, by_measure = _index(rules, program.measures)
    return Program(rules, program.measures, {r: program.versions[r] for r in rules},
                   {r: program.files[r] for r in rules}, program.care_team, program.fingerprint,
                   by_code, by_measure, _bare(by_code), program.timezone)


def with_override(rule: Rule, params: dict[str, Any]) -> Rule:
    """``rule`` with ``params`` merged in (hub/rules/overrides.py: RFC 7396 merge patch, keyed
    lists merged by key); ValueError says what is wrong. ``id`` and ``kind`` cannot change."""
    if not params:
        return rule
    if not isinstance(params, dict):
        raise ValueError("an override is a JSON object of the rule's fields")
    for fixed in ("id", "kind"):
        if fixed in params and params[fixed] != getattr(rule, fixed):
            raise ValueError(f"an override cannot change '{fixed}'")
    merged = merge(rule.model_dump(), params)
    try:
        return RULE_ADAPTER.validate_python(merged)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "override"
        raise ValueError(f"{where}: {first['msg']}") from None


def changed_fields(base: Rule, effective: Rule) -> dict[str, Any]:
    """The top-level fields whose effective value differs from the program's (JSON form; unset
    optional members inside them left out)."""
    before, after = base.model_dump(mode="json"), effective.model_dump(mode="json")
    return {k: _without_nulls(v) for k, v in after.items() if before.get(k) != v}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
