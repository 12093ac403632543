"""Estimating a zone's intensity past its forecast from its own recent data: a few candidate
estimators, a replay of each from earlier origins inside what is known (each origin seeing only what
lay before it), the choice among them by that replay, and the calibrated error it gives.

Pure functions, no I/O, no clock. `known` is a zone's recent history followed by its forecast, one
equally spaced series starting at `first_epoch`. Nothing here is fitted on anything but `known`.

The error a run's mean may have is stated as a conformal quantile: the replay gives, per origin, the
signed error (truth - estimate) of the mean over the same leads as the run; the stated error at
coverage q is the ceil((n + 1) q)-th smallest of those n errors (one-sided: the risk is the truth
being dirtier than estimated). Origins are exchangeable only roughly (weather has memory), so the
coverage is a target, which the backtest measures (docs/backtest.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

DAY = 86400
HOUR = 3600
WEEK = 7 * DAY
LEVEL_DAYS = 2.0
# The daily profile estimator averages each slot of the day over this many recent days.
PROFILE_DAYS = 7
# An origin for measuring the error needs this much before it (to have a profile at all) ...
MIN_TRAINING_DAYS = 2
# ... and origins are taken every this many hours (errors of nearby origins are nearly the same),
ORIGIN_EVERY_HOURS = 6
# ... the latest this many of them: the replay's work and memory stay bounded however long the
# history (48 origins every 6 h: the last 12 days), and the oldest say least about today.
MAX_ORIGINS = 48
# With little history, origins are taken closer (down to one a step) so that there are at least
# this many: a quantile at 0.9 needs 9, at 0.95 19 (neighbours are alike, but not the same).
MIN_ORIGINS = 24

Estimator = Callable[[np.ndarray, int, int, int], np.ndarray]


def slots(epochs: np.ndarray, step: int) -> np.ndarray:
    """The point's slot in its UTC day (0 .. points per day - 1)."""
    per_day = max(1, DAY // step)
    return (np.asarray(epochs) % DAY) // step % per_day


def estimate_after(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """The blend: `count` estimates following `known`: persistence of the last day (it carries the
    current weather and demand) blended with the zone's hour-of-day profile over everything known,
    scaled to a level that moves from the last day's mean towards the mean of everything known.
    The weight on persistence decays over a day, the weight on the last day's level over LEVEL_DAYS
    (constants chosen by design, not fitted to any replayed year)."""
    known = np.asarray(known, dtype=np.float64)
    per_day = max(1, DAY // step)
    ahead = np.arange(count)
    tail = known[-per_day:]
    tail = tail[np.arange(per_day) % len(tail)] if len(tail) < per_day else tail
    persistence = tail[ahead % per_day]
    known_slots = slots(first_epoch + step * np.arange(len(known)), step)
    sums = np.bincount(known_slots, weights=known, minlength=per_day)
    counts = np.bincount(known_slots, minlength=per_day)
    overall = float(np.mean(known))
    if overall <= 0:
        return persistence
    profile = np.where(counts > 0, sums / np.maximum(counts, 1), overall) / overall  # mean ~1
    end = first_epoch + step * len(known)
    future_shape = profile[slots(end + step * ahead, step)]
    tail_shape = float(np.mean(profile[slots(end - step * np.arange(per_day, 0, -1), step)]))
    last_level = float(np.mean(tail)) / tail_shape if tail_shape > 0 else overall
    fade = np.exp(-(ahead + 1) / (LEVEL_DAYS * per_day))
    level = fade * last_level + (1 - fade) * overall
    weight = np.exp(-(ahead + 1) / per_day)
    return weight * persistence + (1 - weight) * level * future_shape


def daily_profile(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """Each slot of the day at its mean over the last PROFILE_DAYS days: no weather, a steady day."""
    known = np.asarray(known, dtype=np.float64)
    per_day = max(1, DAY // step)
    recent = known[-PROFILE_DAYS * per_day:]
    start = first_epoch + step * (len(known) - len(recent))
    recent_slots = slots(start + step * np.arange(len(recent)), step)
    sums = np.bincount(recent_slots, weights=recent, minlength=per_day)
    counts = np.bincount(recent_slots, minlength=per_day)
    profile = np.where(counts > 0, sums / np.maximum(counts, 1), float(np.mean(recent)))
    end = first_epoch + step * len(known)
    return profile[slots(end + step * np.arange(count), step)]


def weekly_naive(known: np.ndarray, first_epoch: int, step: int, count: int) -> np.ndarray:
    """The value one week earlier (the last known week repeated): weekdays and weekends differ."""
    known = np.asarray(known, dtype=np.float64)
    per_week = max(1, WEEK // step)
    week = known[-per_week:]
    return week[np.arange(count) % len(week)]


@dataclass(frozen=True)
class Candidate:
    name: str
    estimate: Estimator
    min_known_days: int   # data needed to be a candidate at all
    min_origin_days: int  # data an origin of its replay needs before it


# In order of preference on a tie. The weekly one needs two weeks: one to repeat, one to measure.
CANDIDATES = (Candidate("blend", estimate_after, MIN_TRAINING_DAYS, MIN_TRAINING_DAYS),
              Candidate("daily_profile", daily_profile, MIN_TRAINING_DAYS, MIN_TRAINING_DAYS),
              Candidate("weekly_naive", weekly_naive, 14, 7))


def origins(length: int, step: int, min_days: float) -> np.ndarray:
    """Where the replay starts estimating: every ORIGIN_EVERY_HOURS (or closer, to have
    MIN_ORIGINS) after `min_days` of data, the latest MAX_ORIGINS of them."""
    per_day = max(1, DAY // step)
    first = int(min_days * per_day)
    every = max(1, min(ORIGIN_EVERY_HOURS * HOUR // step, (length - first) // MIN_ORIGINS))
    return np.arange(first, length, every)[-MAX_ORIGINS:]


def replay(estimate: Estimator, known: np.ndarray, first_epoch: int, step: int, count: int,
           at: np.ndarray) -> np.ndarray:
    """Signed errors (truth - estimate) of `estimate` from each origin in `at`, by lead (one row
    per origin, `count` leads); NaN past what an origin could see."""
    known = np.asarray(known, dtype=np.float64)
    signed = np.full((len(at), count), np.nan)
    for row, origin in enumerate(at.tolist()):
        reach = min(count, len(known) - origin)
        signed[row, :reach] = known[origin:origin + reach] - estimate(known[:origin], first_epoch,
                                                                      step, reach)
    return signed


def needed(coverage: float) -> int:
    """The fewest errors from which a quantile at `coverage` can be stated: ceil((n + 1) q) <= n."""
    return max(1, math.ceil(coverage / (1 - coverage) - 1e-9))


def conformal(errors: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) q)-th smallest of n errors; infinite when n is too few for `coverage`."""
    n = len(errors)
    rank = math.ceil((n + 1) * coverage - 1e-9)
    if rank > n or n == 0:
        return float("inf")
    return float(np.partition(errors, rank - 1)[rank - 1])


@dataclass(frozen=True)
class ErrorReplay:
    """What the chosen estimator's replay from earlier origins says about its errors."""
    signed: np.ndarray   # (origins, leads) truth - estimate, NaN past an origin's reach
    estimator: str = "blend"
    known: Optional[np.ndarray] = None    # the history and forecast replayed on ...
    origins: Optional[np.ndarray] = None  # ... and where in it each row's estimates start

    @property
    def known_points(self) -> int:
        return 0 if self.known is None else len(self.known)

    def reach(self) -> np.ndarray:
        """Leads each origin measured (a prefix of the leads)."""
        return np.isfinite(self.signed).sum(axis=1)

    def run_error(self, leads: np.ndarray, seconds: np.ndarray, total: float, coverage: float,
                  span: Optional[tuple[int, int]] = None, pieces: bool = False,
                  inside_points: int = 0, run_points: int = 0, strict: bool = False) -> float:
        """The stated error (gCO2eq/kWh, >= 0) of a run's mean whose estimated part spends
        `seconds[i]` at lead `leads[i]` (of `total` seconds in all): the conformal quantile at
        `coverage` of each origin's signed error of the mean of the same choice replayed there.

        The choice is replayed, not only its leads: a search picks the run whose estimates look
        lowest among those its window allows (leads `span`, [first, last + 1)), and an estimate
        picked for looking low is more often too low. So each origin picks, among its own
        estimates over the same span, the block of the same width with the lowest mean (for
        `pieces`: the same number of leads with the lowest estimates), and its error there counts.
        And only the origins where that choice would have been made count: where the replayed
        estimates beat what the origin's own last `inside_points` points offered (the analogue of
        the forecast): its best block of the same width, or for `pieces` the costliest `count` of
        the `run_points` cleanest (the hours of a run of that many points that the estimated
        hours would displace); `strict`: the cleanest `count` of them (the estimates beat the
        forecast's best hours: the origins where trusting them tempted most). A run is taken on estimates when
        they look better than the forecast, which is when they are more often wrong.
        Leads past what enough origins measured are taken from the furthest stretch that enough
        did (the span shifted back as a block: errors grow with the lead, so this is the nearest
        measured)."""
        if not len(leads) or total <= 0:
            return 0.0
        leads = np.asarray(leads, dtype=np.int64)
        seconds = np.asarray(seconds, dtype=np.float64)
        need = needed(coverage)
        reach = self.reach()
        ordered = np.sort(reach)[::-1]
        if len(ordered) < need or ordered[need - 1] <= 0:
            return float("inf")
        furthest = int(ordered[need - 1]) - 1   # the furthest lead at least `need` origins measured
        lo, hi = (int(leads.min()), int(leads.max()) + 1) if span is None else span
        lo, hi = min(lo, int(leads.min())), max(hi, int(leads.max()) + 1)
        shift = max(0, hi - 1 - furthest)
        lo, hi = max(0, lo - shift), hi - shift
        # Positions inside [lo, hi); a run wider than what enough origins measured folds onto its
        # first lead (its seconds there added up).
        at, fold = np.unique(np.maximum(leads - shift, lo) - lo, return_inverse=True)
        seconds = np.bincount(fold.ravel(), weights=seconds, minlength=len(at))
        rows = reach >= hi
        errors = self.signed[rows, lo:hi]
        if self.known is None or self.origins is None or hi - lo <= len(at):
            chosen = errors[:, at] @ seconds / total   # no choice to replay
            return max(0.0, conformal(chosen, coverage))
        origins = self.origins[rows]
        estimates = self.known[origins[:, None] + np.arange(lo, hi)[None, :]] - errors
        count = len(at)
        if pieces:  # the lowest estimated leads, the longest time on the lowest
            picked = np.argsort(estimates, axis=1, kind="stable")[:, :count]
            chosen = np.take_along_axis(errors, picked, axis=1) @ np.sort(seconds)[::-1] / total
            looked = np.take_along_axis(estimates, picked, axis=1).mean(axis=1)
        else:       # the block of the same width with the lowest mean estimate
            count = int(at.max() - at.min()) + 1
            sums = np.cumsum(np.pad(estimates, ((0, 0), (1, 0))), axis=1)
            picked = np.argmin(sums[:, count:] - sums[:, :-count], axis=1)
            row = np.arange(len(picked))
            looked = (sums[row, picked + count] - sums[row, picked]) / count
            error_sums = np.cumsum(np.pad(errors, ((0, 0), (1, 0))), axis=1)
            chosen = ((error_sums[row, picked + count] - error_sums[row, picked]) / count
                      * seconds.sum() / total)
        if inside_points >= count:
            chosen = chosen[looked < self._inside_best(origins, inside_points, count, pieces,
                                                       count if strict else max(count, run_points))]
        return max(0.0, conformal(chosen, coverage))

    def _inside_best(self, origins: np.ndarray, points: int, count: int, pieces: bool,
                     run_points: int) -> np.ndarray:
        """Per origin, what the `points` known just before it (the forecast's analogue) offered
        against `count` estimated points: the lowest mean of a block of `count`; for pieces, the
        mean of the costliest `count` of the cleanest `run_points` (those a run would give up)."""
        assert self.known is not None
        before = self.known[np.maximum(origins[:, None] - points + np.arange(points)[None, :], 0)]
        if pieces:
            kept = np.sort(before, axis=1)[:, :min(points, run_points)]
            return kept[:, -count:].mean(axis=1)
        sums = np.cumsum(np.pad(before, ((0, 0), (1, 0))), axis=1)
        return (sums[:, count:] - sums[:, :-count]).min(axis=1) / count


def choose(known: np.ndarray, first_epoch: int, step: int, count: int
           ) -> tuple[Candidate, Optional[np.ndarray], np.ndarray]:
    """The candidate with the least mean absolute error over its replay on the same origins (those
    every eligible candidate can be measured from), and its signed errors on them (None when
    nothing can be measured: too little known), and the origins."""
    per_day = max(1, DAY // step)
    eligible = [c for c in CANDIDATES if len(known) >= c.min_known_days * per_day] or [CANDIDATES[0]]
    at = origins(len(known), step, max(c.min_origin_days for c in eligible))
    if not len(at):
        return CANDIDATES[0], None, at
    best: Optional[tuple[float, Candidate, np.ndarray]] = None
    for candidate in eligible:
        signed = replay(candidate.estimate, known, first_epoch, step, count, at)
        score = float(np.nanmean(np.abs(signed)))
        if best is None or score < best[0]:
            best = (score, candidate, signed)
    assert best is not None
    return best[1], best[2], at
