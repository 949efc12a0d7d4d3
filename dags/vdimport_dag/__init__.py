"""Helpers of the ``virtual_disk_import`` DAG: settings, step table, templates, the local runner.

Kept next to the DAG file (Airflow puts the DAGs folder on ``sys.path``) and excluded from DAG
parsing by ``.airflowignore``. Nothing here imports the step runner package (``vdimport_worker``):
the Airflow image does not have it, and the DAG only knows step names, order and the CLI.
"""
