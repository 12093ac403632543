"""One WattTime login shared by every worker: the bearer token, who may log in now, and the pause
a 429 asked for.

WattTime's /login answers a token that lives about 30 minutes, and allows an account 100 logins
in 5 minutes (3,000 calls in all); every worker of every machine shares that account. So:

- the token is kept in Redis with a TTL a few minutes short of its life, so it is replaced before
  it expires, and every worker uses the same one;
- one worker at a time logs in: it takes a lock (SET NX) that it holds for `login_interval`
  seconds and never releases early, so the whole deployment logs in at most that often, whatever
  fails; the others wait briefly and read the token it stored (or its failure, at once);
- a refused login (wrong username or password) is remembered for `refused_seconds`, in which no
  worker tries again;
- a 429's Retry-After is kept until it passes, and no worker calls WattTime before then.

With no Redis URL, or while Redis does not answer, the same happens inside the process.

Key names hold no secret (`{prefix}watttime:token`, `:login-lock`, `:login-refused`, `:paused`).
The token key's value is the token, with the username it was issued to, so a rotated account is
never handed the previous account's token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Optional

import redis

from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable

log = logging.getLogger(__name__)

# A WattTime token lives about 30 minutes (docs.watttime.org, "Login"); keep it 25.
TOKEN_SECONDS = 25 * 60

# The login lock's states: taken (a login under way), then done or failed until it expires.
_BUSY, _DONE, _FAILED = "busy", "done", "failed"


class _LocalStore:
    """Redis's few commands used here, inside one process: strings with expiries."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[str]:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[1] <= self._monotonic():
                self._items.pop(key, None)
                return None
            return found[0]

    def set(self, key: str, value: str, seconds: float, only_if_absent: bool = False) -> bool:
        with self._lock:
            found = self._items.get(key)
            if only_if_absent and found is not None and found[1] > self._monotonic():
                return False
            self._items[key] = (value, self._monotonic() + seconds)
            return True

    def replace(self, key: str, value: str) -> None:
        """A new value for a key that keeps its expiry (SET XX KEEPTTL)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items[key] = (value, found[1])

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


class _RedisStore:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                           decode_responses=True)

    def get(self, key: str) -> Optional[str]:
        return self.client.get(key)

    def set(self, key: str, value: str, seconds: float, only_if_absent: bool = False) -> bool:
        return bool(self.client.set(key, value, px=max(1, int(seconds * 1000)), nx=only_if_absent))

    def replace(self, key: str, value: str) -> None:
        self.client.set(key, value, xx=True, keepttl=True)

    def delete(self, key: str) -> None:
        self.client.delete(key)


class WattTimeTokens:
    """The shared login state of one WattTime account (see the module's docstring). `clock` is the
    wall clock (epoch seconds, for when a pause ends), `monotonic` times waits and the in-process
    store's expiries; both are attributes, so a test can move time instead of sleeping."""

    def __init__(self, redis_url: Optional[str] = None, key_prefix: str = "carbon-optimizer:",
                 token_seconds: float = TOKEN_SECONDS, login_interval: float = 20.0,
                 wait_seconds: float = 3.0, refused_seconds: float = 60.0, poll_seconds: float = 0.05,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock, self.monotonic, self._sleep = clock, monotonic, sleep
        self.token_seconds = token_seconds
        self.login_interval = login_interval
        self.wait_seconds = wait_seconds
        self.refused_seconds = refused_seconds
        self._poll = poll_seconds
        self._local = _LocalStore(lambda: self.monotonic())
        self._redis = _RedisStore(redis_url) if redis_url else None
        base = f"{key_prefix}watttime:"
        self.token_key, self.lock_key = base + "token", base + "login-lock"
        self.refused_key, self.paused_key = base + "login-refused", base + "paused"

    # -- the store: Redis, or this process when there is none or it fails ------------------------

    def _do(self, command: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self._redis is not None:
            try:
                return getattr(self._redis, command)(*args, **kwargs)
            except redis.RedisError as exc:
                log.warning("Redis unavailable for the WattTime login state; kept in this process",
                            extra={"reason": type(exc).__name__})
        return getattr(self._local, command)(*args, **kwargs)

    # -- the token ---------------------------------------------------------------------------------

    def current(self, user: str) -> Optional[str]:
        """The stored token of `user`, or None when there is none (never stored, expired, or
        issued to another username)."""
        raw = self._do("get", self.token_key)
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("user") != user or not record.get("token"):
            return None
        return str(record["token"])

    def obtain(self, user: str, login: Callable[[], str], stale: Optional[str] = None) -> str:
        """A token for `user` other than `stale` (one WattTime just refused): the stored one, or
        one from `login()` when this worker may log in now, or the one another worker's login
        stores within `wait_seconds`. Raises InvalidToken when logins are refused (or WattTime
        refused a token it issued moments ago), UpstreamUnavailable when no token comes in time."""
        deadline = self.monotonic() + self.wait_seconds
        while True:
            token = self.current(user)
            if token is not None and token != stale:
                return token
            refused = self._do("get", self.refused_key)
            if refused:
                raise InvalidToken("", f"WattTime refused the configured username and password at "
                                       f"{refused}; not logging in again before that is "
                                       f"{self.refused_seconds:g} s old")
            if self._do("set", self.lock_key, _BUSY, self.login_interval, only_if_absent=True):
                return self._login(user, login)
            state = self._do("get", self.lock_key)
            if state in (_DONE, _FAILED):
                # The last login ended, maybe since the token was read above: read it again.
                token = self.current(user)
                if token is not None and token != stale:
                    return token
                if state == _DONE and stale is not None:
                    raise InvalidToken("", "WattTime refused a token it issued moments ago")
                raise UpstreamUnavailable("", f"the last WattTime login failed; the next is allowed "
                                              f"within {self.login_interval:g} s of it")
            if self.monotonic() >= deadline:
                raise UpstreamUnavailable("", f"no WattTime token within {self.wait_seconds:g} s "
                                              f"(another worker is logging in)")
            self._sleep(self._poll)

    def _login(self, user: str, login: Callable[[], str]) -> str:
        """Log in, holding the lock: store the token, or note the failure for the others."""
        try:
            token = login()
        except InvalidToken:
            self._do("set", self.refused_key, _stamp(self.clock()), self.refused_seconds)
            self._do("replace", self.lock_key, _FAILED)
            raise
        except Exception:
            self._do("replace", self.lock_key, _FAILED)
            raise
        self._do("set", self.token_key, json.dumps({"user": user, "token": token}), self.token_seconds)
        self._do("replace", self.lock_key, _DONE)
        return token

    # -- the pause a 429 asks for ------------------------------------------------------------------

    def pause(self, seconds: float) -> float:
        """No call to WattTime for `seconds` from now, by any worker; returns when it ends."""
        until = self.clock() + seconds
        if seconds > 0:
            self._do("set", self.paused_key, repr(until), seconds)
        return until

    def paused_until(self) -> Optional[float]:
        """When the current pause ends (epoch seconds), or None when calls are allowed."""
        raw = self._do("get", self.paused_key)
        try:
            until = float(raw) if raw else None
        except ValueError:
            return None
        return until if until is not None and until > self.clock() else None


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


__all__ = ["TOKEN_SECONDS", "WattTimeTokens"]
