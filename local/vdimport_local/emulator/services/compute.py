"""Compute: instances with their VNIC and devices, volume attachments, images, shapes,
and the iaas work requests that LaunchInstance, TerminateInstance, AttachVolume and
DetachVolume answer with in ``opc-work-request-id``.

Each instance gets a home directory ``DATA/instances/<ocid>/home`` (private key
``_home``) where the worker-VM emulation runs its Run Command scripts. Attachments
name the consistent device path (``/dev/oracleoci/oraclevdb`` ..) the volume appears
at; :func:`attached_volumes` tells the VM which backing file is behind which device.

Resource kinds in the store: ``instance``, ``vnic``, ``vnicattachment``,
``volumeattachment``, ``workrequest`` (and ``volume`` from :mod:`.blockstorage`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import ids
from ..errors import conflict, incorrect_state, invalid, missing, not_found
from ..routing import Request, Response, Service
from ..store import Resource, Store, public
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
from .blockstorage import VOLUME, VOLUME_ATTACHMENT, active_attachments

if TYPE_CHECKING:
    from ..app import Emulator

service = Service("compute")

INSTANCE = "instance"
VNIC = "vnic"
VNIC_ATTACHMENT = "vnicattachment"
WORK_REQUEST = "workrequest"

DEVICES = [f"/dev/oracleoci/oraclevd{letter}" for letter in "bcdefghijklmnopqrstuvwxyz"]
METADATA_MAX_BYTES = 32000
PLUGIN_STATES = ("ENABLED", "DISABLED")


# --- shapes and images --------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    name: str
    processor: str
    arch: str = "x86_64"
    flexible: bool = False
    ocpus: float = 1  # fixed shapes
    memory: float = 16  # fixed shapes
    max_ocpus: int = 1
    max_memory: float = 16
    default_memory_per_ocpu: float = 16
    min_memory_per_ocpu: float = 1
    max_memory_per_ocpu: float = 64
    vcpus_per_ocpu: int = 2
    gbps_per_ocpu: float = 1
    max_gbps: float = 40

    def config(self, ocpus: float, memory: float, baseline: str | None) -> dict[str, Any]:
        gbps = min(self.max_gbps, max(1.0, ocpus * self.gbps_per_ocpu))
        return {
            "ocpus": float(ocpus),
            "memoryInGBs": float(memory),
            "baselineOcpuUtilization": baseline,
            "processorDescription": self.processor,
            "networkingBandwidthInGbps": float(gbps),
            "maxVnicAttachments": max(2, min(24, int(ocpus))),
            "gpus": 0,
            "gpuDescription": None,
            "localDisks": 0,
            "localDisksTotalSizeInGBs": None,
            "localDiskDescription": None,
            "vcpus": int(ocpus * self.vcpus_per_ocpu),
            "resourceManagement": None,
        }

    def describe(self) -> dict[str, Any]:
        ocpus = 1 if self.flexible else self.ocpus
        memory = self.default_memory_per_ocpu if self.flexible else self.memory
        out = {
            "shape": self.name,
            "processorDescription": self.processor,
            "ocpus": float(ocpus),
            "memoryInGBs": float(memory),
            "networkingBandwidthInGbps": float(max(1.0, ocpus * self.gbps_per_ocpu)),
            "maxVnicAttachments": 2,
            "gpus": 0,
            "localDisks": 0,
            "isFlexible": self.flexible,
            "isLiveMigrationSupported": True,
            "billingType": "ALWAYS_FREE" if self.name.endswith(".Micro") else "PAID",
            "baselineOcpuUtilizations": ["BASELINE_1_8", "BASELINE_1_2", "BASELINE_1_1"]
            if self.flexible and self.arch == "x86_64"
            else None,
        }
        if self.flexible:
            out["ocpuOptions"] = {"min": 1.0, "max": float(self.max_ocpus), "maxPerNumaNode": float(self.max_ocpus)}
            out["memoryOptions"] = {
                "minInGBs": 1.0,
                "maxInGBs": float(self.max_memory),
                "defaultPerOcpuInGBs": float(self.default_memory_per_ocpu),
                "minPerOcpuInGBs": float(self.min_memory_per_ocpu),
                "maxPerOcpuInGBs": float(self.max_memory_per_ocpu),
                "maxPerNumaNodeInGBs": float(self.max_memory),
            }
        return out


_EPYC_MILAN = "2.55 GHz AMD EPYC\u2122 7J13 (Milan)"
_EPYC_GENOA = "2.4 GHz AMD EPYC\u2122 9J14 (Genoa)"
_EPYC_NAPLES = "2.0 GHz AMD EPYC\u2122 7551 (Naples)"
_ICE_LAKE = "2.0 GHz Intel\u00ae Xeon\u00ae Platinum 8358 (Ice Lake)"
_SKYLAKE = "2.0 GHz Intel\u00ae Xeon\u00ae Platinum 8167M (Skylake)"
_AMPERE = "3.0 GHz Ampere\u00ae Altra\u2122"

SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("VM.Standard.E4.Flex", _EPYC_MILAN, flexible=True, max_ocpus=64, max_memory=1024),
        Shape("VM.Standard.E5.Flex", _EPYC_GENOA, flexible=True, max_ocpus=94, max_memory=1049),
        Shape("VM.Standard3.Flex", _ICE_LAKE, flexible=True, max_ocpus=32, max_memory=512),
        Shape(
            "VM.Standard.A1.Flex",
            _AMPERE,
            arch="aarch64",
            flexible=True,
            max_ocpus=80,
            max_memory=512,
            default_memory_per_ocpu=6,
            vcpus_per_ocpu=1,
        ),
        Shape("VM.Standard2.1", _SKYLAKE, ocpus=1, memory=15, max_ocpus=1, max_memory=15),
        Shape("VM.Standard2.2", _SKYLAKE, ocpus=2, memory=30, max_ocpus=2, max_memory=30),
        Shape("VM.Standard.E2.1", _EPYC_NAPLES, ocpus=1, memory=8, max_ocpus=1, max_memory=8),
        Shape("VM.Standard.E2.1.Micro", _EPYC_NAPLES, ocpus=1, memory=1, max_ocpus=1, max_memory=1, gbps_per_ocpu=0.48),
    )
}
BASELINES = ("BASELINE_1_8", "BASELINE_1_2", "BASELINE_1_1")


def _image(display_name: str, os_name: str, version: str, arch: str, size_mb: int) -> dict[str, Any]:
    unique = hashlib.sha256(display_name.encode()).hexdigest()[:52]
    return {
        "baseImageId": None,
        "compartmentId": None,
        "createImageAllowed": True,
        "definedTags": {},
        "displayName": display_name,
        "freeformTags": {},
        "id": f"ocid1.image.oc1.{ids.REGION_KEY}.aaaaaaaa{unique}",
        "launchMode": "NATIVE",
        "launchOptions": _launch_options(),
        "lifecycleState": "AVAILABLE",
        "operatingSystem": os_name,
        "operatingSystemVersion": version,
        "agentFeatures": None,
        "listingType": None,
        "sizeInMBs": size_mb,
        "billableSizeInGBs": None,
        "timeCreated": "2024-10-01T00:00:00.000Z",
        "_arch": arch,
    }


def _launch_options() -> dict[str, Any]:
    return {
        "bootVolumeType": "PARAVIRTUALIZED",
        "firmware": "UEFI_64",
        "networkType": "PARAVIRTUALIZED",
        "remoteDataVolumeType": "PARAVIRTUALIZED",
        "isPvEncryptionInTransitEnabled": False,
        "isConsistentVolumeNamingEnabled": True,
    }


# Platform images with OCIDs that are the same in every emulator (local configs may name them).
IMAGES: list[dict[str, Any]] = [
    _image("Oracle-Linux-9.4-2024.09.30-0", "Oracle Linux", "9", "x86_64", 47694),
    _image("Oracle-Linux-9.4-aarch64-2024.09.30-0", "Oracle Linux", "9", "aarch64", 47694),
    _image("Oracle-Linux-8.10-2024.09.30-0", "Oracle Linux", "8", "x86_64", 47694),
    _image("Canonical-Ubuntu-22.04-2024.10.04-0", "Canonical Ubuntu", "22.04", "x86_64", 47694),
]


def _find_image(image_id: str) -> dict[str, Any]:
    for image in IMAGES:
        if image["id"] == image_id:
            return image
    raise not_found("Image")


# --- helpers for the worker-VM emulation --------------------------------------------
def attachments_of(store: Store, instance_id: str, states: tuple[str, ...] = ("ATTACHED",)) -> list[Resource]:
    return [a for a in store.all(VOLUME_ATTACHMENT) if a["instanceId"] == instance_id and a["lifecycleState"] in states]


def _used_devices(store: Store, instance_id: str) -> set[str]:
    """Device paths taken on the instance: an attachment holds its path until it is DETACHED."""
    return {a["device"] for a in attachments_of(store, instance_id, ("ATTACHING", "ATTACHED", "DETACHING"))}


def attached_volumes(store: Store, instance_id: str) -> list[dict[str, Any]]:
    """``[{"device", "path", "isReadOnly", "volumeId", "attachmentId"}]`` for the ATTACHED volumes of an instance."""
    out = []
    for att in attachments_of(store, instance_id):
        volume = store.find(VOLUME, att["volumeId"])
        if volume is None:
            continue
        out.append(
            {
                "device": att["device"],
                "path": volume["_path"],
                "isReadOnly": att["isReadOnly"],
                "volumeId": volume["id"],
                "attachmentId": att["id"],
            }
        )
    return out


def instance_home(data_dir: Path, instance_id: str) -> Path:
    return data_dir / "instances" / instance_id / "home"


def instance_var_tmp(data_dir: Path, instance_id: str) -> Path:
    """The worker VM's /var/tmp (where the worker scripts keep the image); deleted on termination."""
    return data_dir / "instances" / instance_id / "var-tmp"


# --- work requests ------------------------------------------------------------------
def _work_request(
    store: Store,
    operation: str,
    compartment: str,
    kind: str,
    target: Resource,
    action: str,
    since: float,
    succeed: tuple[str, ...],
    fail: tuple[str, ...] = (),
) -> str:
    wid = ids.ocid("workrequest")
    store.add(
        WORK_REQUEST,
        {
            "operationType": operation,
            "status": "ACCEPTED",
            "id": wid,
            "compartmentId": compartment,
            "resources": [
                {
                    "actionType": action,
                    "entityType": kind,
                    "identifier": target["id"],
                    "entityUri": f"{API}/{_uri_segment(kind)}/{target['id']}",
                }
            ],
            "percentComplete": 0.0,
            "timeAccepted": ids.now_iso(since),
            "timeStarted": None,
            "timeFinished": None,
            "_created": since,
            "_target": [kind, target["id"]],
            "_succeed": list(succeed),
            "_fail": list(fail),
        },
    )
    return wid


def _uri_segment(kind: str) -> str:
    return {INSTANCE: "instances", VOLUME_ATTACHMENT: "volumeAttachments", VOLUME: "volumes"}.get(kind, kind + "s")


def _settle(store: Store, wr: Resource) -> Resource:
    """Derive a work request's status from the target's recorded transitions since it was accepted."""
    if wr["status"] in ("SUCCEEDED", "FAILED"):
        return wr
    kind, rid = wr["_target"]
    store.find(kind, rid)  # apply due transitions
    for event in store.history:
        if event["kind"] != kind or event["id"] != rid or event["time"] < wr["_created"]:
            continue
        state = event["state"]
        if state in wr["_succeed"] or state in wr["_fail"]:
            wr["status"] = "SUCCEEDED" if state in wr["_succeed"] else "FAILED"
            wr["percentComplete"] = 100.0
            wr["timeStarted"] = wr["timeAccepted"]
            wr["timeFinished"] = ids.now_iso(event["time"])
            store.touch()
            return wr
    wr["status"] = "IN_PROGRESS"
    wr["percentComplete"] = 50.0
    wr["timeStarted"] = wr["timeAccepted"]
    return wr


def _work_request_of(request: Request) -> Resource:
    store = request.emulator.store
    return _settle(store, store.get(WORK_REQUEST, request.params["workRequestId"], "WorkRequest"))


@service.route("GET", API + "/workRequests/{workRequestId}", "GetWorkRequest")
def get_work_request(request: Request) -> Response:
    return respond(_work_request_of(request))


@service.route("GET", API + "/workRequests", "ListWorkRequests")
def list_work_requests(request: Request) -> Response:
    store = request.emulator.store
    items = in_compartment(request, WORK_REQUEST)
    resource_id = request.query.get("resourceId")
    if resource_id:
        items = [wr for wr in items if wr["_target"][1] == resource_id]
    for wr in items:
        _settle(store, wr)
    summaries = [{k: v for k, v in wr.items() if k != "resources"} for wr in items]
    return listing(request, summaries, sortable=False)


@service.route("GET", API + "/workRequests/{workRequestId}/errors", "ListWorkRequestErrors")
def list_work_request_errors(request: Request) -> Response:
    wr = _work_request_of(request)
    errors = []
    if wr["status"] == "FAILED":
        errors.append({"code": "InternalError", "message": f"{wr['operationType']} did not complete", "timestamp": wr["timeFinished"]})
    return paged(request, errors)


@service.route("GET", API + "/workRequests/{workRequestId}/logs", "ListWorkRequestLogs")
def list_work_request_logs(request: Request) -> Response:
    wr = _work_request_of(request)
    logs = [{"message": f"{wr['operationType']} accepted", "timestamp": wr["timeAccepted"]}]
    if wr["timeFinished"]:
        logs.append({"message": f"{wr['operationType']} {wr['status'].lower()}", "timestamp": wr["timeFinished"]})
    return paged(request, logs)


# --- launch validation --------------------------------------------------------------
def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number")
    return float(value)


def _shape_config(shape: Shape, config: Any) -> dict[str, Any]:
    if not shape.flexible:
        if config:
            raise invalid(f"shapeConfig cannot be used with the fixed shape {shape.name}")
        return shape.config(shape.ocpus, shape.memory, None)
    if not isinstance(config, dict) or not config:
        raise invalid(f"The flexible shape {shape.name} requires shapeConfig with ocpus and memoryInGBs")
    if config.get("ocpus") is not None:
        ocpus = _number(config["ocpus"], "shapeConfig.ocpus")
    elif config.get("vcpus") is not None:
        ocpus = _number(config["vcpus"], "shapeConfig.vcpus") / shape.vcpus_per_ocpu
    else:
        raise missing("shapeConfig.ocpus")
    if ocpus != int(ocpus) or not 1 <= ocpus <= shape.max_ocpus:
        raise invalid(f"shapeConfig.ocpus for {shape.name} must be a whole number from 1 to {shape.max_ocpus}, got {ocpus:g}")
    if config.get("memoryInGBs") is None:
        memory = min(shape.max_memory, ocpus * shape.default_memory_per_ocpu)
    else:
        memory = _number(config["memoryInGBs"], "shapeConfig.memoryInGBs")
    per_ocpu = memory / ocpus
    if not (shape.min_memory_per_ocpu <= per_ocpu <= shape.max_memory_per_ocpu and 1 <= memory <= shape.max_memory):
        raise invalid(
            f"shapeConfig.memoryInGBs for {shape.name} must be {shape.min_memory_per_ocpu:g} to {shape.max_memory_per_ocpu:g} GB "
            f"per OCPU and at most {shape.max_memory:g} GB, got {memory:g} GB for {ocpus:g} OCPUs"
        )
    baseline = config.get("baselineOcpuUtilization")
    if baseline is not None and (baseline not in BASELINES or shape.arch != "x86_64"):
        raise invalid(f"baselineOcpuUtilization {baseline!r} is not supported for {shape.name}")
    return shape.config(ocpus, memory, baseline)


def _source(body: dict[str, Any], shape: Shape) -> tuple[dict[str, Any], str]:
    source = body.get("sourceDetails")
    if source is None and body.get("imageId"):
        source = {"sourceType": "image", "imageId": body["imageId"]}
    if not source:
        raise missing("sourceDetails")
    if not isinstance(source, dict):
        raise invalid("sourceDetails must be an object")
    if source.get("sourceType") != "image":
        raise invalid(f"sourceDetails.sourceType must be image in the emulator, got {source.get('sourceType')!r}")
    image_id = required(source, "imageId", "sourceDetails.imageId")
    image = _find_image(image_id)
    if image["_arch"] != shape.arch:
        raise invalid(f"Shape {shape.name} is not compatible with image {image['displayName']}")
    boot_size = source.get("bootVolumeSizeInGBs")
    if boot_size is not None and (isinstance(boot_size, bool) or not isinstance(boot_size, int) or not 50 <= boot_size <= 32768):
        raise invalid("sourceDetails.bootVolumeSizeInGBs must be an integer from 50 to 32768")
    vpus = source.get("bootVolumeVpusPerGB")
    if vpus is not None and (isinstance(vpus, bool) or not isinstance(vpus, int) or not 10 <= vpus <= 120 or vpus % 10):
        raise invalid("sourceDetails.bootVolumeVpusPerGB must be one of 10, 20, ... 120")
    out = {
        "sourceType": "image",
        "imageId": image_id,
        "bootVolumeSizeInGBs": boot_size,
        "bootVolumeVpusPerGB": vpus,
        "kmsKeyId": source.get("kmsKeyId"),
        "instanceSourceImageFilterDetails": None,
    }
    return out, image_id


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise invalid("metadata must map strings to strings")
    extended = body.get("extendedMetadata") or {}
    if len(json.dumps(metadata)) + len(json.dumps(extended)) > METADATA_MAX_BYTES:
        raise invalid(f"metadata and extendedMetadata together may be at most {METADATA_MAX_BYTES} bytes")
    if "user_data" in metadata:
        try:
            base64.b64decode(metadata["user_data"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid("metadata.user_data must be base64-encoded") from None
    return dict(metadata)


def _instance_options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("instanceOptions") or {}
    if not isinstance(options, dict):
        raise invalid("instanceOptions must be an object")
    return {"areLegacyImdsEndpointsDisabled": optional_bool(options, "areLegacyImdsEndpointsDisabled")}


def _agent_config(body: dict[str, Any]) -> dict[str, Any]:
    config = body.get("agentConfig") or {}
    if not isinstance(config, dict):
        raise invalid("agentConfig must be an object")
    plugins = config.get("pluginsConfig")
    if plugins is not None:
        if not isinstance(plugins, list):
            raise invalid("agentConfig.pluginsConfig must be a list")
        for plugin in plugins:
            if not isinstance(plugin, dict) or not plugin.get("name"):
                raise missing("agentConfig.pluginsConfig.name")
            if plugin.get("desiredState") not in PLUGIN_STATES:
                raise invalid(f"agentConfig.pluginsConfig.desiredState must be ENABLED or DISABLED for {plugin['name']}")
        plugins = [{"name": p["name"], "desiredState": p["desiredState"]} for p in plugins]
    return {
        "isMonitoringDisabled": optional_bool(config, "isMonitoringDisabled"),
        "isManagementDisabled": optional_bool(config, "isManagementDisabled"),
        "areAllPluginsDisabled": optional_bool(config, "areAllPluginsDisabled"),
        "pluginsConfig": plugins,
    }


def _vnic_details(body: dict[str, Any]) -> dict[str, Any]:
    details = body.get("createVnicDetails") or {}
    if not isinstance(details, dict):
        raise invalid("createVnicDetails must be an object")
    subnet = details.get("subnetId") or body.get("subnetId")
    if not subnet:
        raise missing("createVnicDetails.subnetId")
    if not isinstance(subnet, str) or not subnet.startswith("ocid1.subnet."):
        raise invalid(f"createVnicDetails.subnetId is not a subnet OCID: {subnet!r}")
    return dict(details, subnetId=subnet)


# --- instances ----------------------------------------------------------------------
def _instance(request: Request) -> Resource:
    return request.emulator.store.get(INSTANCE, request.params["instanceId"], "Instance")


@service.route("POST", API + "/instances", "LaunchInstance")
def launch_instance(request: Request) -> Response:
    em = request.emulator
    store = em.store
    body = body_of(request)
    ad = require_ad(request, body.get("availabilityDomain"))
    compartment = require_compartment(body.get("compartmentId"))
    shape_name = required(body, "shape")
    shape = SHAPES.get(shape_name)
    if shape is None:
        raise invalid(f"Invalid shape {shape_name!r}; the emulator offers {', '.join(SHAPES)}")
    shape_config = _shape_config(shape, body.get("shapeConfig"))
    source, image_id = _source(body, shape)
    vnic_details = _vnic_details(body)
    metadata = _metadata(body)
    agent_config = _agent_config(body)
    instance_options = _instance_options(body)
    fault_domain = optional_str(body, "faultDomain") or "FAULT-DOMAIN-1"
    if fault_domain not in ("FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3"):
        raise invalid(f"Invalid faultDomain {fault_domain!r}")
    display_name = optional_str(body, "displayName") or "instance-" + time.strftime("%Y%m%d-%H%M", time.gmtime())
    freeform = tags(body, "freeformTags")
    defined = tags(body, "definedTags")

    now = time.time()
    iid = ids.ocid("instance")
    home = instance_home(em.data_dir, iid)
    home.mkdir(parents=True, exist_ok=True)
    instance: Resource = {
        "availabilityDomain": ad,
        "capacityReservationId": None,
        "compartmentId": compartment,
        "clusterPlacementGroupId": None,
        "dedicatedVmHostId": None,
        "definedTags": defined,
        "displayName": display_name,
        "extendedMetadata": body.get("extendedMetadata") or {},
        "faultDomain": fault_domain,
        "freeformTags": freeform,
        "id": iid,
        "imageId": image_id,
        "ipxeScript": None,
        "launchMode": "PARAVIRTUALIZED",
        "launchOptions": _launch_options(),
        "instanceOptions": instance_options,
        "availabilityConfig": {"isLiveMigrationPreferred": None, "recoveryAction": "RESTORE_INSTANCE"},
        "preemptibleInstanceConfig": None,
        "lifecycleState": "PROVISIONING",
        "metadata": metadata,
        "region": ids.REGION_KEY,
        "shape": shape.name,
        "shapeConfig": shape_config,
        "isCrossNumaNode": False,
        "sourceDetails": source,
        "systemTags": {},
        "timeCreated": ids.now_iso(now),
        "agentConfig": agent_config,
        "timeMaintenanceRebootDue": None,
        "platformConfig": None,
        "instanceConfigurationId": None,
        "_created": now,
        "_home": str(home),
    }
    store.add(INSTANCE, instance)
    store.schedule(INSTANCE, instance, [(em.delay(1), "RUNNING")])
    _create_vnic(em, instance, vnic_details, now)
    wid = _work_request(
        store, "LaunchInstance", compartment, INSTANCE, instance, "CREATED", now, ("RUNNING",), ("TERMINATING", "TERMINATED")
    )
    return respond(instance, headers={"opc-work-request-id": wid})


def _create_vnic(em: Emulator, instance: Resource, details: dict[str, Any], now: float) -> None:
    store = em.store
    n = len(store.resources.get(VNIC, {}))
    vnic_id = ids.ocid("vnic")
    private_ip = details.get("privateIp") or f"10.0.{1 + n // 250}.{2 + n % 250}"
    mac = "02:00:17:" + ":".join(f"{b:02X}" for b in hashlib.sha256(vnic_id.encode()).digest()[:3])
    vnic: Resource = {
        "availabilityDomain": instance["availabilityDomain"],
        "compartmentId": instance["compartmentId"],
        "definedTags": {},
        "displayName": details.get("displayName") or instance["displayName"],
        "freeformTags": {},
        "hostnameLabel": details.get("hostnameLabel") or instance["displayName"].lower().replace("_", "-")[:63],
        "id": vnic_id,
        "isPrimary": True,
        "lifecycleState": "PROVISIONING",
        "macAddress": mac,
        "nsgIds": details.get("nsgIds") or [],
        "vlanId": None,
        "privateIp": private_ip,
        "publicIp": None,
        "skipSourceDestCheck": bool(details.get("skipSourceDestCheck", False)),
        "subnetId": details["subnetId"],
        "systemTags": {},
        "timeCreated": ids.now_iso(now),
        "ipv6Addresses": [],
        "routeTableId": None,
        "_created": now,
    }
    store.add(VNIC, vnic)
    store.schedule(VNIC, vnic, [(em.delay(1), "AVAILABLE")])
    attachment: Resource = {
        "availabilityDomain": instance["availabilityDomain"],
        "compartmentId": instance["compartmentId"],
        "displayName": None,
        "id": ids.ocid("vnicattachment"),
        "instanceId": instance["id"],
        "lifecycleState": "ATTACHING",
        "nicIndex": 0,
        "subnetId": details["subnetId"],
        "vlanId": None,
        "timeCreated": ids.now_iso(now),
        "vlanTag": 0,
        "vnicId": vnic_id,
        "_created": now,
    }
    store.add(VNIC_ATTACHMENT, attachment)
    store.schedule(VNIC_ATTACHMENT, attachment, [(em.delay(1), "ATTACHED")])


def terminate(em: Emulator, instance: Resource) -> bool:
    """Terminate an instance and detach what it has. False when it was already going."""
    store = em.store
    if instance["lifecycleState"] in ("TERMINATING", "TERMINATED"):
        return False
    store.set_state(INSTANCE, instance, "TERMINATING")
    store.schedule(INSTANCE, instance, [(em.delay(1), "TERMINATED")])
    for att in attachments_of(store, instance["id"], ("ATTACHING", "ATTACHED", "DETACHING")):
        _detach(em, att)  # a detach stalled by a fault ends with the instance too
    for vatt in [a for a in store.all(VNIC_ATTACHMENT) if a["instanceId"] == instance["id"]]:
        if vatt["lifecycleState"] in ("ATTACHING", "ATTACHED"):
            store.set_state(VNIC_ATTACHMENT, vatt, "DETACHING")
            store.schedule(VNIC_ATTACHMENT, vatt, [(em.delay(0.5), "DETACHED")])
        vnic = store.find(VNIC, vatt["vnicId"])
        if vnic is not None and vnic["lifecycleState"] in ("PROVISIONING", "AVAILABLE"):
            store.set_state(VNIC, vnic, "TERMINATING")
            store.schedule(VNIC, vnic, [(em.delay(0.5), "TERMINATED")])
    em.vms.instance_terminated(instance["id"])
    return True


@service.route("GET", API + "/instances/{instanceId}", "GetInstance")
def get_instance(request: Request) -> Response:
    return respond(_instance(request))


@service.route("GET", API + "/instances", "ListInstances")
def list_instances(request: Request) -> Response:
    return listing(request, in_compartment(request, INSTANCE), ("availabilityDomain", "displayName", "lifecycleState"))


@service.route("DELETE", API + "/instances/{instanceId}", "TerminateInstance")
def terminate_instance(request: Request) -> Response:
    em = request.emulator
    instance = _instance(request)
    check_if_match(request, instance)
    since = time.time()
    headers = {}
    if terminate(em, instance):
        headers["opc-work-request-id"] = _work_request(
            em.store, "TerminateInstance", instance["compartmentId"], INSTANCE, instance, "DELETED", since, ("TERMINATED",)
        )
    return Response.empty(headers=headers)


@service.route("POST", "/_ocisim/instances/{instanceId}/terminate", "AdminTerminateInstance", authenticated=False)
def admin_terminate_instance(request: Request) -> Response:
    """Terminate out of band, as if OCI (host failure) or a person in the console did it."""
    instance = _instance(request)
    terminate(request.emulator, instance)
    return Response.json(public(instance))


# InstanceAction: action -> (allowed from, states now, then (fraction of delay, state) steps)
_ACTIONS: dict[str, tuple[tuple[str, ...], str, list[tuple[float, str]]]] = {
    "STOP": (("RUNNING",), "STOPPING", [(1.0, "STOPPED")]),
    "SOFTSTOP": (("RUNNING",), "STOPPING", [(1.0, "STOPPED")]),
    "START": (("STOPPED",), "STARTING", [(1.0, "RUNNING")]),
    "RESET": (("RUNNING",), "STOPPING", [(0.5, "STARTING"), (1.0, "RUNNING")]),
    "SOFTRESET": (("RUNNING",), "STOPPING", [(0.5, "STARTING"), (1.0, "RUNNING")]),
    "DIAGNOSTICREBOOT": (("RUNNING",), "STOPPING", [(0.5, "STARTING"), (1.0, "RUNNING")]),
    "SENDDIAGNOSTICINTERRUPT": (("RUNNING",), "RUNNING", []),
}
_ALREADY = {"STOP": "STOPPED", "SOFTSTOP": "STOPPED", "START": "RUNNING"}


@service.route("POST", API + "/instances/{instanceId}", "InstanceAction")
def instance_action(request: Request) -> Response:
    em = request.emulator
    instance = _instance(request)
    check_if_match(request, instance)
    action = required(request.query, "action")
    if action not in _ACTIONS:
        raise invalid(f"Invalid action {action!r}; one of {', '.join(_ACTIONS)}")
    allowed, now_state, steps = _ACTIONS[action]
    state = instance["lifecycleState"]
    if _ALREADY.get(action) == state:
        return respond(instance)
    if state not in allowed:
        raise incorrect_state(f"Instance is {state}; {action} needs it {' or '.join(allowed)}")
    if now_state != state:
        em.store.set_state(INSTANCE, instance, now_state)
        em.store.schedule(INSTANCE, instance, [(em.delay(f), s) for f, s in steps])
    return respond(instance)


@service.route("GET", API + "/vnicAttachments", "ListVnicAttachments")
def list_vnic_attachments(request: Request) -> Response:
    return listing(request, in_compartment(request, VNIC_ATTACHMENT), ("availabilityDomain", "instanceId", "vnicId"), sortable=False)


@service.route("GET", API + "/vnics/{vnicId}", "GetVnic")
def get_vnic(request: Request) -> Response:
    return respond(request.emulator.store.get(VNIC, request.params["vnicId"], "Vnic"))


@service.route("GET", API + "/instances/{instanceId}/devices", "ListInstanceDevices")
def list_instance_devices(request: Request) -> Response:
    store = request.emulator.store
    instance = _instance(request)
    used = _used_devices(store, instance["id"])
    devices = [{"name": d, "isAvailable": d not in used} for d in DEVICES]
    available = request.query.get("isAvailable")
    if available:
        if available not in ("true", "false"):
            raise invalid("isAvailable must be true or false")
        devices = [d for d in devices if d["isAvailable"] == (available == "true")]
    name = request.query.get("name")
    if name:
        devices = [d for d in devices if d["name"] == name]
    if request.query.get("sortOrder") == "DESC":
        devices.reverse()
    return paged(request, devices)


# --- images and shapes --------------------------------------------------------------
@service.route("GET", API + "/images", "ListImages")
def list_images(request: Request) -> Response:
    require_compartment(request.query.get("compartmentId"))
    items = list(IMAGES)
    shape_name = request.query.get("shape")
    if shape_name:
        shape = SHAPES.get(shape_name)
        items = [i for i in items if shape is not None and i["_arch"] == shape.arch]
    return listing(request, items, ("displayName", "operatingSystem", "operatingSystemVersion", "lifecycleState"))


@service.route("GET", API + "/images/{imageId}", "GetImage")
def get_image(request: Request) -> Response:
    return respond(_find_image(request.params["imageId"]))


@service.route("GET", API + "/shapes", "ListShapes")
def list_shapes(request: Request) -> Response:
    require_compartment(request.query.get("compartmentId"))
    ad = request.query.get("availabilityDomain")
    if ad:
        require_ad(request, ad)
    shapes = list(SHAPES.values())
    image_id = request.query.get("imageId")
    if image_id:
        arch = _find_image(image_id)["_arch"]
        shapes = [s for s in shapes if s.arch == arch]
    wanted = request.query.get("shape")
    if wanted:
        shapes = [s for s in shapes if s.name == wanted]
    return paged(request, [s.describe() for s in shapes])


# --- volume attachments -------------------------------------------------------------
ATTACH_TYPES = ("paravirtualized", "iscsi", "service_determined")


def _attachment(request: Request) -> Resource:
    return request.emulator.store.get(VOLUME_ATTACHMENT, request.params["volumeAttachmentId"], "VolumeAttachment")


def _detach(em: Emulator, attachment: Resource, request: Request | None = None) -> None:
    em.store.set_state(VOLUME_ATTACHMENT, attachment, "DETACHING")
    em.store.schedule(VOLUME_ATTACHMENT, attachment, _transition(request, em.delay(0.5), "DETACHED"))


def _transition(request: Request | None, delay: float, state: str) -> list[tuple[float, str]]:
    """The next state of an attachment, unless a ``stall`` fault on the call holds it (faults.py)."""
    rule = request.fault if request is not None else None
    if rule is None:
        return [(delay, state)]
    if not rule.seconds:
        return []  # stalled for good (a terminate ends it)
    return [(rule.seconds, rule.state or state)]


@service.route("POST", API + "/volumeAttachments", "AttachVolume")
def attach_volume(request: Request) -> Response:
    em = request.emulator
    store = em.store
    body = body_of(request)
    kind = required(body, "type")
    if kind not in ATTACH_TYPES:
        raise invalid(f"Invalid attachment type {kind!r}; the emulator supports {', '.join(ATTACH_TYPES)}")
    attachment_type = "paravirtualized" if kind == "service_determined" else kind
    instance_id = required(body, "instanceId")
    volume_id = required(body, "volumeId")
    device = optional_str(body, "device")
    if device is not None and device not in DEVICES:
        raise invalid(f"Invalid device {device!r}; consistent device paths are {DEVICES[0]} .. {DEVICES[-1]}")
    read_only = optional_bool(body, "isReadOnly")
    shareable = optional_bool(body, "isShareable")
    display_name = optional_str(body, "displayName") or default_name("volumeattachment")

    instance = store.get(INSTANCE, instance_id, "Instance")
    volume = store.get(VOLUME, volume_id, "Volume")
    if instance["lifecycleState"] not in ("RUNNING", "STOPPED"):
        raise incorrect_state(f"Instance {instance_id} is {instance['lifecycleState']}; volumes attach to RUNNING or STOPPED instances")
    if volume["lifecycleState"] != "AVAILABLE":
        raise incorrect_state(f"Volume {volume_id} is {volume['lifecycleState']}; it must be AVAILABLE to attach")
    if volume["availabilityDomain"] != instance["availabilityDomain"]:
        raise invalid(
            f"Volume {volume_id} is in {volume['availabilityDomain']} and instance {instance_id} in {instance['availabilityDomain']}; "
            "they must be in the same availability domain"
        )
    existing = active_attachments(store, volume_id)
    if any(a["instanceId"] == instance_id for a in existing):
        raise conflict(f"Volume {volume_id} is already attached to instance {instance_id}")
    if existing and not (shareable and all(a["isShareable"] for a in existing)):
        raise conflict(f"Volume {volume_id} is already attached to instance {existing[0]['instanceId']}")
    used = _used_devices(store, instance_id)
    if device is None:
        free = [d for d in DEVICES if d not in used]
        if not free:
            raise conflict(f"Instance {instance_id} has no free device path left")
        device = free[0]
    elif device in used:
        raise conflict(f"Device {device} is already in use on instance {instance_id}")

    now = time.time()
    attachment: Resource = {
        "attachmentType": attachment_type,
        "availabilityDomain": instance["availabilityDomain"],
        "compartmentId": instance["compartmentId"],
        "device": device,
        "displayName": display_name,
        "id": ids.ocid("volumeattachment"),
        "instanceId": instance_id,
        "isReadOnly": read_only,
        "isShareable": shareable,
        "lifecycleState": "ATTACHING",
        "timeCreated": ids.now_iso(now),
        "volumeId": volume_id,
        "isPvEncryptionInTransitEnabled": False,
        "isEncryptionInTransitEnabled": False,
        "isMultipath": False,
        "iscsiLoginState": None,
        "isVolumeCreatedDuringLaunch": False,
        "_created": now,
    }
    if attachment_type == "iscsi":
        n = len(store.resources.get(VOLUME_ATTACHMENT, {}))
        attachment.update(
            {
                "chapSecret": None,
                "chapUsername": None,
                "ipv4": f"169.254.2.{2 + n % 250}",
                "ipv6": None,
                "iqn": f"iqn.2015-12.com.oracleiaas:{hashlib.sha256(volume_id.encode()).hexdigest()[:36]}",
                "port": 3260,
                "multipathDevices": None,
                "iscsiLoginState": "UNKNOWN",
            }
        )
    store.add(VOLUME_ATTACHMENT, attachment)
    store.schedule(VOLUME_ATTACHMENT, attachment, _transition(request, em.delay(1), "ATTACHED"))
    wid = _work_request(
        store,
        "AttachVolume",
        instance["compartmentId"],
        VOLUME_ATTACHMENT,
        attachment,
        "CREATED",
        now,
        ("ATTACHED",),
        ("DETACHING", "DETACHED"),
    )
    return respond(attachment, headers={"opc-work-request-id": wid})


@service.route("GET", API + "/volumeAttachments/{volumeAttachmentId}", "GetVolumeAttachment")
def get_volume_attachment(request: Request) -> Response:
    return respond(_attachment(request))


@service.route("GET", API + "/volumeAttachments", "ListVolumeAttachments")
def list_volume_attachments(request: Request) -> Response:
    return listing(request, in_compartment(request, VOLUME_ATTACHMENT), ("availabilityDomain", "instanceId", "volumeId"), sortable=False)


@service.route("DELETE", API + "/volumeAttachments/{volumeAttachmentId}", "DetachVolume")
def detach_volume(request: Request) -> Response:
    em = request.emulator
    attachment = _attachment(request)
    check_if_match(request, attachment)
    if attachment["lifecycleState"] != "ATTACHED":
        raise incorrect_state(f"Volume attachment is {attachment['lifecycleState']}; only an ATTACHED volume can be detached")
    since = time.time()
    _detach(em, attachment, request)
    wid = _work_request(
        em.store, "DetachVolume", attachment["compartmentId"], VOLUME_ATTACHMENT, attachment, "DELETED", since, ("DETACHED",)
    )
    return Response.empty(headers={"opc-work-request-id": wid})
