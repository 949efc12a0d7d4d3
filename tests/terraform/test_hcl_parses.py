"""terraform/ parses with HashiCorp's own HCL parser: the syntax half of `terraform validate`.

No terraform binary is available here; @cdktf/hcl2json (tools/hcl2json) runs hashicorp/hcl
compiled to WebAssembly under node, offline. One node process parses every file; each file is
its own test so a syntax error names the file, and the parser's message gives line and column.
The structural tests read python-hcl2's parse, so each file must also read the same to both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tfkit import (
    FIXTURE,
    TERRAFORM,
    HclResult,
    hashicorp_parse,
    hcl2json_declarations,
    hcl_files,
    load_module,
    python_hcl2_declarations,
    tf_files,
)

FILES = hcl_files(TERRAFORM)


def _id(path: Path) -> str:
    return str(path.relative_to(TERRAFORM))


def test_terraform_has_tf_files() -> None:
    """The per-file tests below pass vacuously on an empty directory; this one does not."""
    assert tf_files(TERRAFORM), "terraform/ has no .tf files"


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_file_parses_with_hashicorp_hcl(path: Path, hcl_result: HclResult) -> None:
    """HashiCorp's parser accepts the file (errors read ``file:line,column: summary; detail``)."""
    errors = hcl_result.errors.get(str(path), [])
    assert not errors, "\n".join(errors)
    assert str(path) in hcl_result.parsed


@pytest.mark.parametrize("path", [p for p in FILES if p.suffix == ".tf"], ids=_id)
def test_python_hcl2_reads_the_same_blocks(path: Path, hcl_result: HclResult) -> None:
    """The structural tests trust python-hcl2; it must see the declarations HashiCorp's parser sees."""
    if str(path) not in hcl_result.parsed:
        pytest.fail(f"{_id(path)} does not parse (see test_file_parses_with_hashicorp_hcl)")
    expected = hcl2json_declarations(hcl_result.parsed[str(path)])
    assert python_hcl2_declarations(load_module(path.parent), path) == expected


def test_fixture_parses_with_hashicorp_hcl(hcl_result: HclResult) -> None:
    """The self-tests' miniature stack is valid HCL too (python-hcl2 alone might accept more)."""
    errors = [e for path in hcl_files(FIXTURE) for e in hcl_result.errors.get(str(path), [])]
    assert not errors, "\n".join(errors)
    assert all(str(path) in hcl_result.parsed for path in hcl_files(FIXTURE))


def test_parser_messages_are_attributed(hcl_result: HclResult) -> None:
    """Every line the parser prints on stderr belongs to a file it was given."""
    assert "<unattributed>" not in hcl_result.errors, hcl_result.stderr
    assert (hcl_result.returncode == 0) == (not hcl_result.errors)


def test_a_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    """The harness itself: a broken file fails with its path and line, a good one still parses."""
    good = tmp_path / "good.tf"
    good.write_text('variable "region" {\n  type = string\n}\n', encoding="utf-8")
    broken = tmp_path / "broken.tf"
    broken.write_text('resource "oci_core_vcn" "main" {\n  cidr_blocks = ["10.0.0.0/16"]\n  display_name = \n}\n', encoding="utf-8")
    unclosed = tmp_path / "unclosed.tf"
    unclosed.write_text('locals {\n  a = "x"\n\nresource "x" "y" {}\n', encoding="utf-8")
    result = hashicorp_parse([good, broken, unclosed])
    assert result.returncode == 1
    assert str(good) in result.parsed
    assert str(broken) not in result.parsed and str(unclosed) not in result.parsed
    assert any(re.match(rf"{re.escape(str(broken))}:3,\d+", error) for error in result.errors[str(broken)]), result.errors
    assert any(re.match(rf"{re.escape(str(unclosed))}:1,\d+.*Unclosed configuration block", e) for e in result.errors[str(unclosed)])


def test_large_output_is_complete(tmp_path: Path) -> None:
    """parse.js flushes stdout before it exits: output beyond a pipe's 64 KiB arrives whole."""
    path = tmp_path / "variables.tf"
    path.write_text("".join(f'variable "v{i}" {{\n  description = "{"x" * 200}"\n}}\n' for i in range(600)), encoding="utf-8")
    result = hashicorp_parse([path])
    assert result.returncode == 0, result.stderr
    assert len(result.parsed[str(path)]["variable"]) == 600


def test_python_hcl2_disagreement_is_caught(tmp_path: Path) -> None:
    """The cross-check itself: declarations are compared as HashiCorp's parser lists them."""
    path = tmp_path / "main.tf"
    path.write_text('variable "a" {\n  type = string\n}\nlocals {\n  b = 1\n}\n', encoding="utf-8")
    parsed = hashicorp_parse([path]).parsed[str(path)]
    assert hcl2json_declarations(parsed) == ["local.b", "variable.a"]
    assert python_hcl2_declarations(load_module(tmp_path), path) == ["local.b", "variable.a"]
    assert hcl2json_declarations({**parsed, "output": {"c": [{"value": 1}]}}) != python_hcl2_declarations(load_module(tmp_path), path)
