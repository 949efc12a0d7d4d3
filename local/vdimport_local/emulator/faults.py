"""Fault injection: make chosen calls of an operation fail, throttle, or hang.

A rule targets an operation by its OCI name (``LaunchInstance``, ``GetObject``...) or the
pseudo-operation ``RunCommand`` (the script execution on the worker VM). Calls are
counted per rule from the moment it is added; calls ``nth`` to ``nth + times - 1`` are hit.
``match`` narrows a rule to calls whose JSON body (or path parameters) has the given
top-level values, e.g. ``{"availabilityDomain": "Emul:US-ASHBURN-AD-1"}`` for capacity
errors in one AD only.

``stall`` (``AttachVolume``, ``DetachVolume``): the call succeeds, but the change it starts
does not finish: the attachment stays ATTACHING or DETACHING for ``seconds`` (0: until its
instance is terminated), then goes to ``state`` (default: where it was going), e.g.
``{"operation": "AttachVolume", "action": "stall", "seconds": 0.2, "state": "DETACHED"}``
for an attach that fails, ``{"operation": "DetachVolume", "action": "stall"}`` for a
detach that hangs. A ``RunCommand`` ``hang`` with ``seconds`` holds the command
IN_PROGRESS that long and then runs it; without, it hangs until the command's timeout.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import OCIError, invalid

_ids = itertools.count(1)

DEFAULT_MESSAGES = {
    429: ("TooManyRequests", "Too many requests for the tenancy"),
    500: ("InternalError", "Internal error"),
    502: ("BadGateway", "Bad gateway"),
    503: ("ServiceUnavailable", "Service unavailable"),
    504: ("GatewayTimeout", "Gateway timeout"),
    409: ("Conflict", "Conflict"),
    404: ("NotAuthorizedOrNotFound", "Not found"),
    400: ("InvalidParameter", "Invalid parameter"),
}
ACTIONS = ("error", "hang", "fail", "timeout", "stall")
STALLABLE = {"AttachVolume": ("ATTACHED", "DETACHED"), "DetachVolume": ("DETACHED",)}  # operation -> end states


@dataclass
class FaultRule:
    operation: str
    status: int = 500
    code: str = ""
    message: str = ""
    nth: int = 1
    times: int = 1
    action: str = "error"  # error | hang (sleep then answer) | fail/timeout (RunCommand only) | stall (see above)
    seconds: float = 0.0  # hang or stall duration
    state: str = ""  # stall: the state the attachment ends in
    exit_code: int = 1  # RunCommand fail
    match: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_ids))
    seen: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise invalid(f"fault action must be one of {', '.join(ACTIONS)}")
        if self.nth < 1 or self.times < 1:
            raise invalid("nth and times must be at least 1")
        if self.action == "stall":
            if self.operation not in STALLABLE:
                raise invalid(f"stall applies to {', '.join(STALLABLE)} only")
            if self.state and self.state not in STALLABLE[self.operation]:
                raise invalid(f"a stalled {self.operation} can end in {', '.join(STALLABLE[self.operation])} only")
        code, message = DEFAULT_MESSAGES.get(self.status, ("InternalError", "Internal error"))
        self.code = self.code or code
        self.message = self.message or message

    def as_error(self) -> OCIError:
        headers = {"retry-after": "1"} if self.status == 429 else {}
        return OCIError(self.status, self.code, self.message, headers)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []

    def add(self, spec: dict[str, Any]) -> FaultRule:
        allowed = {"operation", "status", "code", "message", "nth", "times", "action", "seconds", "state", "exit_code", "match"}
        unknown = set(spec) - allowed
        if unknown:
            raise invalid(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if not spec.get("operation"):
            raise invalid("a fault needs an operation")
        rule = FaultRule(**spec)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, operation: str, context: Callable[[], dict[str, Any]] | None = None) -> FaultRule | None:
        """Count one call of ``operation``; return the rule it trips, if any.

        ``context`` gives the call's fields for rules with ``match``; it is only called
        when such a rule exists, so streaming bodies are not read for nothing.
        """
        hit = None
        fields_cache: dict[str, Any] | None = None
        with self._lock:
            for rule in self.rules:
                if rule.operation != operation:
                    continue
                if rule.match:
                    if fields_cache is None:
                        fields_cache = context() if context else {}
                    if any(fields_cache.get(k) != v for k, v in rule.match.items()):
                        continue
                rule.seen += 1
                if hit is None and rule.nth <= rule.seen < rule.nth + rule.times:
                    rule.hits += 1
                    hit = rule
        return hit

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(rule) for rule in self.rules]
