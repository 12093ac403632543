"""A WattTime stand-in on loopback: a local HTTP server speaking the API v3 wire format (/login with
HTTP Basic, then /v3/forecast, /v3/historical, /v3/my-access, /v3/region-from-loc with a Bearer
token), and the bodies it serves, which tests also hand to `responses`.

The shapes follow WattTime's documentation (docs.watttime.org, its v2-to-v3 transition guide):
values in lbs_co2_per_mwh on a 300 s grid, `data` and `meta` stanzas. Error bodies are not part of
the documented format; the client reads only the status of an error.
"""

from __future__ import annotations

import base64
import threading
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from typing import Iterable, Optional
from urllib.parse import parse_qs, urlparse

from devkit.loopback_http import JsonHandler


def _stamp(moment: datetime) -> str:
    """WattTime writes times as ISO 8601 with a +00:00 offset."""
    return moment.astimezone(timezone.utc).isoformat()


def forecast_body(region: str, start: datetime, values: Iterable[Optional[float]], *,
                  generated_at: Optional[datetime] = None, step_seconds: int = 300,
                  units: str = "lbs_co2_per_mwh", signal_type: str = "co2_moer") -> dict:
    """A /v3/forecast answer: `values` (lbs CO2/MWh) from `start`, one every `step_seconds`."""
    return {
        "data": [{"point_time": _stamp(start + timedelta(seconds=step_seconds * i)), "value": v}
                 for i, v in enumerate(values)],
        "meta": {"data_point_period_seconds": step_seconds, "region": region, "warnings": [],
                 "signal_type": signal_type, "model": {"date": "2024-10-01"}, "units": units,
                 "generated_at_period_seconds": 300, "generated_at": _stamp(generated_at or start)},
    }


def historical_body(region: str, start: datetime, values: Iterable[Optional[float]],
                    step_seconds: int = 300, units: str = "lbs_co2_per_mwh") -> dict:
    """A /v3/historical answer (its meta has no generated_at)."""
    body = forecast_body(region, start, values, step_seconds=step_seconds, units=units)
    for key in ("generated_at", "generated_at_period_seconds"):
        del body["meta"][key]
    return body


def my_access_body(regions: dict[str, tuple[str, ...]], signal_type: str = "co2_moer") -> dict:
    """A /v3/my-access answer: for each region, the endpoints the account may call for it."""
    return {"signal_types": [{"signal_type": signal_type, "regions": [
        {"region": region, "region_full_name": region.replace("_", " ").title(), "parent": region.split("_")[0],
         "data_point_period_seconds": 300,
         "endpoints": [{"endpoint": endpoint, "models": [
             {"model": "2024-10-01", "data_start": "2021-01-01", "train_start": "2021-01-01",
              "train_end": "2024-09-30", "type": "binned_regression"}]} for endpoint in endpoints]}
        for region, endpoints in regions.items()]}]}


def region_body(region: str, full_name: str, signal_type: str = "co2_moer") -> dict:
    """A /v3/region-from-loc answer."""
    return {"region": region, "region_full_name": full_name, "signal_type": signal_type}


class WattTimeStandIn:
    """A local HTTP server for one account (`username`, `password`).

    /login checks HTTP Basic and issues a new token each time (`login_delay` seconds late, so that
    concurrent workers really overlap); `logins` counts them. The /v3 endpoints need a token
    issued and not revoked (`revoke_tokens()`), else 401. `forecasts[region]` is the body served
    for a region in `entitled`; a region with a body but not entitled answers 403, an unknown one
    400. `calls` counts requests by endpoint; `auth_headers` keeps what each carried (for tests).
    """

    def __init__(self, username: str, password: str, login_delay: float = 0.0):
        self.username, self.password = username, password
        self.login_delay = login_delay
        self.forecasts: dict[str, dict] = {}
        self.entitled: set[str] = set()
        self.logins = 0
        self.calls: dict[str, int] = {}
        self._valid: set[str] = set()
        self._lock = threading.Lock()
        self._released = threading.Event()
        stand_in = self

        class Handler(JsonHandler):
            def do_GET(self):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                endpoint = url.path.strip("/")
                with stand_in._lock:
                    stand_in.calls[endpoint] = stand_in.calls.get(endpoint, 0) + 1
                try:
                    status, body = stand_in._answer(endpoint, query, self.headers.get("Authorization", ""))
                except Exception as exc:  # noqa: BLE001 - a stand-in bug is a 500, visible in tests
                    status, body = 500, {"error": type(exc).__name__}
                self.send_json(status, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, endpoint: str, query: dict, authorization: str) -> tuple[int, object]:
        if endpoint == "login":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if authorization != f"Basic {expected}":
                return 403, {"error": "invalid credentials"}
            if self.login_delay:
                self._released.wait(self.login_delay)
            with self._lock:
                self.logins += 1
                token = f"stand-in-token-{self.logins}"
                self._valid.add(token)
            return 200, {"token": token}
        with self._lock:
            valid = authorization.startswith("Bearer ") and authorization[7:] in self._valid
        if not valid:
            return 401, {"error": "invalid or expired token"}
        region = query.get("region", "")
        if endpoint == "v3/forecast":
            if region not in self.forecasts:
                return 400, {"error": f"unknown region {region}"}
            if region not in self.entitled:
                return 403, {"error": f"no access to region {region}"}
            return 200, self.forecasts[region]
        if endpoint == "v3/my-access":
            return 200, my_access_body({r: ("v3/forecast", "v3/historical") for r in sorted(self.entitled)})
        return 404, {"error": "not found"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def revoke_tokens(self) -> None:
        with self._lock:
            self._valid.clear()

    def __enter__(self) -> "WattTimeStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
