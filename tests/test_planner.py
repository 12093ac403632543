"""The planner's failure choice when no zone has data: passing if any zone's failure is passing."""

import pytest

from carbon_optimizer.errors import FailureCode
from carbon_optimizer.scheduling.model import Job, Unschedulable, ZoneFailure
from carbon_optimizer.scheduling.planner import plan

ENTITLED = ZoneFailure("XA", FailureCode.ZONE_NOT_ENTITLED, "XA is not on the plan")
DOWN = ZoneFailure("XB", FailureCode.UPSTREAM_UNAVAILABLE, "XB could not be reached")
MISSING = ZoneFailure("XC", FailureCode.ZONE_NOT_FOUND, "XC is unknown")


@pytest.mark.parametrize("zones", [("XA", "XB"), ("XB", "XA")])
def test_a_passing_failure_in_any_zone_makes_the_job_retryable_whatever_the_order(zones):
    job = Job(duration=3600, zones=zones, earliest_start=1_800_000_017, latest_start=1_800_003_617)
    outcome = plan(job, {"XA": ENTITLED, "XB": DOWN}, now=1_800_000_017)
    assert isinstance(outcome, Unschedulable)
    assert outcome.code is FailureCode.UPSTREAM_UNAVAILABLE and outcome.code.status == 503
    assert {f.zone for f in outcome.unavailable} == {"XA", "XB"}


def test_only_final_failures_make_a_final_answer_named_by_the_first_zone():
    job = Job(duration=3600, zones=("XC", "XA"), earliest_start=0, latest_start=60)
    outcome = plan(job, {"XA": ENTITLED, "XC": MISSING}, now=0)
    assert outcome.code is FailureCode.ZONE_NOT_FOUND and not outcome.code.transient
    assert outcome.message == "XC is unknown; XA is not on the plan"
