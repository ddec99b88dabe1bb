"""What the rules read of Observations crosses processes (hub.prepare_pool) unchanged."""

from __future__ import annotations

import pickle
from typing import Any

from hub.rules.readings import Sample, SamplesByPatient, samples_by_patient

from .conftest import PROGRAM, at


def heart_rate(rid: str, patient: str, minutes: float, status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": at(minutes),
            "valueQuantity": {"value": 70 + minutes, "unit": "/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}}


def test_samples_survive_pickling_per_patient_in_order() -> None:
    observations = [heart_rate("a", "p1", 2), heart_rate("b", "p2", 0),
                    heart_rate("c", "p1", 1, status="preliminary")]
    read = samples_by_patient(observations, PROGRAM)
    assert isinstance(read, SamplesByPatient)
    assert [s.ref for s in read["p1"]] == ["Observation/c", "Observation/a"]
    back = pickle.loads(pickle.dumps(read, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(back, SamplesByPatient)
    assert back == read
    assert all(type(s) is Sample for samples in back.values() for s in samples)
    assert [(s.patient, s.t, s.values, s.usable) for s in back["p1"]] == \
        [(s.patient, s.t, s.values, s.usable) for s in read["p1"]]
    assert [s.usable for s in back["p1"]] == [False, True]
