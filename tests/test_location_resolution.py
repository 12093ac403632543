"""CarbonEngine.resolve_locations: a request's locations resolved in one call, each distinct one
once against one reading of the provider's zone list, unknown ones kept (not raised) with close
matches for the first few only. The reference for which names are known is the test's own: the
region table's file and the demo provider's zones."""

from __future__ import annotations

import csv
from pathlib import Path

from carbon_optimizer.errors import UnknownLocation
from carbon_optimizer.web.app_state import app_state

ROOT = Path(__file__).resolve().parent.parent
with open(ROOT / "carbon_optimizer/data/cloud_regions.csv", newline="", encoding="utf-8") as f:
    REGION_ZONE = {f"{row['provider']}:{row['region']}": row["zone"] for row in csv.DictReader(f)}


def counted(monkeypatch, engine):
    calls = {"served": 0, "locate": []}
    served, locate = engine.source.served_zones, engine.regions.resolve

    def served_zones():
        calls["served"] += 1
        return served()

    def located(name, zones, suggest=True, *hooks):
        calls["locate"].append((name, suggest))
        return locate(name, zones, suggest, *hooks)
    monkeypatch.setattr(engine.source, "served_zones", served_zones)
    monkeypatch.setattr(engine.regions, "resolve", located)
    return calls


def test_each_distinct_location_is_resolved_once_and_unknown_ones_are_kept(make_app, monkeypatch):
    engine = app_state(make_app({"CARBON_PROVIDER": "demo"})).engine
    calls = counted(monkeypatch, engine)
    asked = ["DE", "aws:eu-west-1", "de", "DE", "XX", "aws:eu-west-9", "Q1", "de", "aws:eu-west-1", "Q2"]

    found = engine.resolve_locations(asked, suggested=2)

    assert found.zones == {"DE": "DE", "aws:eu-west-1": REGION_ZONE["aws:eu-west-1"]}
    assert list(found.unknown) == ["de", "XX", "aws:eu-west-9", "Q1", "Q2"]  # first seen first
    assert all(isinstance(exc, UnknownLocation) and exc.location == name
               for name, exc in found.unknown.items())
    assert calls["served"] == 1
    assert [name for name, _ in calls["locate"]] == list(dict.fromkeys(asked))
    # Close matches are searched for the first two unknown names only, and "de" gets its zone.
    suggested = [suggest for name, suggest in calls["locate"] if name in found.unknown]
    assert suggested == [True, True, False, False, False]
    assert "DE" in found.unknown["de"].suggestions
    assert not any(found.unknown[name].suggestions for name in ("aws:eu-west-9", "Q1", "Q2"))


def test_nothing_asked_resolves_nothing(make_app):
    engine = app_state(make_app({"CARBON_PROVIDER": "demo"})).engine
    found = engine.resolve_locations([], suggested=5)
    assert found.zones == {} and found.unknown == {}
