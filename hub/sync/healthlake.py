"""AWS HealthLake as a destination: the FHIR REST sender with HealthLake's rules.

* Endpoint ``https://healthlake.{region}.amazonaws.com/datastore/{datastoreId}/r4/``, SigV4
  signed by botocore (service ``healthlake``) with botocore's credential chain.
* Writes are ``PUT`` to the deterministic id (HealthLake creates on an unknown id), in Bundles.
* Every POST (the Bundle itself) carries ``x-amz-fhir-idempotency-key``, the same for the same
  set of resource versions, so a re-sent Bundle whose first answer was lost gets 409 with the
  original instead of a second application; that 409 counts as delivered.
* Limits as profiles (AWS quotas page, stored copy; re-check in the Service Quotas console):
  ``legacy`` 160 entries per Bundle and 10 Bundles/s per data store; ``current`` 500 entries and
  3,000 writes/s, paced at 95 % of those rates. A transaction costs twice a batch. Values set
  in the file win.
* ``ThrottlingException`` (as 429, or 400 with that error type) slows the destination down.
"""

from __future__ import annotations

import httpx

from hub.sync.config import HealthLakeDestination, Limits
from hub.sync.fhir_rest import FhirRestSender, Write, idempotency_key
from hub.sync.policy import OK, Attempt

IDEMPOTENCY_HEADER = "x-amz-fhir-idempotency-key"

# Paced at 95 % of the published rate: the quota is counted on arrival, and request timing jitter
# (a Bundle built a little later than its tokens were taken) would otherwise spend the last few
# percent on ThrottlingExceptions. bench/sync.py measures the share of the quota actually used.
PACE = 0.95
TIERS: dict[str, dict[str, float | int]] = {
    "legacy": {"bundle_size": 160, "requests_per_sec": 10 * PACE, "transaction_cost": 2},
    "current": {"bundle_size": 500, "entries_per_sec": 3000 * PACE, "transaction_cost": 2},
}


def tier_limits(dest: HealthLakeDestination) -> Limits:
    """The tier's limits, overridden by whatever the destinations file sets explicitly."""
    explicit = dest.limits.model_dump(exclude_unset=True)
    return dest.limits.model_copy(update={**TIERS[dest.tier], **explicit})


class HealthLakeSender(FhirRestSender):
    kind = "healthlake"

    def __init__(self, dest: HealthLakeDestination, **kwargs: object) -> None:
        super().__init__(dest, tier_limits(dest), **kwargs)  # type: ignore[arg-type]
        self.tier = dest.tier

    def extra_headers(self, method: str, body: bytes, writes: list[Write]) -> dict[str, str]:
        return {IDEMPOTENCY_HEADER: idempotency_key(writes)} if method == "POST" else {}

    def throttled(self, response: httpx.Response) -> bool:
        if response.status_code == 429:
            return True
        if response.status_code != 400:
            return False
        kind = response.headers.get("x-amzn-ErrorType", "")
        return kind.startswith("ThrottlingException") or b"ThrottlingException" in \
            response.content[:512]

    def attempt_from(self, answer: httpx.Response, verdict: object) -> Attempt:
        if answer.status_code == 409 and answer.request.headers.get(IDEMPOTENCY_HEADER):
            return OK  # the idempotency key matched: this very Bundle was applied before
        return super().attempt_from(answer, verdict)  # type: ignore[arg-type]
