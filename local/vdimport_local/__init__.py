"""vdimport local mode: an OCI API emulator and the tooling that runs the pipeline on one machine."""
