"""Hour-of-week profiles that refine estimates past a forecast's horizon.

Today these come from the table the demo provider ships (derived from Electricity Maps data-portal
exports, ODbL), for the zones it covers. Loaded on first use, not at import.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

_TABLE = Path(__file__).parent / "providers" / "demo_profiles.json"


@lru_cache(maxsize=1)
def hour_of_week_profiles() -> Mapping[str, np.ndarray]:
    """168 values per zone, Monday 00:00 UTC first."""
    table = json.loads(_TABLE.read_text())["profiles"]
    return {zone: np.asarray(values, dtype=np.float64) for zone, values in table.items()}
