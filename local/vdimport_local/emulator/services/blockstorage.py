"""Block Storage: volumes backed by sparse files, and backup policies with their assignments.

A volume's content lives in ``DATA/volumes/<ocid>.img``, a sparse file of exactly
``sizeInGBs`` GiB (private key ``_path``). A new volume does not read as zeros: small
random blocks are written at spread offsets, so code that assumes a zeroed target
(``qemu-img convert --target-is-zero``, skipping zero runs) leaves visible garbage.

Volume attachments belong to :mod:`.compute`; this module only reads them to refuse
deleting an attached volume.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from .. import ids
from ..errors import OCIError, conflict, incorrect_state, invalid, not_found
from ..routing import Request, Response, Service
from ..store import Resource, Store
from ._common import (
    API,
    body_of,
    check_if_match,
    default_name,
    in_compartment,
    listing,
    optional_bool,
    optional_str,
    paged,
    require_ad,
    require_compartment,
    required,
    respond,
    tags,
)

service = Service("blockstorage")

GiB = 1 << 30
MiB = 1 << 20

VOLUME = "volume"
VOLUME_ATTACHMENT = "volumeattachment"  # owned by compute; read here
POLICY_ASSIGNMENT = "volumebackuppolicyassignment"

MIN_SIZE_GB = 50
MAX_SIZE_GB = 32768
DEFAULT_SIZE_GB = 1024  # OCI's default when sizeInGBs is omitted
DEFAULT_VPUS_PER_GB = 10  # Balanced performance
JUNK_BLOCK = 4096


# --- read here, owned by compute ------------------------------------------------------
def active_attachments(store: Store, volume_id: str) -> list[Resource]:
    """Attachments of the volume that are not DETACHED."""
    return [a for a in store.all(VOLUME_ATTACHMENT) if a["volumeId"] == volume_id and a["lifecycleState"] != "DETACHED"]


# --- the backing files --------------------------------------------------------------
def volume_path(data_dir: Path, volume_id: str) -> Path:
    return data_dir / "volumes" / f"{volume_id}.img"


def junk_offsets(size: int, start: int = 0) -> list[int]:
    """Where a fresh volume (or a freshly grown region from ``start``) carries random blocks."""
    fixed = [0, MiB, 4 * MiB, 64 * MiB, GiB]
    spread = [size * k // 8 for k in range(1, 8)]
    candidates = [*fixed, *spread, size // 2 + 3 * MiB, size - JUNK_BLOCK]
    aligned = {(start + off if off < start else off) // JUNK_BLOCK * JUNK_BLOCK for off in candidates}
    return sorted(off for off in aligned if start <= off <= size - JUNK_BLOCK)


def write_junk(path: Path, size: int, start: int = 0) -> None:
    with open(path, "r+b") as f:
        for offset in junk_offsets(size, start):
            f.seek(offset)
            f.write(os.urandom(JUNK_BLOCK))


def make_backing_file(path: Path, size_gb: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as f:
            f.truncate(size_gb * GiB)
        write_junk(path, size_gb * GiB)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OCIError(500, "InternalError", f"the emulator cannot create a {size_gb} GiB backing file: {exc}") from None


def grow_backing_file(path: Path, old_gb: int, new_gb: int) -> None:
    try:
        with open(path, "r+b") as f:
            f.truncate(new_gb * GiB)
        write_junk(path, new_gb * GiB, start=old_gb * GiB)
    except OSError as exc:
        raise OCIError(500, "InternalError", f"the emulator cannot grow the backing file to {new_gb} GiB: {exc}") from None


# --- validation -------------------------------------------------------------------
def _size_gb(body: dict[str, Any]) -> int | None:
    """The size asked for (``sizeInGBs``, or ``sizeInMBs`` in whole GB), None when neither is given."""
    size = body.get("sizeInGBs")
    if size is None and body.get("sizeInMBs") is not None:
        mbs = body["sizeInMBs"]
        if not isinstance(mbs, int) or isinstance(mbs, bool) or mbs % 1024:
            raise invalid("sizeInMBs must be a whole number of GB")
        size = mbs // 1024
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool):
        raise invalid("sizeInGBs must be an integer")
    if not MIN_SIZE_GB <= size <= MAX_SIZE_GB:
        raise invalid(f"sizeInGBs must be between {MIN_SIZE_GB} and {MAX_SIZE_GB}, got {size}")
    return size


def _vpus(body: dict[str, Any]) -> int | None:
    vpus = body.get("vpusPerGB")
    if vpus is None:
        return None
    if not isinstance(vpus, int) or isinstance(vpus, bool) or not 0 <= vpus <= 120 or vpus % 10:
        raise invalid(f"vpusPerGB must be one of 0, 10, 20, ... 120, got {vpus!r}")
    return vpus


def _volume(request: Request) -> Resource:
    return request.emulator.store.get(VOLUME, request.params["volumeId"], "Volume")


# --- volumes ------------------------------------------------------------------------
@service.route("POST", API + "/volumes", "CreateVolume")
def create_volume(request: Request) -> Response:
    em = request.emulator
    body = body_of(request)
    ad = require_ad(request, body.get("availabilityDomain"))
    compartment = require_compartment(body.get("compartmentId"))
    size = _size_gb(body) or DEFAULT_SIZE_GB
    vpus = _vpus(body)
    if vpus is None:
        vpus = DEFAULT_VPUS_PER_GB
    if body.get("sourceDetails") or body.get("volumeBackupId"):
        raise invalid("the emulator creates empty volumes only (no sourceDetails / volumeBackupId)")
    kms = optional_str(body, "kmsKeyId")
    if kms is not None and not kms.startswith("ocid1.key."):
        raise invalid(f"kmsKeyId is not a key OCID: {kms!r}")
    policy_id = optional_str(body, "backupPolicyId")
    if policy_id is not None:
        _policy(em.tenancy, policy_id)
    display_name = optional_str(body, "displayName") or default_name("volume")
    vid = ids.ocid("volume")
    path = volume_path(em.data_dir, vid)
    make_backing_file(path, size)
    now = time.time()
    volume: Resource = {
        "availabilityDomain": ad,
        "compartmentId": compartment,
        "definedTags": tags(body, "definedTags"),
        "displayName": display_name,
        "freeformTags": tags(body, "freeformTags"),
        "systemTags": {},
        "id": vid,
        "isHydrated": True,
        "kmsKeyId": kms,
        "lifecycleState": "PROVISIONING",
        "vpusPerGB": vpus,
        "sizeInGBs": size,
        "sizeInMBs": size * 1024,
        "sourceDetails": None,
        "timeCreated": ids.now_iso(now),
        "volumeGroupId": None,
        "isAutoTuneEnabled": optional_bool(body, "isAutoTuneEnabled"),
        "autoTunedVpusPerGB": None,
        "autotunePolicies": body.get("autotunePolicies") or [],
        "blockVolumeReplicas": None,
        "isReservationsEnabled": optional_bool(body, "isReservationsEnabled"),
        "clusterPlacementGroupId": None,
        "_created": now,
        "_path": str(path),
    }
    em.store.add(VOLUME, volume)
    if policy_id is not None:
        _assign(em.store, vid, policy_id)
    em.store.schedule(VOLUME, volume, [(em.delay(1), "AVAILABLE")])
    return respond(volume)


@service.route("GET", API + "/volumes/{volumeId}", "GetVolume")
def get_volume(request: Request) -> Response:
    return respond(_volume(request))


@service.route("GET", API + "/volumes", "ListVolumes")
def list_volumes(request: Request) -> Response:
    items = in_compartment(request, VOLUME)
    group = request.query.get("volumeGroupId")
    if group:
        items = [v for v in items if v.get("volumeGroupId") == group]
    return listing(request, items, ("availabilityDomain", "displayName", "lifecycleState"))


@service.route("PUT", API + "/volumes/{volumeId}", "UpdateVolume")
def update_volume(request: Request) -> Response:
    em = request.emulator
    volume = _volume(request)
    check_if_match(request, volume)
    body = body_of(request)
    display_name = optional_str(body, "displayName")
    size = _size_gb(body)
    vpus = _vpus(body)
    freeform = tags(body, "freeformTags") if "freeformTags" in body else None
    defined = tags(body, "definedTags") if "definedTags" in body else None
    if volume["lifecycleState"] != "AVAILABLE":
        raise incorrect_state(f"Volume is {volume['lifecycleState']}; it can be updated when AVAILABLE")
    if size is not None and size < volume["sizeInGBs"]:
        raise invalid(f"sizeInGBs can only grow: the volume has {volume['sizeInGBs']} GB, asked {size}")
    if display_name:
        volume["displayName"] = display_name
    if freeform is not None:
        volume["freeformTags"] = freeform
    if defined is not None:
        volume["definedTags"] = defined
    if "isAutoTuneEnabled" in body:
        volume["isAutoTuneEnabled"] = optional_bool(body, "isAutoTuneEnabled")
    busy = False
    if size is not None and size > volume["sizeInGBs"]:
        grow_backing_file(Path(volume["_path"]), volume["sizeInGBs"], size)
        volume["sizeInGBs"] = size
        volume["sizeInMBs"] = size * 1024
        busy = True
    if vpus is not None and vpus != volume["vpusPerGB"]:
        volume["vpusPerGB"] = vpus
        busy = True
    if busy:  # a resize or performance change shows PROVISIONING while it is applied
        em.store.set_state(VOLUME, volume, "PROVISIONING")
        em.store.schedule(VOLUME, volume, [(em.delay(0.5), "AVAILABLE")])
    em.store.touch()
    return respond(volume)


@service.route("DELETE", API + "/volumes/{volumeId}", "DeleteVolume")
def delete_volume(request: Request) -> Response:
    em = request.emulator
    volume = _volume(request)
    check_if_match(request, volume)
    if volume["lifecycleState"] in ("TERMINATING", "TERMINATED"):
        return Response.empty()
    attached = active_attachments(em.store, volume["id"])
    if attached:
        raise conflict(f"Volume {volume['id']} is attached ({attached[0]['id']} is {attached[0]['lifecycleState']}); detach it first")
    path = Path(volume["_path"])
    if em.settings.keep_deleted_volume_files and path.exists():  # what the volume held stays inspectable
        (path.parent / "deleted").mkdir(exist_ok=True)
        path.replace(path.parent / "deleted" / path.name)
    path.unlink(missing_ok=True)
    for assignment in _assignments_of(em.store, volume["id"]):
        em.store.remove(POLICY_ASSIGNMENT, assignment["id"])
    em.store.set_state(VOLUME, volume, "TERMINATING")
    em.store.schedule(VOLUME, volume, [(em.delay(1), "TERMINATED")])
    return Response.empty()


@service.route("GET", "/_ocisim/volumes/{volumeId}", "AdminGetVolume", authenticated=False)
def admin_get_volume(request: Request) -> Response:
    """Where a volume's bytes are: the backing file the worker VM sees as its device."""
    volume = _volume(request)
    return Response.json(
        {"id": volume["id"], "path": volume["_path"], "sizeInGBs": volume["sizeInGBs"], "lifecycleState": volume["lifecycleState"]}
    )


# --- backup policies ----------------------------------------------------------------
DAY = 24 * 3600
POLICY_TIME_CREATED = "2017-11-14T00:00:00.000Z"


def _schedule(backup_type: str, period: str, retention: int, **when: Any) -> dict[str, Any]:
    return {
        "backupType": backup_type,
        "offsetSeconds": 0,
        "period": period,
        "offsetType": "STRUCTURED",
        "hourOfDay": when.get("hourOfDay", 0),
        "dayOfWeek": when.get("dayOfWeek"),
        "dayOfMonth": when.get("dayOfMonth"),
        "month": when.get("month"),
        "retentionSeconds": retention,
        "timeZone": "REGIONAL_DATA_CENTER_TIME",
    }


_YEARLY = _schedule("FULL", "ONE_YEAR", 5 * 365 * DAY, dayOfMonth=1, month="JANUARY")
_MONTHLY = _schedule("INCREMENTAL", "ONE_MONTH", 365 * DAY, dayOfMonth=1)
_WEEKLY = _schedule("INCREMENTAL", "ONE_WEEK", 4 * 7 * DAY, dayOfWeek="SUNDAY")
_DAILY = _schedule("INCREMENTAL", "ONE_DAY", 7 * DAY)
ORACLE_POLICY_SCHEDULES = {
    "gold": [_DAILY, _WEEKLY, _MONTHLY, _YEARLY],
    "silver": [_WEEKLY, _MONTHLY, _YEARLY],
    "bronze": [_MONTHLY, _YEARLY],
}


def oracle_policies(tenancy: str) -> list[Resource]:
    """The three Oracle-defined policies; their OCIDs are stable for a tenancy."""
    out: list[Resource] = []
    for name in ("gold", "silver", "bronze"):
        unique = hashlib.sha256(f"{tenancy}/{name}".encode()).hexdigest()[:52]
        out.append(
            {
                "displayName": name,
                "id": f"ocid1.volumebackuppolicy.oc1..aaaaaaaa{unique}",
                "schedules": [dict(s) for s in ORACLE_POLICY_SCHEDULES[name]],
                "destinationRegion": None,
                "timeCreated": POLICY_TIME_CREATED,
                "compartmentId": None,
                "definedTags": {},
                "freeformTags": {},
            }
        )
    return out


def _policy(tenancy: str, policy_id: str) -> Resource:
    for policy in oracle_policies(tenancy):
        if policy["id"] == policy_id:
            return policy
    raise not_found("VolumeBackupPolicy")


def _assignments_of(store: Store, asset_id: str) -> list[Resource]:
    return [a for a in store.all(POLICY_ASSIGNMENT) if a["assetId"] == asset_id]


def _assign(store: Store, asset_id: str, policy_id: str) -> Resource:
    """Assign, silently replacing the asset's previous assignment as OCI does."""
    for old in _assignments_of(store, asset_id):
        store.remove(POLICY_ASSIGNMENT, old["id"])
    now = time.time()
    assignment: Resource = {
        "assetId": asset_id,
        "id": ids.ocid("volumebackuppolicyassignment"),
        "policyId": policy_id,
        "timeCreated": ids.now_iso(now),
        "xrcKmsKeyId": None,
        "_created": now,
    }
    return store.add(POLICY_ASSIGNMENT, assignment)


@service.route("GET", API + "/volumeBackupPolicies", "ListVolumeBackupPolicies")
def list_volume_backup_policies(request: Request) -> Response:
    compartment = request.query.get("compartmentId")
    if compartment:
        require_compartment(compartment)
        policies: list[Resource] = []  # user-defined policies are not emulated
    else:
        policies = oracle_policies(request.emulator.tenancy)
    return paged(request, policies)


@service.route("GET", API + "/volumeBackupPolicies/{policyId}", "GetVolumeBackupPolicy")
def get_volume_backup_policy(request: Request) -> Response:
    return respond(_policy(request.emulator.tenancy, request.params["policyId"]))


@service.route("POST", API + "/volumeBackupPolicyAssignments", "CreateVolumeBackupPolicyAssignment")
def create_volume_backup_policy_assignment(request: Request) -> Response:
    em = request.emulator
    body = body_of(request)
    asset_id = required(body, "assetId")
    policy_id = required(body, "policyId")
    _policy(em.tenancy, policy_id)
    volume = em.store.get(VOLUME, asset_id, "Volume")
    if volume["lifecycleState"] in ("TERMINATING", "TERMINATED"):
        raise not_found("Volume")
    return respond(_assign(em.store, asset_id, policy_id))


def _assignment(request: Request) -> Resource:
    return request.emulator.store.get(POLICY_ASSIGNMENT, request.params["policyAssignmentId"], "VolumeBackupPolicyAssignment")


@service.route("GET", API + "/volumeBackupPolicyAssignments/{policyAssignmentId}", "GetVolumeBackupPolicyAssignment")
def get_volume_backup_policy_assignment(request: Request) -> Response:
    return respond(_assignment(request))


@service.route("DELETE", API + "/volumeBackupPolicyAssignments/{policyAssignmentId}", "DeleteVolumeBackupPolicyAssignment")
def delete_volume_backup_policy_assignment(request: Request) -> Response:
    assignment = _assignment(request)
    check_if_match(request, assignment)
    request.emulator.store.remove(POLICY_ASSIGNMENT, assignment["id"])
    return Response.empty()


@service.route("GET", API + "/volumeBackupPolicyAssignments", "GetVolumeBackupPolicyAssetAssignment")
def get_volume_backup_policy_asset_assignment(request: Request) -> Response:
    asset_id = required(request.query, "assetId")
    return listing(request, _assignments_of(request.emulator.store, asset_id), sortable=False)
