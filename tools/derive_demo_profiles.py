"""Derive the demo provider's hour-of-week profiles from Electricity Maps data-portal exports.

    python tools/derive_demo_profiles.py ../shared/data/carbon-intensity > carbon_optimizer/data/providers/demo_profiles.json

Each zone's profile is the mean life-cycle intensity for each of the 168 hours of the week (UTC,
Monday 00:00 first) over every export given for that zone.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from carbon_optimizer.data.providers.csv_file import read_portal_csv  # noqa: E402


def main(directory: str) -> None:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    years: dict[str, set] = {}
    for path in sorted(Path(directory).glob("*.csv")):
        for zone, moment, value in read_portal_csv(path):
            if value is None:
                continue
            slot = moment.weekday() * 24 + moment.hour
            sums.setdefault(zone, np.zeros(168))[slot] += value
            counts.setdefault(zone, np.zeros(168))[slot] += 1
            years.setdefault(zone, set()).add(moment.year)
    profiles = {zone: [round(float(v), 1) for v in sums[zone] / np.maximum(counts[zone], 1)]
                for zone in sorted(sums)}
    header = {
        "attribution": "Electricity Maps (electricitymaps.com), ODbL",
        "description": "Mean life-cycle carbon intensity (gCO2eq/kWh) per UTC hour of week, "
                       "Monday 00:00 first, from Electricity Maps data-portal hourly exports.",
        "years": {zone: sorted(years[zone]) for zone in sorted(years)},
    }
    lines = [f"  {json.dumps(zone)}: {json.dumps(values)}" for zone, values in profiles.items()]
    body = json.dumps(header, indent=1)[:-2]  # reopen the object to add one line per profile
    sys.stdout.write(body + ',\n "profiles": {\n' + ",\n".join(lines) + "\n }\n}\n")


if __name__ == "__main__":
    main(sys.argv[1])
