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
