"""vdimport OCI Function: an Object Storage object-created event becomes a ``virtual_disk_import`` DAG run.

``func.py`` (the Fn entry point) only calls :func:`vdimport_function.handler.handler`.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
