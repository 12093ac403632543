"""A NESO Carbon Intensity API stand-in on loopback, and the bodies it serves: the national and
regional forecasts and ranges and the postcode lookup, in NESO's wire format (its API docs, and
the live API's shapes where they differ: see carbon_optimizer/data/providers/neso.py)."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from typing import Optional, Sequence

from carbon_optimizer.data.providers.neso import REGIONS
from devkit.loopback_http import JsonHandler

HALF_HOUR = timedelta(minutes=30)

# NESO's five bands (its docs name them; the cut-offs vary by year, so these are only plausible).
_BANDS = ((40, "very low"), (120, "low"), (200, "moderate"), (290, "high"))

# The DNO names NESO's answers carry beside the short names (its region list).
DNO_REGIONS = {
    1: "Scottish Hydro Electric Power Distribution", 2: "SP Distribution",
    3: "Electricity North West", 4: "NPG North East", 5: "NPG Yorkshire", 6: "SP Manweb",
    7: "WPD South Wales", 8: "WPD West Midlands", 9: "WPD East Midlands", 10: "UKPN East",
    11: "WPD South West", 12: "SSE South", 13: "UKPN London", 14: "UKPN South East",
    15: "England", 16: "Scotland", 17: "Wales",
}


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def index(value: Optional[float]) -> Optional[str]:
    if value is None:
        return None
    return next((name for limit, name in _BANDS if value < limit), "very high")


def half_hours(start: datetime, count: int) -> list[tuple[str, str]]:
    return [(stamp(start + i * HALF_HOUR), stamp(start + (i + 1) * HALF_HOUR)) for i in range(count)]


def national_body(start: datetime, forecast: Sequence[Optional[float]],
                  actual: Optional[Sequence[Optional[float]]] = None) -> dict:
    """An /intensity answer: one row a half hour from `start` (actual null when not given)."""
    return {"data": [
        {"from": a, "to": b, "intensity": {
            "forecast": f, "actual": actual[i] if actual is not None else None, "index": index(f)}}
        for i, ((a, b), f) in enumerate(zip(half_hours(start, len(forecast)), forecast))]}


def _region(region: int) -> dict:
    return {"regionid": region, "dnoregion": DNO_REGIONS[region], "shortname": REGIONS[region]}


def _regional_rows(start: datetime, forecast: Sequence[Optional[float]]) -> list[dict]:
    return [{"from": a, "to": b, "intensity": {"forecast": f, "index": index(f)},
             "generationmix": [{"fuel": "gas", "perc": 40.0}, {"fuel": "wind", "perc": 60.0}]}
            for (a, b), f in zip(half_hours(start, len(forecast)), forecast)]


def regional_body(region: int, start: datetime, forecast: Sequence[Optional[float]],
                  documented: bool = False) -> dict:
    """A /regional/intensity/.../regionid/{id} answer: the region as `data` (as the live API
    answers), or inside a one-item list (`documented`, as NESO's docs show it)."""
    one = {**_region(region), "data": _regional_rows(start, forecast)}
    return {"data": [one] if documented else one}


def postcode_body(outward: str, region: int, at: datetime, documented: bool = True,
                  regionid: Optional[int] = None) -> dict:
    """A /regional/postcode/{outward} answer for the current half hour: inside a one-item list as
    the docs show it, or as an object (`documented=False`); `regionid` overrides the id sent
    beside the short name (the live API has sent one off by one: api-definitions issue #8)."""
    one = {**_region(region), "postcode": outward, "data": _regional_rows(at, [150])}
    if regionid is not None:
        one["regionid"] = regionid
    return {"data": [one] if documented else one}


def error_body(status: str, message: str) -> dict:
    """NESO's error answer, e.g. ("400 Bad Request", "No postcode match can be found.")."""
    return {"error": {"code": status, "message": message}}


class NesoStandIn:
    """A local HTTP server answering NESO's forecast, range and postcode paths.

    `national` and `regional[id]` are the half-hourly values served from the half hour ending at
    {from} on (as NESO does); `postcodes[outward]` is a region id; `delay` (seconds) holds every
    answer (`release()` ends it); `status` overrides every answer's status (e.g. 503); `calls`
    lists the paths asked.
    """

    def __init__(self, national: Sequence[float] = (), regional: Optional[dict[int, Sequence[float]]] = None,
                 postcodes: Optional[dict[str, int]] = None, delay: float = 0.0):
        self.national = list(national)
        self.regional = dict(regional or {})
        self.postcodes = dict(postcodes or {})
        self.delay = delay
        self.status: Optional[int] = None
        self.calls: list[str] = []
        self._released = threading.Event()
        stand_in = self

        class Handler(JsonHandler):
            def do_GET(self):
                stand_in.calls.append(self.path)
                if stand_in.delay:
                    stand_in._released.wait(stand_in.delay)
                status, body = stand_in.answer(self.path)
                self.send_json(stand_in.status or status, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    _FORWARD = re.compile(r"^/(regional/)?intensity/([^/]+)/fw(24|48)h(?:/regionid/(\d+))?$")
    _POSTCODE = re.compile(r"^/regional/postcode/([A-Za-z0-9]+)$")

    def answer(self, path: str) -> tuple[int, object]:
        if match := self._POSTCODE.match(path):
            region = self.postcodes.get(match.group(1).upper())
            if region is None:
                return 400, error_body("400 Bad Request", "No postcode match can be found.")
            return 200, postcode_body(match.group(1).upper(), region, datetime.now(timezone.utc))
        match = self._FORWARD.match(path)
        if not match:
            return 404, error_body("404 Not Found", "Requested resource not found.")
        start = datetime.fromisoformat(match.group(2).replace("Z", "+00:00")) - HALF_HOUR
        if match.group(1) is None:
            return 200, national_body(start, self.national)
        region = int(match.group(4) or 0)
        if region not in self.regional:
            return 400, error_body("400 Bad Request", "Region ID not found.")
        return 200, regional_body(region, start, self.regional[region])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def release(self) -> None:
        """Answer every held request now, and every later one at once."""
        self._released.set()

    def __enter__(self) -> "NesoStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
