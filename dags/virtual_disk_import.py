"""Import a virtual disk image from OCI Object Storage into an OCI Block Volume.

One task per step of the step runner (``vdimport-step``), in its order. Each task gets the run
id, the import request (this run's params with its conf on top) and the results of the
earlier steps (their XComs) as ``--state``; its own result becomes its XCom.

**Triggering.** The OCI Function triggers a run with a conf
(``{"namespace", "bucket", "object", "etag", "size", "metadata": {...}}``); from the UI, fill
in the params. Empty params are left out of the request, so options in ``metadata`` apply.
The step runner validates the request; the first step fails with a one-line cause.

**Step runner** (``VDIMPORT_STEP_RUNNER``, read when the file is parsed): ``kubernetes``
(default) runs each step as a KubernetesPodOperator pod of the step runner image
(ServiceAccount for workload identity, env from a ConfigMap, labels ``vdimport/run`` and
``vdimport/step`` for ``kubectl logs -l``; failed pods are kept). ``local`` runs the same
command as a subprocess of the Airflow worker, with the worker's environment, the result file
as XCom and the output in the task log: a plain Airflow without Kubernetes (local mode).

**Cleanup never leaks.** ``terminate_worker`` has trigger rule ``all_done_min_one_success``
over ``inspect_object``, ``launch_worker`` and ``detach_volume``: it runs once every step
before it is finished, in whatever state, provided ``inspect_object`` succeeded, which is
exactly when ``launch_worker`` was attempted (including a launch that failed halfway). When
``inspect_object`` fails nothing was made and cleanup is marked upstream_failed. This is not
an Airflow setup/teardown pair on purpose: a teardown is skipped when its setup failed,
which is the "launch failed halfway" case. The steps after cleanup (``tune_volume`` onwards)
need both ``detach_volume`` and ``terminate_worker`` to succeed, so a failure anywhere
reaches the only leaf, ``report``, as upstream_failed, and the run ends failed.

**At most N worker VMs** (``VDIMPORT_MAX_WORKER_VMS``, default 4) through the DAG's
``max_active_runs``: each run has at most one VM, so N active runs mean at most N VMs, and
further runs wait in the *queued* state (uploads queue instead of exhausting quota). An
Airflow pool cannot do this: a pool counts task instances while they are queued or running
(and deferred, if the pool includes deferred tasks), under any executor (LocalExecutor,
KubernetesExecutor), and frees the slot when the task ends. A run holds its VM *between*
tasks too, so with a pool on launch_worker..terminate_worker a third run's launch_worker
takes the slot that a first run's finished launch_worker just released, and three VMs exist.
All step tasks run in the pool ``VDIMPORT_STEP_POOL`` (default ``default_pool``), which an
operator may size to cap concurrently running step pods/processes; it is not the VM cap.
Tasks use weight rule ``upstream``, so steps of runs further along start first. Give the pool
at least as many slots as the VM cap: with fewer, a run holding a VM can wait for a slot while
the VM idles (the soak in ``tests/soak`` checks both limits are reached, neither exceeded).

**Retries and timeouts.** Every step retries (``VDIMPORT_STEP_RETRIES``, cleanup
``VDIMPORT_CLEANUP_RETRIES``) with exponential backoff; each has an execution timeout sized to
its work (``vdimport_dag.steps.STEP_TIMEOUTS``). Steps are idempotent, so a retry or a Clear
never makes a second VM or volume while the run's worker exists. After a failed run,
cleanup has terminated the worker and deleted the unfinished volume: Clear (with downstream)
a failed ``terminate_worker`` or later step to finish the run; to redo the data path, Clear
``launch_worker`` with its downstream tasks (a fresh worker is launched).
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule
from vdimport_dag.settings import load_settings
from vdimport_dag.steps import CLEANUP_STEP, FIRST_STEP, LAST_VM_STEP, LAUNCH_STEP, STEP_ORDER, STEP_TIMEOUTS, step_description
from vdimport_dag.templating import MACROS, step_arguments, step_labels

DAG_ID = "virtual_disk_import"
SETTINGS = load_settings()

_SOURCE_FORMATS = ["qcow2", "vmdk", "vhd", "vhdx", "vdi", "raw", "ova"]

PARAMS: dict[str, Param] = {
    "namespace": Param(
        type="string",
        minLength=1,
        title="Object Storage namespace",
        description="Namespace of the bucket holding the disk image (`oci os ns get`).",
    ),
    "bucket": Param(type="string", minLength=1, title="Bucket", description="Bucket holding the disk image."),
    "object": Param(
        type="string",
        minLength=1,
        title="Object name",
        description="The disk image: qcow2, vmdk, vhd, vhdx, vdi, raw or ova.",
    ),
    "ad_number": Param(
        None,
        type=["null", "integer"],
        enum=[None, 1, 2, 3],
        title="Availability domain",
        description="1, 2 or 3: the availability domain of the volume. Empty: any (another one is tried on 'out of capacity').",
    ),
    "volume_name": Param(
        None,
        type=["null", "string"],
        title="Volume name",
        description="Display name of the block volume. Empty: named after the image.",
    ),
    "vpus_per_gb": Param(
        None,
        type=["null", "integer"],
        enum=[None, *range(0, 130, 10)],
        title="Performance (VPUs/GB)",
        description="Final performance level: 0 (lower cost), 10 (balanced), 20 (higher) ... 120. Empty: 10.",
    ),
    "backup_policy": Param(
        None,
        type=["null", "string"],
        examples=["bronze", "silver", "gold"],
        title="Backup policy",
        description="bronze, silver, gold or a volume backup policy OCID. Empty: none.",
    ),
    "compartment_id": Param(
        None,
        type=["null", "string"],
        title="Compartment OCID",
        description="Compartment of the volume (and the temporary worker). Empty: the configured one.",
    ),
    "source_format": Param(
        None,
        type=["null", "string"],
        enum=[None, *_SOURCE_FORMATS],
        title="Source format",
        description="Override the detected image format. Empty: detect it from the bytes.",
    ),
    "kms_key_id": Param(
        None,
        type=["null", "string"],
        title="Vault key OCID",
        description="Encrypt the volume with this customer-managed key. Empty: Oracle-managed keys.",
    ),
    "verify": Param(
        None,
        type=["null", "boolean"],
        title="Verify",
        description="Compare the volume with the image after writing. Empty: true.",
    ),
    "fsck": Param(
        None,
        type=["null", "string"],
        enum=[None, "off", "check", "strict"],
        title="File system check",
        description="off, check (report problems) or strict (fail on problems). Empty: check.",
    ),
    "tags": Param(
        None,
        type=["null", "object"],
        title="Freeform tags",
        description='Extra freeform tags of the volume as a JSON object, e.g. {"project": "migration"}.',
    ),
    "keep_on_failure": Param(
        None,
        type=["null", "boolean"],
        title="Keep the volume on failure",
        description="Keep a volume whose import failed (for inspection) instead of deleting it. Empty: false.",
    ),
}


def _task_kwargs(step: str) -> dict[str, Any]:
    """What every step task gets, whichever runner runs it."""
    cleanup = step == CLEANUP_STEP
    timeout = SETTINGS.step_timeouts.get(step, STEP_TIMEOUTS[step])
    return {
        "task_id": step,
        "doc_md": step_description(step),
        "execution_timeout": timedelta(seconds=timeout),
        "retries": SETTINGS.cleanup_retries if cleanup else SETTINGS.step_retries,
        "retry_delay": timedelta(seconds=SETTINGS.step_retry_delay_seconds),
        "retry_exponential_backoff": SETTINGS.step_retry_backoff,
        "max_retry_delay": timedelta(seconds=SETTINGS.step_max_retry_delay_seconds),
        "pool": SETTINGS.step_pool,
        "weight_rule": "upstream",
        "trigger_rule": TriggerRule.ALL_DONE_MIN_ONE_SUCCESS if cleanup else TriggerRule.ALL_SUCCESS,
    }


def _step_task(step: str) -> Any:
    kwargs = _task_kwargs(step)
    if SETTINGS.step_runner == "local":
        from vdimport_dag.local_runner import LocalStepOperator

        return LocalStepOperator(
            step=step,
            arguments=step_arguments(step),
            labels=step_labels(step),
            command=SETTINGS.local_step_command,
            env_file=SETTINGS.local_env_file,
            **kwargs,
        )
    from vdimport_dag.pods import kubernetes_step_task

    timeout = kwargs["execution_timeout"].total_seconds()
    return kubernetes_step_task(step, SETTINGS, timeout, **{k: v for k, v in kwargs.items() if k != "task_id"})


with DAG(
    dag_id=DAG_ID,
    dag_display_name="Virtual disk import",
    description="Import a disk image from Object Storage into a checked Block Volume",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=SETTINGS.max_worker_vms,
    is_paused_upon_creation=False,  # runs come from upload events
    params=PARAMS,
    user_defined_macros=MACROS,
    tags=["vdimport"],
) as dag:
    tasks = {step: _step_task(step) for step in STEP_ORDER}
    vm_steps = STEP_ORDER[: STEP_ORDER.index(LAST_VM_STEP) + 1]
    for before, after in pairwise(vm_steps):
        tasks[before] >> tasks[after]
    # Cleanup: after the VM steps, whatever their outcome, once inspect_object succeeded.
    for step in (FIRST_STEP, LAUNCH_STEP, LAST_VM_STEP):
        tasks[step] >> tasks[CLEANUP_STEP]
    # Finishing the volume needs a verified, detached volume and a clean cleanup.
    tail = STEP_ORDER[STEP_ORDER.index(CLEANUP_STEP) + 1 :]
    [tasks[LAST_VM_STEP], tasks[CLEANUP_STEP]] >> tasks[tail[0]]
    for before, after in pairwise(tail):
        tasks[before] >> tasks[after]
