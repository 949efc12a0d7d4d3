"""OCI IAM policy statements, read well enough to say whether a grant is present.

A statement is ``Allow <subject> to <verb> <resource-type> in <location> [where <condition>]``
(OCI's policy syntax reference). A :class:`Grant` is what vdimport needs: a subject, the
least verb, a resource type, a compartment, and the *facts* of the requests it makes (the
bucket's name, the workload's namespace, ...). A statement covers a grant when its subject
is the grant's, its verb at least the grant's (inspect < read < use < manage), its resource
type the same (or ``all-resources``), its location the grant's compartment (by OCID) or the
tenancy, and its condition holds for those facts. A condition on a variable the facts do not
name is taken as not holding: such a statement may not apply, and saying "granted" would hide a
missing grant. ``any`` / ``all`` groups and ``=``/``!=`` comparisons are understood; anything
else in a condition makes the statement count as not covering.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VERBS = ("inspect", "read", "use", "manage")

_STATEMENT = re.compile(
    r"^\s*allow\s+(?P<subject>.+?)\s+to\s+(?P<verb>inspect|read|use|manage)\s+(?P<resource>[\w-]+)\s+"
    r"in\s+(?P<location>tenancy|compartment\s+id\s+\S+|compartment\s+\S+)(?:\s+where\s+(?P<condition>.+?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COMPARISON = re.compile(r"^\s*([\w.\-]+)\s*(=|!=)\s*(?:'([^']*)'|([\w.\-]+))\s*$")


@dataclass(frozen=True)
class Statement:
    text: str
    subject: str  # normalised: "any-user", "service faas", "dynamic-group <name>", "group <name>"
    verb: str
    resource: str
    location: str  # "tenancy" or a compartment OCID (or "compartment <name>", which no grant matches)
    condition: str | None


@dataclass(frozen=True)
class Grant:
    """One thing vdimport needs, in the words of the statement that would give it."""

    subject: str
    verb: str
    resource: str
    compartment: str
    facts: Mapping[str, str] = field(default_factory=dict)
    why: str = ""

    def describe(self) -> str:
        where = ", ".join(f"{k} = '{v}'" for k, v in self.facts.items())
        return f"Allow {self.subject} to {self.verb} {self.resource} in compartment id {self.compartment}" + (
            f" where all {{{where}}}" if where else ""
        )


def _subject(text: str) -> str:
    words = text.split(None, 1)
    kind = words[0].lower()
    rest = words[1].strip() if len(words) > 1 else ""
    if kind in ("dynamic-group", "group"):
        rest = rest.split("/")[-1].strip("'\"")  # 'Default'/'name' (identity domains) names the same group
    return f"{kind} {rest}".strip() if kind != "any-user" else "any-user"


def parse(text: str) -> Statement | None:
    """``text`` as a :class:`Statement`, or None for what is not an ``Allow`` statement we can read."""
    found = _STATEMENT.match(" ".join(text.split()))
    if not found:
        return None
    location = found["location"]
    parts = location.split()
    if parts[0].lower() == "tenancy":
        where = "tenancy"
    elif len(parts) == 3 and parts[1].lower() == "id":
        where = parts[2]
    else:
        where = "compartment " + parts[-1]
    return Statement(text, _subject(found["subject"]), found["verb"].lower(), found["resource"].lower(), where, found["condition"])


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    quoted = False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def holds(condition: str | None, facts: Mapping[str, str]) -> bool:
    """Whether ``condition`` is true for requests with these ``facts`` (unknown variables: false)."""
    if condition is None or not condition.strip():
        return True
    text = condition.strip()
    group = re.match(r"^(all|any)\s*\{(.*)\}$", text, re.IGNORECASE | re.DOTALL)
    if group:
        items = [holds(part, facts) for part in _split_top(group[2])]
        return all(items) if group[1].lower() == "all" else any(items)
    compared = _COMPARISON.match(text)
    if not compared:
        return False
    name, op, quoted, bare = compared.groups()
    actual = facts.get(name.lower())
    expected = quoted if quoted is not None else facts.get(bare.lower())  # a bare word is another variable
    if actual is None or expected is None:
        return False
    return (actual.lower() == expected.lower()) if op == "=" else (actual.lower() != expected.lower())


def covers(statement: Statement, grant: Grant, tenancy: str) -> bool:
    if statement.subject.lower() != grant.subject.lower():
        return False
    if VERBS.index(statement.verb) < VERBS.index(grant.verb):
        return False
    if statement.resource not in (grant.resource, "all-resources"):
        return False
    if statement.location not in (grant.compartment, "tenancy") and not (statement.location == tenancy == grant.compartment):
        return False
    return holds(statement.condition, {k.lower(): v for k, v in grant.facts.items()})


def missing(grants: Iterable[Grant], statements: Iterable[str], tenancy: str) -> list[Grant]:
    """The grants no statement covers."""
    parsed = [s for s in (parse(t) for t in statements) if s is not None]
    return [g for g in grants if not any(covers(s, g, tenancy) for s in parsed)]
