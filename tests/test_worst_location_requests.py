"""A search for the costliest locations a request can name (issue 23, point 2).

Before any solving budget exists, every location a request names is resolved, and an unknown one
used to get close matches over every zone and region (~0.4 ms each): 500 workloads x 50 unknown
names took seconds of CPU and answered with megabytes. The documented bounds (DEPLOYMENT.md, "What
one request may cost"): at most 100 distinct locations a request (over it, a 400 naming the count), close
matches for the first 5 unknown names only, at most 20 error details and one saying how many more,
an error body under 32 KiB.

Hypothesis draws request shapes (batch size, names per workload, how many distinct names, the mix
of known zones, cloud regions in any case, near misses, random unknown strings, repeats) up to those
limits; each request runs in-process on the demo provider. Counted, not timed: how many close-match
searches and resolutions ran (the region table's own methods, wrapped), and the answer's size. The
reference for which names are known is the test's own: the demo's and the region table's files.
"""

from __future__ import annotations

import csv
import json
import random
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, example, given, settings, strategies as st, target

from carbon_optimizer.data.cloud_regions import RegionTable
from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)

# The documented limits, written out (not imported from the module under test).
MAX_DISTINCT = 100
MAX_SUGGESTED = 5
MAX_DETAILS = 20
MAX_ERROR_BYTES = 32 * 1024

with open(ROOT / "carbon_optimizer/data/providers/demo_zones.csv", newline="", encoding="utf-8") as f:
    ZONES = sorted({row["zone"] for row in csv.DictReader(f)} | {"ES", "US-CAL-CISO"})
with open(ROOT / "carbon_optimizer/data/cloud_regions.csv", newline="", encoding="utf-8") as f:
    REGIONS = sorted(f"{row['provider']}:{row['region']}" for row in csv.DictReader(f))
LOWER_REGIONS = {r.lower() for r in REGIONS}


def known(name: str) -> bool:
    """The test's reference: a demo zone key (exact case), or a table region (any case)."""
    return name in ZONES or name.lower() in LOWER_REGIONS


env = {"RATE_LIMIT_ENABLED": "false", "CARBON_PROVIDER": "demo"}
client = create_app(settings=load_settings(env), secret_store=SecretStore(env),
                    clock=lambda: NOW).test_client()


@dataclass(frozen=True)
class Shape:
    workloads: int       # 1: a single workload (not a batch)
    per_workload: int    # names in each workload's zones (distinct within it, as required)
    pool: int            # distinct names the batch draws from
    mix: tuple[int, int, int, int]  # weights: known zones, regions in any case, near misses, random
    seed: int


def near_miss(rng: random.Random) -> str:
    zone, region = rng.choice(ZONES), rng.choice(REGIONS)
    provider, _, bare = region.partition(":")
    return rng.choice([
        zone.lower() if zone.lower() != zone else zone + "X",  # a zone key in the wrong case
        bare,                                                   # a region without its provider
        ("gcp" if provider != "gcp" else "aws") + ":" + bare,   # under the wrong provider
        region[:-1] + rng.choice("0123456789xyz"),              # a typo
    ])


def random_name(rng: random.Random) -> str:
    first = rng.choice(string.ascii_letters + string.digits)
    rest = "".join(rng.choice(string.ascii_letters + string.digits + ":._-")
                   for _ in range(rng.randint(0, 63)))
    return first + rest


def request_body(shape: Shape) -> dict:
    rng = random.Random(shape.seed)
    makers = [lambda: rng.choice(ZONES),
              lambda: "".join(c.upper() if rng.random() < 0.5 else c for c in rng.choice(REGIONS)),
              lambda: near_miss(rng), lambda: random_name(rng)]
    pool: list[str] = []
    while len(pool) < max(shape.pool, shape.per_workload):
        name = rng.choices(makers, weights=shape.mix)[0]()
        if name not in pool:
            pool.append(name)
    # Odd-minute durations, windows starting at arbitrary seconds: off every grid.
    workloads = [{"duration": rng.choice([1, 7, 61, 119]), "zones": rng.sample(pool, shape.per_workload),
                  "earliest_start": f"2026-11-23T1{rng.randint(1, 3)}:{rng.randint(10, 59)}:{rng.randint(1, 59):02d}Z",
                  "max_delay": "PT2H13M"} for _ in range(shape.workloads)]
    return workloads[0] if shape.workloads == 1 else {"workloads": workloads}


@st.composite
def shapes(draw) -> Shape:
    workloads = draw(st.integers(1, 500))
    per_workload = draw(st.integers(1, 50))
    return Shape(workloads, per_workload, draw(st.integers(per_workload, MAX_DISTINCT + 30)),
                 (draw(st.integers(0, 5)), draw(st.integers(0, 5)), draw(st.integers(0, 5)),
                  draw(st.integers(1, 5))),
                 draw(st.integers(0, 2 ** 16)))


def counting(method, calls: list):
    def counted(self, *args, **kwargs):
        calls.append(args[0])
        return method(self, *args, **kwargs)
    return counted


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(shapes())
# The shape: 500 workloads x 50 unknown names, all distinct (~800 KB answered 4-15 MB).
@example(Shape(500, 50, 25_000, (0, 0, 0, 1), 1))
# The worst under the cap: every workload names 50 of 100 unknown names, close misses included.
@example(Shape(500, 50, MAX_DISTINCT, (0, 0, 1, 1), 2))
# Known names only, at the cap: answered, and not one close-match search.
@example(Shape(500, 50, MAX_DISTINCT, (1, 1, 0, 0), 3))
# A small request with a few typos: every one gets its close matches, as before.
@example(Shape(1, 5, 5, (0, 0, 1, 0), 4))
def test_locations_cost_at_most_the_documented_bounds(shape: Shape):
    body = request_body(shape)
    workloads = [body] if shape.workloads == 1 else body["workloads"]
    names = [name for w in workloads for name in w["zones"]]
    distinct = set(names)
    unknown_fields = sum(not known(name) for name in names)

    suggested: list[str] = []
    resolved: list[str] = []
    with mock.patch.object(RegionTable, "suggest", counting(RegionTable.suggest, suggested)), \
            mock.patch.object(RegionTable, "resolve", counting(RegionTable.resolve, resolved)):
        answer = client.post("/api/v1/optimize", data=json.dumps(body), content_type="application/json")
    target(float(len(suggested)), label="close-match searches")
    target(float(len(resolved)), label="resolutions")

    # The work: each distinct name resolved at most once, close matches for the first few only.
    assert len(suggested) <= MAX_SUGGESTED, (shape, len(suggested))
    assert len(resolved) <= min(len(distinct), MAX_DISTINCT), (shape, len(resolved))

    if len(distinct) > MAX_DISTINCT:
        assert answer.status_code == 400, shape
        [detail] = answer.get_json()["error"]["details"]
        assert detail["field"] == ("zones" if shape.workloads == 1 else "workloads[*].zones")
        assert f"got {len(distinct)}" in detail["message"] and str(MAX_DISTINCT) in detail["message"]
        assert not resolved  # refused before resolving any
        return
    if not unknown_fields:
        assert answer.status_code == 200, (shape, answer.get_json())
        return

    assert answer.status_code == 400, shape
    target(float(len(answer.data)), label="error body bytes")
    assert len(answer.data) <= MAX_ERROR_BYTES, (shape, len(answer.data))
    error = answer.get_json()["error"]
    assert error["code"] == "zone_not_found"
    details = error["details"]
    listed = min(unknown_fields, MAX_DETAILS)
    assert len(details) == listed + (unknown_fields > MAX_DETAILS)
    if unknown_fields > MAX_DETAILS:
        assert f"and {unknown_fields - MAX_DETAILS} more" in details[-1]["message"]
    for detail in details[:listed]:
        workload, _, position = detail["field"].rpartition("zones[")
        index = int(workload.removeprefix("workloads[").rstrip("].") or 0)
        asked = workloads[index]["zones"][int(position.rstrip("]"))]
        assert not known(asked) and asked in detail["message"]
    # Close matches for at most the first few distinct unknown names; a small request keeps them all.
    with_suggestions = {d["message"].split(" ", 1)[0] for d in details if d.get("suggestions")}
    assert len(with_suggestions) <= MAX_SUGGESTED
    unknown_distinct = {name for name in distinct if not known(name)}
    if len(unknown_distinct) <= MAX_SUGGESTED:
        assert len(suggested) == len(unknown_distinct)
