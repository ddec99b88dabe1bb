"""The catalogue's codes, displays, units and categories match a table cited from the sources.

This module keeps its own reference table, written from the published sources and *not* from
the YAML, so the YAML cannot quietly agree with itself. Every catalogue entry, every component,
and every LOINC code anywhere under ``mappings/`` (device mappings, code maps, golden tests)
must match it. That makes Azure iomt-fhir's kind of mistake (its sample codes diastolic
pressure as 8867-4, heart rate) fail the build. The R4 specification's own examples and the
HL7 CGM IG in ``../shared/corpus`` are parsed and compared too.

Adding a type or a code means adding a row here with its source. See docs/terminology.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from hub.mappings.catalogue import load_mapping_set
from hub.mappings.schema import LOINC, UCUM, TypeSpec

from .conftest import CORPUS, REPO

VS = "FHIR R4 vital signs, http://hl7.org/fhir/R4/observation-vitalsigns.html"
CGM = "HL7 CGM IG STU1, http://hl7.org/fhir/uv/cgm/ (input/fsh/profiles.fsh)"


@dataclass(frozen=True)
class Row:
    """One LOINC code as published: long common name, UCUM units allowed, category, source."""

    display: str
    units: frozenset[str]  # UCUM codes an Observation with this code may carry (empty: panel)
    category: str
    source: str


def _row(display: str, units: set[str], category: str, source: str) -> Row:
    return Row(display, frozenset(units), category, source)


# code → Row. Units: the codes the profile/IG allows for that LOINC term. A mass-concentration
# term never carries mmol/L, and a molar term never carries mg/dL.
REFERENCE: dict[str, Row] = {
    "8867-4": _row("Heart rate", {"/min"}, "vital-signs",
                   f"{VS} (heartrate, /min fixed); https://loinc.org/8867-4/"),
    "8889-8": _row("Heart rate by Pulse oximetry", {"/min"}, "vital-signs",
                   "https://loinc.org/8889-8/; extra coding allowed by "
                   "http://hl7.org/fhir/R4/heartrate.html"),
    "9279-1": _row("Respiratory rate", {"/min"}, "vital-signs",
                   f"{VS} (resprate, /min fixed); https://loinc.org/9279-1/"),
    "2708-6": _row("Oxygen saturation in Arterial blood", {"%"}, "vital-signs",
                   f"{VS} (oxygensat, % fixed); https://loinc.org/2708-6/"),
    "59408-5": _row("Oxygen saturation in Arterial blood by Pulse oximetry", {"%"}, "vital-signs",
                    "R4 example observation-example-satO2; https://loinc.org/59408-5/"),
    "8310-5": _row("Body temperature", {"Cel", "[degF]"}, "vital-signs",
                   f"{VS} (bodytemp); http://hl7.org/fhir/R4/valueset-ucum-bodytemp.html"),
    "8302-2": _row("Body height", {"cm", "[in_i]"}, "vital-signs",
                   f"{VS} (bodyheight); http://hl7.org/fhir/R4/valueset-ucum-bodylength.html"),
    "29463-7": _row("Body weight", {"kg", "g", "[lb_av]"}, "vital-signs",
                    f"{VS} (bodyweight); http://hl7.org/fhir/R4/valueset-ucum-bodyweight.html"),
    "39156-5": _row("Body mass index (BMI) [Ratio]", {"kg/m2"}, "vital-signs",
                    f"{VS} (bmi, kg/m2 fixed); https://loinc.org/39156-5/"),
    "85354-9": _row("Blood pressure panel with all children optional", set(), "vital-signs",
                    f"{VS} (bp); https://loinc.org/85354-9/"),
    "8480-6": _row("Systolic blood pressure", {"mm[Hg]"}, "vital-signs",
                   f"{VS} (bp component, mm[Hg]); https://loinc.org/8480-6/"),
    "8462-4": _row("Diastolic blood pressure", {"mm[Hg]"}, "vital-signs",
                   f"{VS} (bp component, mm[Hg]); https://loinc.org/8462-4/"),
    "8478-0": _row("Mean blood pressure", {"mm[Hg]"}, "vital-signs",
                   "R4 example observation-example-mbp; https://loinc.org/8478-0/"),
    "2339-0": _row("Glucose [Mass/volume] in Blood", {"mg/dL"}, "laboratory",
                   "https://loinc.org/2339-0/ (group https://loinc.org/LG7967-5/)"),
    "41653-7": _row("Glucose [Mass/volume] in Capillary blood by Glucometer", {"mg/dL"},
                    "laboratory", "https://loinc.org/41653-7/"),
    "14743-9": _row("Glucose [Moles/volume] in Capillary blood by Glucometer", {"mmol/L"},
                    "laboratory", "https://loinc.org/14743-9/"),
    "99504-3": _row("Glucose [Mass/volume] in Interstitial fluid", {"mg/dL"}, "laboratory",
                    f"{CGM} CGMSensorReadingMassPerVolume; https://loinc.org/99504-3/"),
    "105272-9": _row("Glucose [Moles/volume] in Interstitial fluid", {"mmol/L"}, "laboratory",
                     f"{CGM} CGMSensorReadingMolesPerVolume; https://loinc.org/105272-9/"),
    "55423-8": _row("Number of steps in unspecified time Pedometer", {"{steps}"}, "activity",
                    "https://loinc.org/55423-8/; observation-category 'activity' "
                    "(http://terminology.hl7.org/CodeSystem/observation-category)"),
}

# Codes that device/HL7 code maps under mappings/ use but no catalogue type carries. The code
# pairing is sourced; the displays follow LOINC's long-common-name pattern but could not be
# retrieved from loinc.org while writing this, so they are marked for verification.
MII_PAP = ("MII ICU module, profile SD_MII_ICU_Pulmonalarterieller_Blutdruck (github "
           "medizininformatik-initiative/kerndatensatzmodul-intensivmedizin @fef395d): MDC "
           "150045/150046/150047 <-> LOINC 8440-0/8385-7/8414-5; display: verify at "
           "https://loinc.org/<code>/")
REFERENCE.update({
    "8440-0": _row("Pulmonary artery Systolic blood pressure", {"mm[Hg]"}, "vital-signs",
                   MII_PAP),
    "8385-7": _row("Pulmonary artery Diastolic blood pressure", {"mm[Hg]"}, "vital-signs",
                   MII_PAP),
    "8414-5": _row("Pulmonary artery Mean blood pressure", {"mm[Hg]"}, "vital-signs", MII_PAP),
})

R4 = "http://hl7.org/fhir/StructureDefinition/"
CGM_SD = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"


@dataclass(frozen=True)
class Expected:
    """What a catalogue type name must mean (other engineers' mappings refer to these names)."""

    codes: tuple[str, ...]
    unit: str | None  # canonical UCUM code; None for a panel
    profile: str | None
    components: tuple[tuple[str, str], ...] = ()  # (input name, LOINC code)


BP_PARTS = (("systolic", "8480-6"), ("diastolic", "8462-4"), ("mean", "8478-0"))

EXPECTED: dict[str, Expected] = {
    "heart-rate": Expected(("8867-4",), "/min", R4 + "heartrate"),
    "heart-rate-oximetry": Expected(("8867-4", "8889-8"), "/min", R4 + "heartrate"),
    "respiratory-rate": Expected(("9279-1",), "/min", R4 + "resprate"),
    "oxygen-saturation": Expected(("2708-6", "59408-5"), "%", R4 + "oxygensat"),
    "body-temperature": Expected(("8310-5",), "Cel", R4 + "bodytemp"),
    "body-height": Expected(("8302-2",), "cm", R4 + "bodyheight"),
    "body-weight": Expected(("29463-7",), "kg", R4 + "bodyweight"),
    "bmi": Expected(("39156-5",), "kg/m2", R4 + "bmi"),
    "blood-pressure": Expected(("85354-9",), None, R4 + "bp", BP_PARTS),
    "blood-pressure-systolic": Expected(("8480-6",), "mm[Hg]", R4 + "vitalsigns"),
    "blood-pressure-diastolic": Expected(("8462-4",), "mm[Hg]", R4 + "vitalsigns"),
    "blood-pressure-mean": Expected(("8478-0",), "mm[Hg]", R4 + "vitalsigns"),
    "glucose-blood": Expected(("2339-0",), "mg/dL", None),
    "glucose-capillary": Expected(("41653-7",), "mg/dL", None),
    "glucose-capillary-molar": Expected(("14743-9",), "mmol/L", None),
    "cgm-glucose": Expected(("99504-3",), "mg/dL",
                            CGM_SD + "cgm-sensor-reading-mass-per-volume"),
    "cgm-glucose-molar": Expected(("105272-9",), "mmol/L",
                                  CGM_SD + "cgm-sensor-reading-moles-per-volume"),
    "steps": Expected(("55423-8",), "{steps}", None),
}

LOINC_CODE = re.compile(r"^\d{1,6}-\d$")
LOINC_IN_TEXT = re.compile(r"loinc\.org\|(\d{1,6}-\d)\b|'(\d{1,6}-\d)'")


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit (LOINC Users' Guide, "Calculating Mod 10 check digits").

    Double every other digit, starting with the rightmost digit of the number part; add the
    digits of the products and the untouched digits; the check digit brings the sum up to a
    multiple of 10.
    """
    number, check = code.split("-")
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            digit = digit // 10 + digit % 10
        total += digit
    return (10 - total % 10) % 10 == int(check)


# The hub's own code systems (for events no standard terminology names, e.g. the smart pill
# bottle's "bottle opened"). A type coded only in one of these is not a measurement the tables
# above cover; it must not borrow a standard-looking system URL either.
HUB_LOCAL_SYSTEM = "urn:iomt-fhir-hub:"


def is_loinc_type(spec: TypeSpec) -> bool:
    return any(c.system == LOINC for c in spec.codes)


def terminology_problems(types: Mapping[str, TypeSpec]) -> list[str]:
    """Every way the catalogue disagrees with REFERENCE/EXPECTED, as readable lines."""
    problems: list[str] = []
    measured = {name for name, spec in types.items() if is_loinc_type(spec)}
    if measured != set(EXPECTED):
        problems.append(f"catalogue types {sorted(measured ^ set(EXPECTED))} are not in both "
                        "the catalogue and this test's table (add the row with its source)")
    for name, spec in types.items():
        if is_loinc_type(spec):
            continue
        systems = {c.system for c in spec.codes} | {c.system for comp in spec.components
                                                     for c in comp.codes}
        borrowed = sorted(s for s in systems if not s.startswith(HUB_LOCAL_SYSTEM))
        if borrowed:
            problems.append(f"types.{name}: not LOINC-coded, yet uses {borrowed}: a type is "
                            f"either LOINC (in the table) or hub-local ({HUB_LOCAL_SYSTEM}...)")
        if spec.category == "vital-signs":
            problems.append(f"types.{name}: a vital sign must carry its LOINC code")
    meaning: dict[str, str] = {}  # code → the display it was used with

    def check_coding(where: str, system: str, code: str, display: str,
                     unit: str | None, category: str | None) -> None:
        if system != LOINC:
            problems.append(f"{where}: coding system {system} is not LOINC")
            return
        row = REFERENCE.get(code)
        if row is None:
            problems.append(f"{where}: LOINC {code} is not in the reference table")
            return
        if not loinc_check_digit_ok(code):
            problems.append(f"{where}: LOINC {code} has a wrong check digit")
        if display != row.display:
            problems.append(f"{where}: {code} display '{display}' is not the LOINC long "
                            f"common name '{row.display}'")
        if meaning.setdefault(code, display) != display:
            problems.append(f"{where}: {code} used with two meanings")
        if unit is not None and unit not in row.units:
            problems.append(f"{where}: unit {unit} not allowed for {code} "
                            f"({sorted(row.units)}; {row.source})")
        if category is not None and category != row.category:
            problems.append(f"{where}: category {category} but {code} is {row.category} "
                            f"({row.source})")

    for name, spec in types.items():
        if not is_loinc_type(spec):
            continue
        expected = EXPECTED.get(name)
        unit = spec.unit.code if spec.unit is not None else None
        for coding in spec.codes:
            check_coding(f"types.{name}", coding.system, coding.code, coding.display,
                         unit, spec.category)
        if expected is None:
            continue
        codes = tuple(c.code for c in spec.codes)
        if codes != expected.codes:
            problems.append(f"types.{name}: codes {codes}, expected {expected.codes}")
        if unit != expected.unit:
            problems.append(f"types.{name}: unit {unit}, expected {expected.unit}")
        if spec.profile != expected.profile:
            problems.append(f"types.{name}: profile {spec.profile}, expected {expected.profile}")
        comps = tuple((c.input, c.codes[0].code) for c in spec.components)
        if comps != expected.components:
            problems.append(f"types.{name}: components {comps}, expected {expected.components}")
        seen_in_obs = set(codes)
        for comp in spec.components:
            for coding in comp.codes:
                check_coding(f"types.{name}.components.{comp.input}", coding.system,
                             coding.code, coding.display, comp.unit.code, None)
                if coding.code in seen_in_obs:  # FHIR obs-7, and a sure sign of a copy-paste
                    problems.append(f"types.{name}.components.{comp.input}: code {coding.code} "
                                    "used twice in one Observation")
                seen_in_obs.add(coding.code)
    return problems


@pytest.fixture(scope="module")
def types() -> dict[str, TypeSpec]:
    return load_mapping_set(REPO / "mappings").types


def test_reference_table_itself_is_sound() -> None:
    for code, row in REFERENCE.items():
        assert loinc_check_digit_ok(code), code
        assert row.display and row.source and row.category in {"vital-signs", "laboratory",
                                                               "activity"}
    for name, expected in EXPECTED.items():
        for code in expected.codes + tuple(c for _, c in expected.components):
            assert code in REFERENCE, (name, code)
    # The check-digit routine itself: iomt-fhir's wrong code is a *valid* code (so only the
    # table catches it), and a typo is caught.
    assert loinc_check_digit_ok("8867-4") and not loinc_check_digit_ok("8867-5")


def test_catalogue_matches_the_cited_table(types: dict[str, TypeSpec]) -> None:
    assert terminology_problems(types) == []


def test_category_vital_signs_exactly_where_the_r4_profile_says(
        types: dict[str, TypeSpec]) -> None:
    vital = {name for name, spec in types.items() if spec.category == "vital-signs"}
    assert vital == {n for n in EXPECTED if not n.startswith(("glucose", "cgm", "steps"))}
    assert all(is_loinc_type(types[name]) for name in vital)
    for name in ("glucose-blood", "glucose-capillary", "glucose-capillary-molar",
                 "cgm-glucose", "cgm-glucose-molar"):
        assert types[name].category == "laboratory"
    assert types["steps"].category == "activity"


def _with_component_code(spec: TypeSpec, input_name: str, code: str, display: str) -> TypeSpec:
    data = spec.model_dump()
    for comp in data["components"]:
        if comp["input"] == input_name:
            comp["codes"] = [{"system": LOINC, "code": code, "display": display}]
    return TypeSpec.model_validate(data)


def test_the_iomt_fhir_mistake_is_caught(types: dict[str, TypeSpec]) -> None:
    # The iomt-fhir sample: diastolic coded 8867-4, with the display "Diastolic blood pressure".
    broken = dict(types)
    broken["blood-pressure"] = _with_component_code(types["blood-pressure"], "diastolic",
                                                     "8867-4", "Diastolic blood pressure")
    problems = terminology_problems(broken)
    assert any("8867-4 display 'Diastolic blood pressure'" in p for p in problems), problems
    assert any("components" in p and "expected" in p for p in problems), problems
    # ... and with the heart-rate display copied too, the component list still gives it away.
    broken["blood-pressure"] = _with_component_code(types["blood-pressure"], "diastolic",
                                                    "8867-4", "Heart rate")
    problems = terminology_problems(broken)
    assert any("('diastolic', '8867-4')" in p for p in problems), problems
    assert any("unit mm[Hg] not allowed for 8867-4" in p for p in problems), problems


def test_hub_local_types_may_not_pose_as_standard_codes(types: dict[str, TypeSpec]) -> None:
    fake = TypeSpec.model_validate({
        "codes": [{"system": "http://snomed.info/sct", "code": "123", "display": "x"}],
        "category": "vital-signs", "unit": {"code": "/min", "display": "/min"}})
    problems = terminology_problems(dict(types, fake=fake))
    assert any("not LOINC-coded, yet uses ['http://snomed.info/sct']" in p for p in problems)
    assert any("a vital sign must carry its LOINC code" in p for p in problems)


def test_a_molar_code_with_a_mass_unit_is_caught(types: dict[str, TypeSpec]) -> None:
    data = types["glucose-capillary-molar"].model_dump()
    data["unit"]["code"] = "mg/dL"
    data["unit"]["convert_from"] = []
    broken = dict(types, **{"glucose-capillary-molar": TypeSpec.model_validate(data)})
    assert any("unit mg/dL not allowed for 14743-9" in p for p in terminology_problems(broken))


# --- every LOINC code anywhere under mappings/ -------------------------------------------------


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _loinc_codes_in(text: str) -> list[str]:
    if LOINC_CODE.match(text):
        return [text]
    return [a or b for a, b in LOINC_IN_TEXT.findall(text)]


def _type_codes(spec: TypeSpec) -> set[str]:
    return {c.code for c in spec.codes} | {c.code for comp in spec.components for c in comp.codes}


def _unit_of(node: Mapping[str, Any]) -> str | None:
    unit = node.get("unit")
    if isinstance(unit, Mapping):
        unit = unit.get("code")
    return unit if isinstance(unit, str) else None


def scan_mapping_files(root: Path, types: Mapping[str, TypeSpec]) -> tuple[int, list[str]]:
    """(LOINC codes seen, problems) over every YAML file under ``root``.

    Looks at every string (a whole-string code such as ``8867-4``, ``loinc.org|8867-4`` or a
    JMESPath literal ``'8867-4'``) and every mapping key (code maps). Checks codings written as
    {code, display, unit} against the table, and code maps in either direction (code → type
    name, type name → code) against the catalogue.
    """
    problems: list[str] = []
    found = 0
    yaml = YAML(typ="safe")
    meaning: dict[str, set[str]] = {}

    def known(where: str, code: str) -> None:
        nonlocal found
        found += 1
        if code not in REFERENCE:
            problems.append(f"{where}: LOINC {code} is not in the reference table")
        elif not loinc_check_digit_ok(code):
            problems.append(f"{where}: LOINC {code} has a wrong check digit")

    for path in sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"}):
        rel = path.relative_to(root.parent).as_posix()
        document = yaml.load(path.read_text(encoding="utf-8"))
        for where, node in _walk(document, rel):
            if isinstance(node, str):
                for code in _loinc_codes_in(node):
                    known(where, code)
            if not isinstance(node, Mapping):
                continue
            for key, value in node.items():
                for code in _loinc_codes_in(str(key)):  # a code map keyed by LOINC code
                    known(f"{where}.{key}", code)
                    if isinstance(value, str) and value in types \
                            and code not in _type_codes(types[value]):
                        problems.append(f"{where}: maps LOINC {code} to type '{value}', "
                                        f"which is coded {sorted(_type_codes(types[value]))}")
                if isinstance(key, str) and key in types and isinstance(value, str):
                    for mapped in _loinc_codes_in(value):  # a map from type name to code
                        if mapped not in _type_codes(types[key]):
                            problems.append(f"{where}: maps type '{key}' to LOINC {mapped}, "
                                            f"but it is coded {sorted(_type_codes(types[key]))}")
            coded = node.get("code")
            if not isinstance(coded, str) or coded not in REFERENCE:
                continue
            code = coded
            if node.get("system", LOINC) != LOINC:
                continue
            row = REFERENCE[code]
            display = node.get("display")
            if display is not None:
                meaning.setdefault(code, set()).add(str(display))
                if display != row.display:
                    problems.append(f"{where}: {code} display '{display}' is not "
                                    f"'{row.display}'")
            unit = _unit_of(node)
            if unit is not None and row.units and unit not in row.units:
                problems.append(f"{where}: unit {unit} not allowed for {code}")
    for code, displays in meaning.items():
        if len(displays) > 1:
            problems.append(f"LOINC {code} used with several meanings: {sorted(displays)}")
    return found, problems


def test_every_loinc_code_under_mappings_matches_the_table(types: dict[str, TypeSpec]) -> None:
    found, problems = scan_mapping_files(REPO / "mappings", types)
    assert found >= len(REFERENCE)  # the scan did see (at least) the catalogue's own codes
    assert problems == []


def test_the_scan_catches_bad_codes_in_any_mapping_file(tmp_path: Path,
                                                         types: dict[str, TypeSpec]) -> None:
    root = tmp_path / "mappings"
    (root / "hl7").mkdir(parents=True)
    (root / "hl7" / "codes.yaml").write_text(
        "version: 1\n"
        "loinc_to_type: {'8867-4': blood-pressure-diastolic, '8480-6': blood-pressure}\n"
        "type_to_loinc: {heart-rate: '8462-4'}\n"
        "templates:\n"
        "  - {code: 8867-4, display: Diastolic blood pressure, unit: mmHg}\n"
        "  - {system: http://loinc.org, code: 8480-6, display: Systolic BP}\n"
        "expression: \"'http://loinc.org|8867-5'\"\n"
        "unknown: 12345-6\n", encoding="utf-8")
    _, problems = scan_mapping_files(root, types)
    text = "\n".join(problems)
    assert "maps LOINC 8867-4 to type 'blood-pressure-diastolic'" in text
    assert "maps type 'heart-rate' to LOINC 8462-4" in text
    assert "8867-4 display 'Diastolic blood pressure' is not 'Heart rate'" in text
    assert "unit mmHg not allowed for 8867-4" in text
    assert "8480-6 display 'Systolic BP'" in text
    assert "LOINC 8867-5 is not in the reference table" in text
    assert "LOINC 12345-6 is not in the reference table" in text
    assert "'8480-6': blood-pressure" not in text  # a component code of the panel is fine


def test_every_type_a_device_mapping_names_is_in_the_catalogue(
        types: dict[str, TypeSpec]) -> None:
    """Type names written as JMESPath literals ("'blood-pressure'") or in type_map values."""
    yaml = YAML(typ="safe")
    unknown: list[str] = []
    for path in sorted((REPO / "mappings" / "devices").glob("*.yaml")):
        if path.name.endswith(".test.yaml"):
            continue
        document = yaml.load(path.read_text(encoding="utf-8"))
        for index, rule in enumerate(document.get("measurements", [])):
            literal = re.fullmatch(r"\s*'([^']+)'\s*", str(rule.get("type", "")))
            names = ([literal.group(1)] if literal else []) + list(
                (rule.get("type_map") or {}).values())
            unknown += [f"{path.name}: measurements[{index}]: {n}" for n in names
                        if n not in types]
    assert unknown == []


# --- the specification's own examples -----------------------------------------------------------

R4_EXAMPLES = {
    "observation-example-heart-rate.json": "heart-rate",
    "observation-example-respiratory-rate.json": "respiratory-rate",
    "observation-example-satO2.json": "oxygen-saturation",
    "observation-example-body-temperature.json": "body-temperature",
    "observation-example-body-height.json": "body-height",
    "observation-example.json": "body-weight",
    "observation-example-bmi.json": "bmi",
    "observation-example-bloodpressure.json": "blood-pressure",
    "observation-example-mbp.json": "blood-pressure-mean",
}


def _corpus_file(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.is_file():
        pytest.fail(f"corpus file missing: {path} (the shared corpus must sit beside the repo; "
                    "this test must not pass without it)")
    return path


def _loinc(codeable: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(c["code"], c.get("display", "")) for c in codeable.get("coding", [])
            if c.get("system") == LOINC]


def _accepted_units(unit: Any) -> set[str]:
    return {unit.code} | {s.code for s in unit.convert_from}


@pytest.mark.parametrize(("example", "type_name"), sorted(R4_EXAMPLES.items()))
def test_agrees_with_the_r4_spec_examples(types: dict[str, TypeSpec], example: str,
                                          type_name: str) -> None:
    resource = json.loads(_corpus_file("fhir-examples", example).read_text(encoding="utf-8"))
    spec = types[type_name]
    theirs = _loinc(resource["code"])
    ours = [(c.code, c.display) for c in spec.codes]
    assert ours[0][0] == theirs[0][0]
    assert {c for c, _ in ours} <= {c for c, _ in theirs}
    their_display = dict(theirs)
    for code, display in ours:  # the examples' displays differ at most in case ("Body Weight")
        assert display.lower() == their_display[code].lower()
    categories = {c["code"] for cat in resource.get("category", []) for c in cat["coding"]}
    assert spec.category in categories
    if spec.unit is not None:
        quantity = resource["valueQuantity"]
        assert quantity["system"] == UCUM
        assert quantity["code"] in _accepted_units(spec.unit)
        assert quantity["code"] in REFERENCE[spec.codes[0].code].units
        # Quantity.unit is free text; the profiled examples agree with ours (the unprofiled
        # mbp example writes "mm[Hg]" where the bp example writes "mmHg").
        if quantity["code"] == spec.unit.code and resource.get("meta", {}).get("profile"):
            assert quantity["unit"] == spec.unit.display
    for component in resource.get("component", []):
        code = _loinc(component["code"])[0][0]
        comp = next(c for c in spec.components if c.codes[0].code == code)
        assert component["valueQuantity"]["code"] == comp.unit.code
        assert component["valueQuantity"]["unit"] == comp.unit.display


def test_r4_bp_example_components_are_systolic_and_diastolic(types: dict[str, TypeSpec]) -> None:
    resource = json.loads(_corpus_file("fhir-examples", "observation-example-bloodpressure.json")
                          .read_text(encoding="utf-8"))
    example = [_loinc(c["code"])[0][0] for c in resource["component"]]
    ours = {c.input: c.codes[0].code for c in types["blood-pressure"].components}
    assert example == [ours["systolic"], ours["diastolic"]] == ["8480-6", "8462-4"]


def test_agrees_with_the_hl7_cgm_ig(types: dict[str, TypeSpec]) -> None:
    # The published IG's profiles are cited in glucose.yaml; the corpus has the IG's examples
    # (FSH) and a May-2024 draft bundle in JSON.
    fsh = _corpus_file("devices", "hl7-cgm-ig", "examples.fsh").read_text(encoding="utf-8")
    for profile in ("CGMSensorReadingMassPerVolume", "CGMSensorReadingMolesPerVolume"):
        block = fsh.split(f"InstanceOf: {profile}", 1)[1].split("Instance:", 1)[0]
        assert "observation-category#laboratory" in block
    assert types["cgm-glucose"].category == types["cgm-glucose-molar"].category == "laboratory"
    bundle = json.loads(_corpus_file("devices", "hl7-cgm-ig",
                                     "draft-2024-05_cgm-submission-bundle.json")
                        .read_text(encoding="utf-8"))
    readings = [e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "Observation"
                and any(code == "99504-3" for code, _ in _loinc(e["resource"]["code"]))]
    assert readings
    spec = types["cgm-glucose"]
    assert spec.unit is not None
    for reading in readings:
        assert reading["valueQuantity"]["code"] == spec.unit.code
        assert reading["valueQuantity"]["unit"] == spec.unit.display
        categories = {c["code"] for cat in reading["category"] for c in cat["coding"]}
        assert spec.category in categories
