"""vdimport step runner: each import step as an idempotent OCI SDK program."""
