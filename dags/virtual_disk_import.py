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

**Cleanup never leaks.** ``launch_worker`` is an Airflow *setup* task and ``terminate_worker``
its *teardown*: the teardown runs once the steps before it are done, whatever their outcome,
whenever the launch succeeded; Airflow also runs it (and waits for it before ending the run)
when the run is **marked failed or successful** while it is running. A launch that fails or is
stopped half-way terminates what it launched itself (the teardown does not run for a failed
setup). When ``inspect_object`` fails nothing was made and nothing needs cleaning. What no task
can catch (a run **deleted** while it ran, a killed scheduler, cleanup retries running out) the
scheduled DAG ``vdimport_reaper`` removes. The steps after cleanup (``tune_volume`` onwards)
need both ``detach_volume`` and ``terminate_worker`` to succeed, so a failure anywhere reaches
the only leaf, ``report``, as upstream_failed, and the run ends failed.

**Clear resumes.** Clearing a failed task in the UI (its defaults: with downstream tasks) also
clears the setup and the teardown around it, as Airflow does for setup/teardown pairs, and the
run finishes the import: each step checks that what earlier steps made still holds (the worker
alive, the image downloaded onto *this* worker, the volume existing and attached, written and
checked) and makes it again first when the cleanup removed it, so exactly one volume results.
A volume that is verified and detached is **delivered and final**: clearing any task of a
finished run (``detach_volume``, ``launch_worker``, the whole run) reports "already delivered"
and touches nothing: no worker is launched, nothing is attached, written or detached, VPUs and
backup policy stay as they are. Only attachments this run made are ever detached.

**One run instance, one key.** ``inspect_object`` mints a 128-bit key that names and tags
everything the run makes; clearing tasks keeps it, and a new run that re-uses a deleted run's
id gets a new one, so it can never adopt the earlier run's volume.

**The user learns the outcome.** The last task, ``outcome``, publishes the volume OCID, or the
failed step and its one-line cause, with a link to the run, to the OCI Notifications topic of
the step runner's ``VDIMPORT_NOTIFICATION_TOPIC_ID`` (nothing when unset), and fails when no
volume was delivered. It is the teardown of a no-op setup ``begin`` with
``on_failure_fail_dagrun``: it runs after any failure and when the run is marked failed or
successful, and a run whose import did not deliver a volume ends failed (Airflow alone would
call a run marked failed mid-way a success once its teardown ran: ``report`` is then skipped).

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
its work (``vdimport_dag.steps.STEP_TIMEOUTS``). A step that finds the request or the image
wrong fails at once (no retry): upload a fixed object instead.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param
from vdimport_dag.operators import step_operator
from vdimport_dag.settings import load_settings
from vdimport_dag.steps import CLEANUP_STEP, LAST_VM_STEP, LAUNCH_STEP, STEP_ORDER, STEP_TIMEOUTS, step_description
from vdimport_dag.templating import MACROS, record_failure

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
        enum=[None, 0, 1, 2, 3],
        title="Availability domain",
        description="1, 2 or 3: the availability domain of the volume. 0 or empty: any (another one is tried on 'out of capacity').",
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
        description='Extra freeform tags of the volume as a JSON object, e.g. {"project": "migration"}; at most 5. '
        "The object's other metadata keys become tags too; these win over them.",
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
        "on_failure_callback": record_failure,  # the cause, for the outcome message
    }


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
    tasks = {step: step_operator(step, SETTINGS, **_task_kwargs(step)) for step in STEP_ORDER}
    vm_steps = STEP_ORDER[: STEP_ORDER.index(LAST_VM_STEP) + 1]
    for before, after in pairwise(vm_steps):
        tasks[before] >> tasks[after]
    # Setup and teardown: cleared together with any task between them, and the teardown runs
    # after failures and when the run is marked failed or successful (a failed launch cleans
    # up after itself). Its trigger rule is Airflow's ALL_DONE_SETUP_SUCCESS.
    tasks[LAUNCH_STEP].as_setup()
    tasks[LAST_VM_STEP] >> tasks[CLEANUP_STEP].as_teardown(setups=tasks[LAUNCH_STEP])
    # Finishing the volume needs a verified, detached volume and a clean cleanup.
    tail = STEP_ORDER[STEP_ORDER.index(CLEANUP_STEP) + 1 :]
    [tasks[LAST_VM_STEP], tasks[CLEANUP_STEP]] >> tasks[tail[0]]
    for before, after in pairwise(tail):
        tasks[before] >> tasks[after]
    # The outcome, whatever happened, also when the run is marked failed or successful: a
    # teardown (of a no-op setup before everything) that fails when no volume was delivered, so
    # the run's state tells the truth, and a Clear anywhere brings it along to tell the new one.
    begin = EmptyOperator(task_id="begin", doc_md="Nothing to do: the setup whose teardown is `outcome`.")
    outcome = step_operator(
        "outcome",
        SETTINGS,
        arguments=["outcome", "--state", "{{ vdimport_outcome(ti, params, dag_run) }}"],
        task_id="outcome",
        doc_md=(
            "Publish the run's outcome (volume OCID, or the failed step and its cause) to OCI Notifications "
            "when a topic is configured; fail when the import did not deliver a volume."
        ),
        execution_timeout=timedelta(minutes=15),
        retries=SETTINGS.step_retries,
        retry_delay=timedelta(seconds=SETTINGS.step_retry_delay_seconds),
        pool=SETTINGS.step_pool,
        weight_rule="upstream",
    )
    begin.as_setup() >> tasks[STEP_ORDER[0]]
    tasks[tail[-1]] >> outcome.as_teardown(setups=begin, on_failure_fail_dagrun=True)
