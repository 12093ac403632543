"""An Electricity Maps stand-in on loopback: a local HTTP server speaking its wire format under both
/v4 (the default base) and /v3, with faults (delays, hangs, trickled bodies) a caller turns on, and
the forecast bodies it serves."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlparse

from devkit.loopback_http import JsonHandler

# A /v3/zones answer as Electricity Maps sends it to a token (an object keyed by zone key), trimmed
# to the zones the tests need and a few more; the keys are Electricity Maps' own (its public
# electricitymaps-contrib config/zones names them).
ZONES_FIXTURE = Path(__file__).resolve().parent / "electricitymaps_zones.json"


def electricitymaps_zones() -> dict:
    return json.loads(ZONES_FIXTURE.read_text())


def hourly_forecast(zone: str, start: datetime, values: list[Optional[float]], step_minutes: int = 60,
                    updated_at: Optional[datetime] = None, emission_factor_type: Optional[str] = None,
                    v4: bool = False) -> dict:
    """A forecast body as Electricity Maps sends it; `v4` adds the answer's `temporalGranularity`
    (which the client does not read), `emission_factor_type` each point's `emissionFactorType`."""
    def stamp(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body: dict = {
        "zone": zone,
        "forecast": [{"carbonIntensity": v, "datetime": stamp(start + timedelta(minutes=step_minutes * i))}
                     for i, v in enumerate(values)],
        "updatedAt": stamp(updated_at or start),
    }
    if emission_factor_type:
        for point in body["forecast"]:
            point["emissionFactorType"] = emission_factor_type
    if v4:
        body["temporalGranularity"] = {5: "5_minutes", 15: "15_minutes"}.get(step_minutes, "hourly")
    return body


class ElectricityMapsStandIn:
    """A local HTTP server answering /v4 and /v3 carbon-intensity/{forecast,latest,history,...}
    per zone (any other version prefix is a 404, as upstream).

    `responses[zone]` is (status, body) served for that zone; `delay` slows every answer, so that
    concurrent requests really overlap (a delay of HANG is a hung provider); `trickle` (seconds)
    sends the body a byte at a time, that long apart; `release()` ends every delay and trickle at
    once (leaving the `with` block does too, so no hung answer outlives the test); `calls` counts requests by (endpoint, zone), `most_in_flight` the most answered at
    once, `versions` requests by API version. A lat/lon query resolves through `places`. `url` is the v4 base (the default), `url_v3` the v3
    one. zones answers `zone_list` (the recorded list unless a test replaces it).
    """

    def __init__(self, delay: float = 0.0, trickle: float = 0.0):
        self.delay = delay
        self.zone_delay: dict[str, float] = {}  # per zone, instead of `delay`
        self.trickle = trickle
        self.trickle_head = False  # with trickle: the head too, not only the body
        self.responses: dict[str, tuple[int, object]] = {}
        self.zone_list: tuple[int, object] = (200, electricitymaps_zones())
        # Coordinates (rounded to 2 decimals) -> the zone a lat/lon query resolves to; others 404.
        self.places: dict[tuple[float, float], str] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.versions: dict[str, int] = {}
        self.tokens_seen: set[str] = set()
        self.most_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        stand_in = self

        class Handler(JsonHandler):
            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                zone = query.get("zone", [""])[0]
                located = not zone and "lat" in query and "lon" in query
                if located:
                    # Asked by coordinates: answer for the zone there, as upstream resolves it.
                    try:
                        spot = (round(float(query["lat"][0]), 2), round(float(query["lon"][0]), 2))
                    except ValueError:
                        spot = None
                    zone = stand_in.places.get(spot, "") if spot else ""
                endpoint = url.path.rsplit("/", 1)[-1]
                version = url.path.lstrip("/").partition("/")[0]
                with stand_in._lock:
                    stand_in.calls[(endpoint, zone)] = stand_in.calls.get((endpoint, zone), 0) + 1
                    stand_in.versions[version] = stand_in.versions.get(version, 0) + 1
                    stand_in.tokens_seen.add(self.headers.get("auth-token", ""))
                    stand_in._in_flight += 1
                    stand_in.most_in_flight = max(stand_in.most_in_flight, stand_in._in_flight)
                try:
                    if version not in ("v3", "v4"):
                        self._send(404, {"status": "error", "message": f"no API version {version}"})
                        return
                    self._answer(zone, endpoint, located)
                except OSError:  # the client gave up (a deadline): nothing to answer
                    pass
                finally:
                    with stand_in._lock:
                        stand_in._in_flight -= 1

            def _send(self, status: int, body: object) -> None:
                self.send_json(status, body)

            def _answer(self, zone: str, endpoint: str, located: bool = False) -> None:
                pause = stand_in.zone_delay.get(zone, stand_in.delay)
                if pause:
                    stand_in._released.wait(pause)
                if endpoint == "zones":
                    status, body = stand_in.zone_list
                elif located and zone and endpoint == "latest":
                    status, body = 200, {"zone": zone, "carbonIntensity": 100.0,
                                         "datetime": "2026-11-23T10:00:00.000Z", "isEstimated": False}
                else:
                    status, body = stand_in.responses.get(
                        zone, (404, {"status": "error", "message": "zone not found"}))
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                if stand_in.trickle and stand_in.trickle_head:  # the head a byte at a time too
                    payload = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
                else:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not stand_in.trickle:
                        self.wfile.write(payload)
                        return
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    stand_in._released.wait(stand_in.trickle)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The v4 base, as ELECTRICITY_MAPS_BASE_URL defaults to."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v4"

    @property
    def url_v3(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v3"

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def release(self) -> None:
        """Answer every delayed request now, and every later one at once."""
        self._released.set()

    def upstream_calls(self, endpoint: str = "forecast", zone: Optional[str] = None) -> int:
        with self._lock:
            return sum(n for (e, z), n in self.calls.items() if e == endpoint and (zone is None or z == zone))

    def __enter__(self) -> "ElectricityMapsStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
