"""Fixtures of the chart tests; helpers live in ``chartkit.py``.

``renders`` renders ``charts/vdimport`` once per values file (the defaults and each
``ci/*-values.yaml``) for the whole module, so the many checks on it cost one render each.
"""

from __future__ import annotations

import pytest
from chartkit import VALUES_FILES, Render, manifests, merged_values, render, user_values


@pytest.fixture(scope="module")
def renders() -> dict[str, Render]:
    """Every values file rendered once, by values file name ("default", "example", ...)."""
    out: dict[str, Render] = {}
    for name in VALUES_FILES:
        user = user_values(name)
        text = render(user)
        out[name] = Render(name, user, merged_values(user), text, manifests(text))
    return out
