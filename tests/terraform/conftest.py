"""Fixtures of the Terraform tests (helpers in ``tfkit.py``): each parser runs once per session."""

from __future__ import annotations

import shutil

import pytest
from tfkit import FIXTURE, HCL2JSON, TERRAFORM, HclResult, Module, hashicorp_parse, hcl_files, load_module, tf_files


@pytest.fixture(scope="session")
def hcl_result() -> HclResult:
    """terraform/'s HCL files (and the self-tests' fixture) through HashiCorp's parser, one node
    process for all of them."""
    if shutil.which("node") is None or not (HCL2JSON.parent / "node_modules" / "@cdktf" / "hcl2json").is_dir():
        pytest.fail("node or tools/hcl2json/node_modules is missing: run `make setup`")
    return hashicorp_parse(hcl_files(TERRAFORM) + hcl_files(FIXTURE))


@pytest.fixture(scope="session")
def module() -> Module:
    """The root module terraform/ as python-hcl2 reads it; an empty terraform/ is a failure."""
    if not tf_files(TERRAFORM):
        pytest.fail("terraform/ has no .tf files")
    return load_module(TERRAFORM)
