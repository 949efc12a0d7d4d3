"""Triggering a DAG run through the Airflow 3 REST API, with a cached JWT, retries and clear errors."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .oci_access import Credentials

log = logging.getLogger("vdimport.function.airflow")

TOKEN_MARGIN_SECONDS = 60.0  # renew a token this long before it expires
DEFAULT_TOKEN_SECONDS = 600.0  # if a token carries no readable exp claim


class AirflowError(RuntimeError):
    """Triggering failed; the message says why (never a credential or token)."""


class AirflowUnavailable(AirflowError):
    """Connection errors or 5xx answers, still after every retry."""


class AirflowAuthError(AirflowError):
    """401/403: wrong credentials, or the user may not trigger the DAG."""


class AirflowNotFound(AirflowError):
    """404: no such DAG (not deployed, not parsed yet, or a wrong URL)."""


@dataclass(frozen=True)
class TriggerResult:
    dag_run_id: str
    created: bool  # False: the run existed already (409), e.g. a duplicated event
    state: str | None


@dataclass
class _Reply:
    status: int
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except json.JSONDecodeError:
            return None

    def detail(self) -> str:
        data = self.json()
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])[:300]
        return self.body[:300]


def token_expiry(token: str, now: float) -> float:
    """When a JWT expires (its ``exp`` claim, read without verifying: Airflow verifies it), as ``time.time()``."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return now + DEFAULT_TOKEN_SECONDS


# One token per (Airflow URL, user) for the whole container: a warm function reuses it.
# Keyed by the password's digest too: after a rotation the old login's token is not reused.
_TOKENS: dict[tuple[str, str, str], tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()


def clear_token_cache() -> None:
    with _TOKENS_LOCK:
        _TOKENS.clear()


class AirflowClient:
    def __init__(
        self,
        url: str,
        credentials: Callable[[bool], Credentials],
        retries: int = 5,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url.rstrip("/")
        self._credentials = credentials
        self.retries = max(1, retries)
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._sleep = sleep

    # --- HTTP with retries -------------------------------------------------------------
    def _send(
        self, method: str, path: str, body: Any, token: str | None, attempts: int | None = None, timeout_seconds: float | None = None
    ) -> _Reply:
        """One request, retried with exponential back-off on connection errors and 5xx.

        ``attempts`` and ``timeout_seconds`` override the client's ``retries`` and ``timeout_seconds``
        for this call only (the preflight probe answers sooner than a trigger gives up). A GET, or
        a ``body`` of None, sends no body.
        """
        attempts = max(1, attempts) if attempts is not None else self.retries
        timeout = timeout_seconds if timeout_seconds is not None else self.timeout_seconds
        data = None if method == "GET" or body is None else json.dumps(body).encode()
        last = ""
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - configured http(s) URL, validated
            if data is not None:
                request.add_header("content-type", "application/json")
            request.add_header("accept", "application/json")
            if token:
                request.add_header("authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - validated http(s) URL
                    return _Reply(response.status, response.read().decode(errors="replace"))
            except urllib.error.HTTPError as exc:
                reply = _Reply(exc.code, exc.read().decode(errors="replace"))
                if exc.code < 500:
                    return reply
                last = f"HTTP {exc.code}: {reply.detail()}"
            except (urllib.error.URLError, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                last = f"{type(reason).__name__}: {reason}"
            if attempt < attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "%s %s%s failed (attempt %d of %d): %s; retrying in %.1f s", method, self.url, path, attempt, attempts, last, delay
                )
                self._sleep(delay)
        raise AirflowUnavailable(f"Airflow at {self.url} is unavailable: {method} {path} failed {attempts} times, last: {last}")

    # --- auth --------------------------------------------------------------------------
    def _login(self, refresh_secret: bool, attempts: int | None = None, timeout_seconds: float | None = None) -> tuple[str, str]:
        creds = self._credentials(refresh_secret)
        reply = self._send("POST", "/auth/token", {"username": creds.username, "password": creds.password}, None, attempts, timeout_seconds)
        if reply.status in (401, 403) and not refresh_secret:
            return self._login(True, attempts, timeout_seconds)  # the secret may have been rotated since it was cached: read it again, once
        if reply.status in (401, 403):
            raise AirflowAuthError(
                f"Airflow at {self.url} refused the login of user {creds.username!r} (HTTP {reply.status}): "
                "check the username and password in the Airflow credentials secret"
            )
        if reply.status == 404:
            raise AirflowNotFound(f"Airflow at {self.url} has no /auth/token (HTTP 404): is VDIMPORT_AIRFLOW_URL an Airflow 3 API server?")
        data = reply.json()
        if reply.status not in (200, 201) or not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise AirflowError(f"POST {self.url}/auth/token answered HTTP {reply.status} without an access_token")
        token = data["access_token"]
        expires = token_expiry(token, time.time())
        with _TOKENS_LOCK:
            _TOKENS[self._cache_key(creds)] = (token, expires)
        log.info(
            "logged in to Airflow at %s as %s (token valid until %s)",
            self.url,
            creds.username,
            time.strftime("%H:%M:%S", time.gmtime(expires)),
        )
        return creds.username, token

    def _cache_key(self, creds: Credentials) -> tuple[str, str, str]:
        return self.url, creds.username, hashlib.sha256(creds.password.encode()).hexdigest()

    def _cached_token(self) -> tuple[str, str] | None:
        """(user, token) of a cached token still valid beyond the renewal margin, else None."""
        creds = self._credentials(False)
        with _TOKENS_LOCK:
            cached = _TOKENS.get(self._cache_key(creds))
        if cached and cached[1] - TOKEN_MARGIN_SECONDS > time.time():
            return creds.username, cached[0]
        return None

    def _token(self, attempts: int | None = None, timeout_seconds: float | None = None) -> tuple[str, str]:
        return self._cached_token() or self._login(False, attempts, timeout_seconds)

    def _forget(self) -> None:
        """Drop this client's cached token (it was refused)."""
        creds = self._credentials(False)
        with _TOKENS_LOCK:
            _TOKENS.pop(self._cache_key(creds), None)

    def _call(
        self, method: str, path: str, body: Any, attempts: int | None = None, timeout_seconds: float | None = None
    ) -> tuple[str, _Reply]:
        """(user, reply) of one API request with the cached token; a 401 (token expired or revoked early)
        logs in once more, re-reading the secret (rotation), and repeats the request once."""
        username, token = self._token(attempts, timeout_seconds)
        reply = self._send(method, path, body, token, attempts, timeout_seconds)
        if reply.status == 401:
            self._forget()
            username, token = self._login(True, attempts, timeout_seconds)
            reply = self._send(method, path, body, token, attempts, timeout_seconds)
        if reply.status == 401:
            self._forget()
            raise AirflowAuthError(f"Airflow at {self.url} rejected a fresh token of user {username!r} (HTTP 401)")
        return username, reply

    # --- API ----------------------------------------------------------------------------
    def login(self, attempts: int | None = None, timeout_seconds: float | None = None) -> tuple[str, bool]:
        """Make sure there is a valid token (the cached one, or a new login): (user, whether it was cached)."""
        cached = self._cached_token()
        if cached:
            return cached[0], True
        return self._login(False, attempts, timeout_seconds)[0], False

    def trigger(self, dag_id: str, dag_run_id: str, conf: dict[str, Any]) -> TriggerResult:
        """Create run ``dag_run_id`` of ``dag_id``; an existing run with that id (409) is success, not an error."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
        body = {"dag_run_id": dag_run_id, "logical_date": None, "conf": conf}
        username, reply = self._call("POST", path, body)
        if reply.status in (200, 201):
            data = reply.json() or {}
            return TriggerResult(str(data.get("dag_run_id", dag_run_id)), True, data.get("state"))
        if reply.status == 409:
            return TriggerResult(dag_run_id, False, None)
        if reply.status == 403:
            raise AirflowAuthError(f"Airflow user {username!r} may not trigger DAG {dag_id} (HTTP 403): {reply.detail()}")
        if reply.status == 404:
            raise AirflowNotFound(f"Airflow at {self.url} has no DAG {dag_id} (HTTP 404: {reply.detail()}): is it deployed and parsed?")
        raise AirflowError(f"POST {path} answered HTTP {reply.status}: {reply.detail()}")

    def get_dag(self, dag_id: str, attempts: int | None = None, timeout_seconds: float | None = None) -> dict[str, Any]:
        """``GET /api/v2/dags/{dag_id}``: the DAG as Airflow describes it (``is_paused``, ...)."""
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}"
        username, reply = self._call("GET", path, None, attempts, timeout_seconds)
        if reply.status == 200:
            data = reply.json()
            if not isinstance(data, dict):
                raise AirflowError(
                    f"GET {path} answered HTTP 200 without a DAG (not JSON): is VDIMPORT_AIRFLOW_URL an Airflow 3 API server?"
                )
            return data
        if reply.status == 403:
            raise AirflowAuthError(f"Airflow user {username!r} may not read DAG {dag_id} (HTTP 403): {reply.detail()}")
        if reply.status == 404:
            raise AirflowNotFound(
                f"Airflow at {self.url} has no DAG {dag_id} (HTTP 404: {reply.detail()}): it is not deployed or not parsed yet"
            )
        raise AirflowError(f"GET {path} answered HTTP {reply.status}: {reply.detail()}")
