"""Every resource the HL7v2 mapping produces from the corpus validates as FHIR R4 (R4B models).

fhir.resources ships R4B, not R4; the elements used here (Observation, Device, Patient and their
data types) are the same in both; DiagnosticReport's R4B additions (``composition``) are not used.
"""

from __future__ import annotations

import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from tests.hl7v2_fhir.conftest import Converter, corpus_files

MODELS = {"Observation": Observation, "Device": Device, "Patient": Patient,
          "DiagnosticReport": DiagnosticReport}


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_resources_validate(path, convert: Converter) -> None:
    result = convert(path.read_bytes())
    for resource in result.resources:
        MODELS[resource["resourceType"]].model_validate(resource)


def test_something_of_each_kind_was_validated(convert: Converter) -> None:
    seen: set[str] = set()
    for path in corpus_files():
        result = convert(path.read_bytes())
        for resource in result.resources:
            seen.add(resource["resourceType"])
            for key in resource:
                if key.startswith("value"):
                    seen.add(key)
    assert {"Observation", "Device", "Patient", "DiagnosticReport", "valueQuantity", "valueString",
            "valueCodeableConcept", "valueDateTime", "valueSampledData"} <= seen
