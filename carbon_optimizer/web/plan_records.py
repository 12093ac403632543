"""An optimize answer's plans, as the ledger keeps them: a plan id per scheduled workload (the
answer carries it) and one PlanRecord each, made from the Schedule the answer was made from.

Cheap on purpose (issue 29: at most 0.1 ms of a request's CPU): each record copies values the
Schedule already holds (no pass over any series, no rounding, no formatting); the ledger does the
rest off the request's path.
"""

from __future__ import annotations

from typing import Optional, Sequence

from carbon_optimizer.ledger.records import PlanRecord, bounded, new_plan_id
from carbon_optimizer.scheduling.model import Outcome, Schedule
from carbon_optimizer.timeseries import to_epoch
from carbon_optimizer.web.request_jobs import JobsAsked


def plan_ids(outcomes: Sequence[Outcome]) -> list[Optional[str]]:
    """A new plan id per scheduled workload, in order; None where a workload is unschedulable."""
    return [new_plan_id() if isinstance(outcome, Schedule) else None for outcome in outcomes]


def plan_records(outcomes: Sequence[Outcome], ids: Sequence[Optional[str]], asked: JobsAsked,
                 client: Optional[str]) -> list[PlanRecord]:
    """One record per scheduled workload of the answer, in order. `client`: the API key's name
    (never the key); None on an open API. Values are kept as the scheduler computed them (the
    answer rounds them for display)."""
    created = to_epoch(asked.now)
    client = bounded(client)
    replans = asked.replan_of or (None,) * len(outcomes)
    records = []
    for outcome, plan_id, where, replan_of in zip(outcomes, ids, asked.locations, replans):
        if plan_id is None or not isinstance(outcome, Schedule):
            continue
        job, baseline, source = outcome.job, outcome.baseline, outcome.source
        records.append(PlanRecord(
            plan_id=plan_id, created_at=created, client=client, workload_id=bounded(job.id),
            zone=outcome.zone, location=bounded(where.get(outcome.zone, outcome.zone)),
            intervals=outcome.intervals, earliest_start=job.earliest_start,
            latest_end=job.latest_end, duration=job.duration, interruptible=job.interruptible,
            power_kw=job.power_kw, energy_kwh=job.energy_kwh,
            mean_intensity=outcome.mean_intensity,
            baseline_zone=None if baseline is None else baseline.zone,
            baseline_start=None if baseline is None else baseline.start,
            baseline_mean_intensity=None if baseline is None else baseline.mean_intensity,
            emissions_grams=outcome.emissions_grams,
            baseline_emissions_grams=outcome.baseline_emissions_grams,
            provider=source.forecast.provider, signal=source.signal, units=source.units,
            estimated=outcome.coverage.estimated, replan_of=replan_of))
    return records
