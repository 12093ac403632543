"""What only the tests share: the Redis databases they write to, and a brute-force reference.
The helpers that run things on loopback (Gunicorn, redis-server, the Electricity Maps stand-in)
are in devkit/, shared with bench/ and tools/."""

from __future__ import annotations

from datetime import datetime, timedelta

TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
LIMIT_REDIS = "redis://127.0.0.1:6379/13"  # rate-limit tests: a database of their own


def best_start(points: list[dict], minutes: int, earliest: datetime, latest: datetime):
    """Brute-force reference for one run: each forecast point (`GET /forecast` items) holds for its
    hour, one value per minute; every whole-minute start in [earliest, latest]; the least mean,
    earliest on ties. Returns (start, mean), or None when no run fits."""
    first = datetime.fromisoformat(points[0]["datetime"].replace("Z", "+00:00"))
    per_minute = [p["carbon_intensity"] for p in points for _ in range(60)]
    best = None
    for m in range(len(per_minute) - minutes + 1):
        start = first + timedelta(minutes=m)
        if earliest <= start <= latest:
            mean = sum(per_minute[m:m + minutes]) / minutes
            if best is None or round(mean, 6) < round(best[1], 6):
                best = (start, mean)
    return best


def plan_record(index: int = 0, **changes):
    """A ledger PlanRecord as the web layer builds one (a new plan id each call), made `index`
    seconds after a fixed instant; `changes` replace fields."""
    from dataclasses import replace

    from carbon_optimizer.ledger.records import PlanRecord, new_plan_id
    made = 1_795_000_000 + index
    record = PlanRecord(
        plan_id=new_plan_id(), created_at=made, client="ci-pipeline", workload_id=f"job-{index}",
        zone="DE", location="aws:eu-central-1", intervals=((made + 3600, made + 5400),
                                                            (made + 9000, made + 9930)),
        earliest_start=made, latest_end=made + 86_400, duration=2730, interruptible=True,
        power_kw=2.5, energy_kwh=None, mean_intensity=312.25, baseline_zone="DE",
        baseline_start=made, baseline_mean_intensity=401.5, emissions_grams=591.95,
        baseline_emissions_grams=761.18, provider="demo", signal="carbon_intensity",
        units="gCO2eq/kWh", estimated=False)
    return replace(record, **changes)
