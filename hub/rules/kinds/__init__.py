"""Rule kinds by their YAML ``kind`` name."""

from __future__ import annotations

from hub.rules.kinds.base import Kind
from hub.rules.kinds.baseline import Baseline
from hub.rules.kinds.cgm import Cgm
from hub.rules.kinds.medication import Medication
from hub.rules.kinds.news2 import News2
from hub.rules.kinds.threshold import Threshold
from hub.rules.kinds.wear import DaysWithData, Silence
from hub.rules.kinds.weight import WeightGain

KINDS: dict[str, Kind] = {
    "threshold": Threshold(),
    "weight-gain": WeightGain(),
    "baseline": Baseline(),
    "silence": Silence(),
    "days-with-data": DaysWithData(),
    "cgm-summary": Cgm(),
    "news2": News2(),
    "medication-adherence": Medication(),
}
