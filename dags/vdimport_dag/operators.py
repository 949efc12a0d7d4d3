"""One step-runner task, whichever runner the settings choose: a pod or a local subprocess."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .settings import DagSettings
from .templating import step_arguments, step_labels


def step_operator(step: str, settings: DagSettings, *, arguments: list[str] | None = None, **kwargs: Any) -> Any:
    """The task running ``vdimport-step <step>``: a KubernetesPodOperator pod or, with the local
    runner, a subprocess of the Airflow worker. ``kwargs`` are the task's own (task_id, retries,
    timeouts, trigger rule, ...); ``arguments`` default to an import step's."""
    args = arguments if arguments is not None else step_arguments(step)
    if settings.step_runner == "local":
        from .local_runner import LocalStepOperator

        return LocalStepOperator(
            step=step,
            arguments=args,
            labels=step_labels(step),
            command=settings.local_step_command,
            env_file=settings.local_env_file,
            runner=settings.local_runner,
            image=settings.local_image,
            **kwargs,
        )
    from .pods import kubernetes_step_task

    timeout: timedelta = kwargs["execution_timeout"]
    return kubernetes_step_task(step, settings, timeout.total_seconds(), arguments=args, **kwargs)
