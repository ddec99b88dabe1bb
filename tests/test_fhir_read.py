"""The FHIR read API: metadata, read, search (every parameter form), paging, errors.

Readings go in through the real path (POST /ingest/hub, then the worker's drain); other resource
types through the FHIR write API. Every resource and Bundle returned is validated with
fhir.resources.R4B.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class

from hub.api.app import create_app
from hub.fhir.capability import RESOURCE_TYPES, SEARCH_PARAMS
from hub.runtime import Hub
from hub.store import api_keys
from hub.worker import drain
from tests.conftest import TEST_SECRET, auth
from tests.readings import BASE_TIME, canonical

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
HUB_PATIENT = "urn:iomt-fhir-hub:patient"
HUB_DEVICE = "urn:iomt-fhir-hub:device"
# The canonical readings (heart rate). Rules may derive further Observations from them (their
# own codes); searches that count readings select these.
HR = f"Observation?code={LOINC}|8867-4"


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate with the R4B models (never the default R5 package); returns the resource."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


@pytest.fixture
def key(hub: Hub) -> str:
    """May post canonical readings and FHIR writes."""
    return api_keys.create(hub.engine, TEST_SECRET, "ehr-team", ["hub", "fhir"])


@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(hub, inline_worker=False)) as c:
        yield c


def ingest(hub: Hub, client: TestClient, key: str, body: dict[str, Any]) -> None:
    assert client.post("/ingest/hub", json=body, headers=auth(key)).status_code == 202
    drain(hub.pipeline, hub.engine, 16)


def search(client: TestClient, key: str, query: str, status: int = 200) -> dict[str, Any]:
    answer = client.get(f"/fhir/{query}", headers=auth(key))
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    if status == 200:
        valid(body)
        for entry in body.get("entry", []):
            valid(entry["resource"])
    return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"]


def times(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["effectiveDateTime"] for e in bundle.get("entry", [])]


def patient_id(client: TestClient, key: str, value: str = "pat-1") -> str:
    found = search(client, key, f"Patient?identifier={HUB_PATIENT}|{value}")
    assert found["total"] == 1
    return ids(found)[0]


def reading(kind: str, minute: int, value: float, unit: str) -> dict[str, Any]:
    when = (BASE_TIME + timedelta(minutes=minute)).isoformat()
    return {"type": kind, "time": when, "unit": unit, "value": value}


# --- metadata -------------------------------------------------------------------------------

def test_metadata_is_a_valid_r4_capability_statement_listing_exactly_what_is_served(
    client: TestClient, key: str
) -> None:
    answer = client.get("/fhir/metadata", headers=auth(key))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/fhir+json")
    statement = valid(answer.json())
    assert statement["fhirVersion"] == "4.0.1"
    assert "json" in statement["format"]
    rest = statement["rest"][0]
    assert [r["type"] for r in rest["resource"]] == list(RESOURCE_TYPES)
    for resource in rest["resource"]:
        assert {i["code"] for i in resource["interaction"]} == {
            "read", "search-type", "create", "update"}
        assert [p["name"] for p in resource["searchParam"]] == [
            p.name for p in SEARCH_PARAMS[resource["type"]]]
    assert {i["code"] for i in rest["interaction"]} == {"batch", "transaction"}
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    assert {p["name"] for p in observation["searchParam"]} == {
        "_id", "_lastUpdated", "patient", "subject", "code", "date", "category"}


def test_every_fhir_endpoint_needs_a_key(client: TestClient) -> None:
    for path in ("/fhir/metadata", "/fhir/Observation", "/fhir/Observation/x"):
        answer = client.get(path)
        assert answer.status_code == 401
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert client.post("/fhir/Observation", json={}).status_code == 401
    assert client.put("/fhir/Observation/x", json={}).status_code == 401
    assert client.post("/fhir", json={}).status_code == 401


# --- read -----------------------------------------------------------------------------------

def test_read_returns_the_resource_with_meta_and_etag(
    hub: Hub, client: TestClient, key: str
) -> None:
    ingest(hub, client, key, canonical(1))
    obs_id = ids(search(client, key, HR))[0]
    answer = client.get(f"/fhir/Observation/{obs_id}", headers=auth(key))
    assert answer.status_code == 200
    resource = valid(answer.json())
    assert resource["id"] == obs_id
    assert resource["meta"]["versionId"] == "1"
    assert resource["meta"]["lastUpdated"]
    assert answer.headers["etag"] == 'W/"1"'
    assert answer.headers["last-modified"].endswith("GMT")


def test_read_of_absent_or_unsupported_is_404_outcome(client: TestClient, key: str) -> None:
    for path in ("/fhir/Observation/no-such-id", "/fhir/Encounter/x", "/fhir/Observation/bad%20id",
                 "/fhir/Encounter"):
        answer = client.get(path, headers=auth(key))
        assert answer.status_code == 404, path
        outcome = valid(answer.json())
        assert outcome["issue"][0]["code"] == "not-found"


# --- search by reference, id, identifier ------------------------------------------------------

def test_search_by_patient_and_subject(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(3, patient="pat-1"))
    ingest(hub, client, key, canonical(2, patient="pat-2", device="cuff-2"))
    pid = patient_id(client, key)
    for query in (f"patient={pid}", f"patient=Patient/{pid}", f"subject=Patient/{pid}",
                  f"subject={pid}", f"patient=http://elsewhere.example/fhir/Patient/{pid}"):
        assert search(client, key, f"{HR}&{query}")["total"] == 3, query
    other = patient_id(client, key, "pat-2")
    assert search(client, key, f"{HR}&patient={pid},{other}")["total"] == 5
    assert search(client, key, "Observation?patient=nobody")["total"] == 0
    outcome = search(client, key, "Observation?patient=Group/x", status=400)
    assert outcome["issue"][0]["expression"] == ["patient"]


def test_search_by_id_and_identifier(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(2))
    obs = ids(search(client, key, HR))
    assert ids(search(client, key, f"Observation?_id={obs[0]}")) == [obs[0]]
    assert sorted(ids(search(client, key, f"Observation?_id={obs[0]},{obs[1]}"))) == sorted(obs)
    pid = patient_id(client, key)
    assert ids(search(client, key, "Patient?identifier=pat-1")) == [pid]
    assert ids(search(client, key, f"Patient?_id={pid}")) == [pid]
    assert search(client, key, "Patient?identifier=|pat-1")["total"] == 0  # it has a system
    device = search(client, key, f"Device?identifier={HUB_DEVICE}|cuff-1")
    assert device["total"] == 1
    assert search(client, key, "Device?identifier=urn:other|cuff-1")["total"] == 0


# --- code -----------------------------------------------------------------------------------

def test_search_by_code_in_all_token_forms_and_secondary_codings(
    hub: Hub, client: TestClient, key: str
) -> None:
    body = canonical(2)  # heart rate 8867-4
    body["readings"].append(reading("oxygen-saturation", 5, 97, "%"))  # 2708-6 + 59408-5
    ingest(hub, client, key, body)
    unsystematic = {
        "resourceType": "Observation", "id": "local-code", "status": "final",
        "code": {"coding": [{"code": "8867-4"}, {"system": "urn:local", "code": "hr"},
                            {"system": "urn:other-local", "code": "pulse"}]},
        "effectiveDateTime": "2026-11-20T10:00:00Z",
    }
    assert client.put("/fhir/Observation/local-code", json=unsystematic,
                      headers=auth(key)).status_code == 201
    assert search(client, key, "Observation?code=8867-4")["total"] == 3
    assert search(client, key, f"Observation?code={LOINC}|8867-4")["total"] == 2
    assert ids(search(client, key, "Observation?code=|8867-4")) == ["local-code"]
    # the pulse-oximetry coding is the second coding (the second_code column); a third coding
    # is found through resource_token
    assert search(client, key, f"Observation?code={LOINC}|59408-5")["total"] == 1
    assert search(client, key, "Observation?code=59408-5")["total"] == 1
    assert ids(search(client, key, "Observation?code=urn:local|hr")) == ["local-code"]
    assert search(client, key, "Observation?code=|hr")["total"] == 0
    assert ids(search(client, key, "Observation?code=urn:other-local|pulse")) == ["local-code"]
    assert search(client, key, "Observation?code=pulse,59408-5")["total"] == 2
    assert search(client, key, f"Observation?code={LOINC}|2708-6,urn:local|hr")["total"] == 2
    assert search(client, key, "Observation?code=urn:other|8867-4")["total"] == 0
    outcome = search(client, key, f"Observation?code={LOINC}|", status=400)
    assert outcome["issue"][0]["expression"] == ["code"]


# --- date -----------------------------------------------------------------------------------

@pytest.fixture
def dated(hub: Hub, client: TestClient, key: str) -> None:
    """Readings on 2026-10-21 (1), 2026-11-20 08:00-08:02 (3) and 2026-11-21 08:00-08:01 (2)."""
    ingest(hub, client, key, canonical(1, start=-30 * 24 * 60))
    ingest(hub, client, key, canonical(3))
    ingest(hub, client, key, canonical(2, start=24 * 60))


@pytest.mark.usefixtures("dated")
@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-20", 3), ("eq2026-11-20", 3), ("ne2026-11-20", 3), ("lt2026-11-20", 1),
    ("le2026-11-20", 4), ("gt2026-11-20", 2), ("ge2026-11-20", 5), ("sa2026-11-20", 2),
    ("eb2026-11-20", 1), ("2026-11", 5), ("2026", 6), ("2026-10", 1), ("ne2026-11", 1),
    ("lt2026-11", 1), ("ge2026-11", 5), ("2025", 0), ("gt2026", 0),
    ("2026-11-20T08:01:00Z", 1), ("2026-11-20T08:01Z", 1), ("ge2026-11-20T08:01:00Z", 4),
    ("gt2026-11-20T08:01:00Z", 3), ("lt2026-11-20T08:01:00Z", 2), ("le2026-11-20T08:01:00Z", 3),
    ("2026-11-20T09:01:00+01:00", 1), ("2026-11-20T08:01:00.000Z", 1),
    ("2026-11-20T08:01:00.5Z", 0),
])
def test_search_by_date_prefixes_and_partial_dates(
    client: TestClient, key: str, value: str, expected: int
) -> None:
    found = search(client, key, f"{HR}&date={quote(value)}")
    assert found["total"] == expected, value
    assert len(ids(found)) == expected


@pytest.mark.usefixtures("dated")
def test_date_parameters_and_and_values_or(client: TestClient, key: str) -> None:
    assert search(client, key, f"{HR}&date=ge2026-11-20&date=lt2026-11-21")["total"] == 3
    assert search(client, key, f"{HR}&date=2026-10-21,2026-11-21")["total"] == 3
    # an unencoded '+' arrives as a space: still read as the offset
    assert search(client, key, f"{HR}&date=2026-11-20T09:01:00+01:00")["total"] == 1


@pytest.mark.parametrize("value", ["ap2026-11-20", "2026-13", "yesterday", "2026-11-20T25:00Z",
                                   "xx2026"])
def test_bad_dates_are_400_naming_the_parameter(client: TestClient, key: str, value: str) -> None:
    outcome = search(client, key, f"Observation?date={value}", status=400)
    assert outcome["issue"][0]["expression"] == ["date"]
    assert value not in outcome["issue"][0]["diagnostics"]


# --- category, unknown parameters -----------------------------------------------------------

def test_search_by_category(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(2))
    assert search(client, key, f"{HR}&category=vital-signs")["total"] == 2
    assert search(client, key, f"{HR}&category={CATEGORY}|vital-signs")["total"] == 2
    assert search(client, key, f"{HR}&category=laboratory")["total"] == 0
    assert search(client, key, f"{HR}&category=laboratory,vital-signs")["total"] == 2
    search(client, key, "Observation?category=urn:other|vital-signs", status=400)


def test_unknown_parameters_are_refused_not_ignored(client: TestClient, key: str) -> None:
    for query, name in (("Observation?foo=1", "foo"), ("Observation?code:text=x", "code:text"),
                        ("Patient?name=x", "name"), ("Observation?_summary=count", "_summary"),
                        ("Observation?_count=-1", "_count"), ("Observation?_sort=value", "_sort"),
                        ("Observation?_cursor=garbage", "_cursor"),
                        ("Observation?_format=xml", "_format"),
                        ("Observation?_count=1&_count=2", "_count")):
        outcome = search(client, key, query, status=400)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == [name], query
        assert name in outcome["issue"][0]["diagnostics"]


def test_lenient_handling_skips_unknown_parameters_and_says_so(
    hub: Hub, client: TestClient, key: str
) -> None:
    ingest(hub, client, key, canonical(2))
    answer = client.get(f"/fhir/{HR}&foo=1&category=vital-signs",
                        headers={**auth(key), "Prefer": "handling=lenient"})
    assert answer.status_code == 200
    bundle = valid(answer.json())
    assert bundle["total"] == 2
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "foo" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "foo" not in bundle["link"][0]["url"]


# --- paging and sorting ---------------------------------------------------------------------

def walk(client: TestClient, key: str, query: str, relation: str = "next") -> list[dict]:
    pages = [search(client, key, query)]
    while True:
        link = [li["url"] for li in pages[-1]["link"] if li["relation"] == relation]
        if not link:
            return pages
        answer = client.get(link[0], headers=auth(key))
        assert answer.status_code == 200, answer.text
        pages.append(valid(answer.json()))


@pytest.mark.parametrize("sort", ["", "&_sort=date", "&_sort=-date", "&_sort=_lastUpdated",
                                  "&_sort=-_id"])
def test_paging_through_all_pages_has_no_duplicates_and_no_gaps(
    hub: Hub, client: TestClient, key: str, sort: str
) -> None:
    ingest(hub, client, key, canonical(21))
    for rid in ("timeless-1", "timeless-2"):  # no effective[x]: a NULL sort value, sorted last
        timeless = {"resourceType": "Observation", "id": rid, "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}}
        assert client.put(f"/fhir/Observation/{rid}", json=timeless,
                          headers=auth(key)).status_code == 201
    every = set(ids(search(client, key, f"{HR}&_count=1000")))
    assert len(every) == 23
    pages = walk(client, key, f"{HR}&_count=5{sort}")
    assert [len(ids(p)) for p in pages] == [5, 5, 5, 5, 3]
    assert all(p["total"] == 23 for p in pages)
    seen = [i for p in pages for i in ids(p)]
    assert len(seen) == len(set(seen)) == 23 and set(seen) == every
    if "date" in sort:
        assert set(seen[-2:]) == {"timeless-1", "timeless-2"}
    assert not any(li["relation"] == "previous" for li in pages[0]["link"])
    # and back again from the last page, through the previous links
    back = walk(client, key, pages[-1]["link"][0]["url"].split("/fhir/", 1)[1], "previous")
    assert [i for p in reversed(back) for i in ids(p)] == seen


def test_sort_orders_by_effective_time(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(4, start=10))
    ingest(hub, client, key, canonical(3))
    ascending = times(search(client, key, f"{HR}&_sort=date"))
    assert ascending == sorted(ascending) and len(ascending) == 7
    assert times(search(client, key, f"{HR}&_sort=-date")) == ascending[::-1]


def test_pages_stay_correct_while_readings_arrive(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(10, start=100))
    first = search(client, key, f"{HR}&_count=4&_sort=date")
    # new readings land before and after the cursor (earlier and later times)
    ingest(hub, client, key, canonical(3, start=0, device="cuff-9"))
    ingest(hub, client, key, canonical(3, start=500, device="cuff-9"))
    pages = [first, *walk(client, key, next(li["url"] for li in first["link"]
                                            if li["relation"] == "next").split("/fhir/", 1)[1])]
    seen = [i for p in pages for i in ids(p)]
    assert len(seen) == len(set(seen))
    stamps = [t for p in pages for t in times(p)]
    assert stamps == sorted(stamps)
    # every original reading was seen exactly once; the later arrivals after the cursor too
    assert len(seen) == 10 + 3


def test_count_zero_gives_the_total_only_and_large_counts_are_capped(
    hub: Hub, client: TestClient, key: str
) -> None:
    ingest(hub, client, key, canonical(3))
    only_total = search(client, key, f"{HR}&_count=0")
    assert only_total["total"] == 3 and "entry" not in only_total
    capped = search(client, key, f"{HR}&_count=5000")
    assert capped["total"] == 3 and "_count=1000" in capped["link"][0]["url"]
    ingest(hub, client, key, canonical(60, start=100))
    assert len(ids(search(client, key, HR))) == 50  # the default page


def test_last_updated_search(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(2))
    now = datetime.now(UTC)
    assert search(client, key, f"{HR}&_lastUpdated={now:%Y}")["total"] == 2
    later = quote(f"gt{(now + timedelta(hours=1)).isoformat(timespec='seconds')}")
    assert search(client, key, f"{HR}&_lastUpdated={later}")["total"] == 0


# --- Flag and Communication -----------------------------------------------------------------

def test_flag_and_communication_search(hub: Hub, client: TestClient, key: str) -> None:
    ingest(hub, client, key, canonical(1))
    pid = patient_id(client, key)
    flag = {
        "resourceType": "Flag", "id": "flag-1", "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "clinical"}]}],
        "code": {"text": "Heart rate above threshold"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": "2026-11-20T08:05:00Z"},
    }
    note = {
        "resourceType": "Communication", "id": "comm-1", "status": "completed",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "alert"}]}],
        "subject": {"reference": f"Patient/{pid}"}, "sent": "2026-11-20T08:06:00Z",
        "payload": [{"contentString": "Please review the readings"}],
    }
    for resource in (flag, note):
        answer = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                            headers=auth(key))
        assert answer.status_code == 201, answer.text
    for query in (f"Flag?patient={pid}", f"Flag?subject=Patient/{pid}", "Flag?status=active",
                  "Flag?category=clinical", "Flag?date=2026-11-20", "Flag?date=ge2026-11-20T08:05Z",
                  "Flag?_sort=-date"):
        assert ids(search(client, key, query)) == ["flag-1"], query
    assert search(client, key, "Flag?status=inactive")["total"] == 0
    assert search(client, key, "Flag?date=lt2026-11-20T08:05Z")["total"] == 0
    for query in (f"Communication?patient={pid}", f"Communication?subject={pid}",
                  "Communication?status=completed", "Communication?category=alert",
                  "Communication?sent=2026-11", "Communication?_sort=sent"):
        assert ids(search(client, key, query)) == ["comm-1"], query
    assert search(client, key, "Communication?status=in-progress")["total"] == 0
    search(client, key, "Communication?date=2026", status=400)  # its date parameter is "sent"
