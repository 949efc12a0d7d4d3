"""What each task hands to ``vdimport-step``: the request, the state, the run label."""

from __future__ import annotations

import json
import re
import types
from typing import Any

import pytest
from vdimport_dag.steps import STEP_ORDER, upstream_steps
from vdimport_dag.templating import LABEL_MAX, request_json, run_label, state_json

from vdimport_worker.request import ImportRequest

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


class FakeTI:
    """The part of a task instance the macros use: ``xcom_pull`` of one task's return value."""

    def __init__(self, results: dict[str, Any]):
        self.results = results
        self.pulled: list[str] = []

    def xcom_pull(self, task_ids: str, **_: Any) -> Any:
        self.pulled.append(task_ids)
        return self.results.get(task_ids)


def test_request_is_params_then_conf_without_unset_params() -> None:
    params = {"namespace": None, "bucket": None, "object": None, "fsck": None, "vpus_per_gb": 20, "verify": False}
    conf = {"namespace": "ns", "bucket": "b", "object": "disk.qcow2", "etag": "e", "metadata": {"fsck": "strict"}}
    request = json.loads(request_json(params, types.SimpleNamespace(conf=conf)))
    assert request == {**conf, "vpus_per_gb": 20, "verify": False}
    # The step runner reads it as intended: metadata's fsck applies (no empty param hides it).
    parsed = ImportRequest.parse(request)
    assert (parsed.options.fsck, parsed.options.vpus_per_gb, parsed.options.verify) == ("strict", 20, False)


def test_request_conf_wins_over_params() -> None:
    request = json.loads(request_json({"object": "from-params", "ad_number": 1}, types.SimpleNamespace(conf={"object": "from-conf"})))
    assert request == {"object": "from-conf", "ad_number": 1}
    assert json.loads(request_json({"object": "x"}, types.SimpleNamespace(conf=None))) == {"object": "x"}


@pytest.mark.parametrize("step", STEP_ORDER[1:])
def test_state_holds_the_results_of_the_earlier_steps(step: str) -> None:
    results: dict[str, Any] = {s: {"step": s, "n": i} for i, s in enumerate(STEP_ORDER)}
    results["download_image"] = None  # e.g. a step that failed: no XCom
    ti = FakeTI(results)
    state = json.loads(state_json(ti, step))
    expected = {s: results[s] for s in upstream_steps(step) if results[s] is not None}
    assert state == expected
    assert ti.pulled == list(upstream_steps(step))


def test_first_step_gets_only_the_run_key_its_later_steps_carry() -> None:
    """A Clear from inspect_object keeps the run instance's key (its resources); no key: a new run."""
    key = "0123456789abcdef0123456789abcdef"
    results: dict[str, Any] = {s: {"step": s, "run_key": key, "instance_id": "x"} for s in STEP_ORDER[1:]}
    results["report"] = None
    state = json.loads(state_json(FakeTI(results), STEP_ORDER[0]))
    assert state == {s: {"run_key": key} for s in STEP_ORDER[1:-1]}
    assert json.loads(state_json(FakeTI(dict.fromkeys(STEP_ORDER)), STEP_ORDER[0])) == {}


@pytest.mark.parametrize(
    "run_id",
    [
        "manual__2026-11-25T20:08:38.136227+00:00",
        "vdimport__images__disk.qcow2__0123456789abcdef",
        "x" * 250,
        "::weird run id with spaces & ümlauts::",
        "--",
    ],
)
def test_run_label_is_a_valid_label_value(run_id: str) -> None:
    label = run_label(run_id)
    assert LABEL_VALUE.fullmatch(label) and 0 < len(label) <= LABEL_MAX, label
    assert run_label(run_id) == label  # stable


def test_run_label_keeps_short_ids_readable_and_long_ids_distinct() -> None:
    assert run_label("scheduled_run-1.a") == "scheduled_run-1.a"
    assert run_label("manual__2026-11-25T20:08:38+00:00") == "manual__2026-11-25T20-08-38-00-00"
    base = "vdimport__" + "a" * 80
    assert run_label(base + "1") != run_label(base + "2")


def test_outcome_names_every_volume_of_a_multi_disk_import() -> None:
    from vdimport_dag.templating import outcome_json

    volumes = [{"volume_id": f"ocid1.volume.oc1..v{n}", "volume_name": f"vm-disk{n}", "disk": n} for n in (1, 2)]
    report = {"volume_id": "ocid1.volume.oc1..v1", "volume_name": "vm-disk1", "volumes": volumes}
    run = types.SimpleNamespace(run_id="r1", conf={"namespace": "n", "bucket": "b", "object": "vm.ova"})
    outcome = json.loads(outcome_json(FakeTI({"report": report}), {}, run))["outcome"]
    assert outcome["state"] == "succeeded"
    assert outcome["volumes"] == [{"volume_id": v["volume_id"], "volume_name": v["volume_name"]} for v in volumes]
    single = json.loads(outcome_json(FakeTI({"report": {**report, "volumes": volumes[:1]}}), {}, run))["outcome"]
    assert "volumes" not in single
