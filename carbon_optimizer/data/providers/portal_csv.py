"""Reading Electricity Maps data-portal CSV exports: one row per hour and zone."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from carbon_optimizer.timeseries import ForecastSeries, series_from_points

DATETIME_COLUMN = "Datetime (UTC)"
ZONE_COLUMN = "Zone Id"
# Electricity Maps' API answers with life-cycle intensities by default; the exports carry both.
INTENSITY_COLUMN = "Carbon Intensity gCO₂eq/kWh (LCA)"


def read_portal_csv(path: Path) -> Iterator[tuple[str, datetime, Optional[float]]]:
    """(zone, UTC time, intensity or None) for each row of one data-portal export."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {DATETIME_COLUMN, ZONE_COLUMN, INTENSITY_COLUMN} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path.name} is not a data-portal export: no column {sorted(missing)}")
        for row in reader:
            moment = datetime.fromisoformat(row[DATETIME_COLUMN]).replace(tzinfo=timezone.utc)
            text = (row[INTENSITY_COLUMN] or "").strip()
            yield row[ZONE_COLUMN], moment, float(text) if text else None


def load_directory(directory: Path) -> dict[str, ForecastSeries]:
    points: dict[str, list] = {}
    for path in sorted(directory.glob("*.csv")):
        for zone, moment, value in read_portal_csv(path):
            points.setdefault(zone, []).append((moment, value))
    return {zone: series_from_points(zone, "file", rows) for zone, rows in points.items()}
