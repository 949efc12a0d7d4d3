"""images/*/Dockerfile: pinned bases, hash-checked installs, non-root, no secrets, the right entry point.

Pinning policy: every base image has a full version tag (``python:3.11.17-slim-bookworm``) and
the ``@sha256:<digest>`` of its image index: a tag is re-pushed when Debian updates, a digest
is not, so OCI DevOps builds exactly the base the image was reviewed against. The digest is the
one public projects pin for that tag (no registry is reachable here to look it up); a wrong one
fails the build at ``FROM``, never silently.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from deploykit import REPO, Dockerfile, Instruction, load_yaml, parse_dockerfile, substitute
from packaging.specifiers import SpecifierSet

IMAGES = ["worker", "function"]
SECRET_NAME = re.compile(r"PASSW|SECRET|TOKEN|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|FERNET|(^|_)KEY($|_)", re.I)
SECRET_VALUE = re.compile(r"-----BEGIN|ocid1\.(credential|vaultsecret|key)\.|[A-Za-z0-9+/]{40,}={0,2}|://[^/\s:@]+:[^/\s@]+@")


@pytest.fixture(scope="module", params=IMAGES)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(REPO / "images" / request.param / "Dockerfile")


def test_parser_reads_continuations_args_and_stages(tmp_path: Path) -> None:
    """The reader the checks rely on: global ARG into FROM, stage names, joined lines."""
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11.17-slim\n"
        "FROM ${BASE} AS build\n"
        "RUN a \\\n  # note\n  && b\n"
        "FROM $BASE\n"
        "USER 1:1\n"
    )
    parsed = parse_dockerfile(path)
    assert [(s.base, s.name) for s in parsed.stages] == [("python:3.11.17-slim", "build"), ("python:3.11.17-slim", None)]
    assert parsed.stages[0].instructions[0].args == "a  && b"
    assert parsed.final.all("USER")[0].args == "1:1"


def test_every_base_image_is_pinned_to_a_full_version(dockerfile: Dockerfile) -> None:
    """No `latest`, no floating `3.11-slim`, no tag alone: a rebuild must not silently change Python or Debian."""
    stage_names = {s.name for s in dockerfile.stages if s.name}
    for stage in dockerfile.stages:
        if stage.base in stage_names:
            continue
        assert "$" not in stage.base, f"unresolved ARG in FROM {stage.base}"
        match = re.fullmatch(
            r"(?P<repo>[\w.\-/:]+?):(?P<tag>[\w.\-]+)(@sha256:[0-9a-f]{64})?|(?P<digest_only>[\w.\-/]+@sha256:[0-9a-f]{64})", stage.base
        )
        assert match, f"{stage.base}: no tag or digest"
        assert "@sha256:" in stage.base, f"{stage.base}: pinned by tag only, not by digest"
        if not match["digest_only"]:
            assert re.match(r"\d+\.\d+\.\d+(-|$)", match["tag"]), f"{stage.base}: tag is not a full version"


def test_base_python_satisfies_the_packages_requires_python(dockerfile: Dockerfile) -> None:
    """The image's Python is one the package declares it supports."""
    project = tomllib.loads((dockerfile.context / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    versions = {re.search(r":(\d+\.\d+\.\d+)", s.base)[1] for s in dockerfile.stages if s.base.startswith("python:")}  # type: ignore[index]
    assert versions and all(v in SpecifierSet(project["requires-python"]) for v in versions)


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    """Numeric, so Kubernetes' runAsNonRoot can verify it; last, so nothing after runs as root."""
    users = dockerfile.final.all("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1].args
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1].args
    last_user = max(i.line for i in users)
    assert all(i.line < last_user for i in dockerfile.final.all("RUN")), "RUN after the final USER"


def _settings(instruction: Instruction) -> list[tuple[str, str]]:
    """NAME=value pairs of an ENV, ARG or LABEL (also the legacy `ENV NAME value`)."""
    words = shlex.split(instruction.args)
    if instruction.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [(w.partition("=")[0], w.partition("=")[2]) for w in words]


def test_no_secrets_in_env_arg_or_label(dockerfile: Dockerfile) -> None:
    """Anything in ENV, ARG or LABEL is readable by whoever can pull the image."""
    found = []
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("ENV", "ARG", "LABEL"):
                for name, value in _settings(instruction):
                    if SECRET_NAME.search(name) or SECRET_VALUE.search(_without_digests(value)):
                        found.append(f"line {instruction.line}: {name}")
    for name, value in dockerfile.global_args.items():
        if SECRET_NAME.search(name) or SECRET_VALUE.search(_without_digests(value)):
            found.append(f"ARG {name}")
    assert found == []


def _without_digests(value: str) -> str:
    """An image reference's ``@sha256:<hex>`` is public and looks like a key to the pattern."""
    return re.sub(r"@sha256:[0-9a-f]{64}\b", "", value)


def test_secret_check_is_not_vacuous() -> None:
    """The patterns catch the usual shapes of a baked-in credential."""
    assert SECRET_NAME.search("AIRFLOW_PASSWORD") and SECRET_NAME.search("OCI_API_KEY") and SECRET_NAME.search("KEY")
    assert SECRET_VALUE.search("https://user:hunter2@example.com") and SECRET_VALUE.search("-----BEGIN RSA PRIVATE KEY-----")
    assert not SECRET_NAME.search("PYTHONDONTWRITEBYTECODE") and not SECRET_NAME.search("VDIMPORT_AUTH")
    assert not SECRET_VALUE.search(_without_digests("python:3.11@sha256:" + "ab" * 32))
    assert SECRET_VALUE.search(_without_digests("python:3.11@sha256:" + "ab" * 32 + " " + "Qk" * 30))


def test_files_come_in_by_copy_of_named_paths_only(dockerfile: Dockerfile) -> None:
    """No ADD (remote URLs, auto-extraction) and no `COPY .`, which would take stray files (.env, keys) along."""
    for stage in dockerfile.stages:
        assert not stage.all("ADD"), "ADD used; COPY named files instead"
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            if copy.args.startswith("--from="):
                continue
            for source in words[:-1]:
                assert source not in (".", "./", "*"), f"line {copy.line} copies the whole context"
                assert (dockerfile.context / source).exists(), f"line {copy.line}: {source} is not in the build context"


def _pip_installs(dockerfile: Dockerfile) -> list[list[str]]:
    runs = [substitute(r.args, dockerfile.global_args) for s in dockerfile.stages for r in s.all("RUN")]
    commands = [c.strip() for run in runs for c in re.split(r"&&|;", run)]
    return [shlex.split(c) for c in commands if re.search(r"\bpip3? install\b", c)]


def test_dependencies_install_only_with_hash_checking(dockerfile: Dockerfile) -> None:
    """Third-party packages only from a fully hashed lock; the project itself without deps."""
    installs = _pip_installs(dockerfile)
    assert installs
    locked = 0
    for words in installs:
        if "--require-hashes" in words:
            lock = dockerfile.context / words[words.index("-r") + 1]
            requirements = [
                line
                for line in re.split(r"(?<!\\)\n", lock.read_text(encoding="utf-8"))
                if line.strip() and not line.lstrip().startswith("#")
            ]
            assert requirements and all("--hash=sha256:" in line for line in requirements), lock
            locked += 1
        else:
            assert "--no-deps" in words and words[-1] == ".", f"unhashed install: {' '.join(words)}"
    assert locked == 1


def _entrypoint(dockerfile: Dockerfile) -> list[str]:
    (entry,) = dockerfile.final.all("ENTRYPOINT")
    argv = entry.exec_form()
    assert argv, "ENTRYPOINT must be exec form (signals reach the program, no shell)"
    assert not dockerfile.final.all("CMD")
    return argv


def test_worker_entrypoint_is_the_step_runner_console_script() -> None:
    """`vdimport-step <step> ...`: the KubernetesPodOperator passes only the arguments."""
    dockerfile = parse_dockerfile(REPO / "images" / "worker" / "Dockerfile")
    argv = _entrypoint(dockerfile)
    assert argv == ["vdimport-step"]
    scripts = tomllib.loads((dockerfile.context / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module, _, function = scripts["vdimport-step"].partition(":")
    source = dockerfile.context / (module.replace(".", "/") + ".py")
    assert function in {n.name for n in ast.parse(source.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}
    env = " ".join(i.args for i in dockerfile.final.all("ENV"))
    assert "/opt/vdimport/bin" in env  # where the venv installed the script


def test_function_entrypoint_is_fdk_serving_func_handler() -> None:
    """fdk runs func.py's `handler`; func.yaml builds from this Dockerfile (runtime docker)."""
    dockerfile = parse_dockerfile(REPO / "images" / "function" / "Dockerfile")
    fdk, script, handler = _entrypoint(dockerfile)
    assert fdk == "/opt/function/bin/fdk"
    assert any("/opt/function" in s and "venv" in s for s in (substitute(r.args, {}) for r in dockerfile.stages[0].all("RUN")))
    assert "fdk" in tomllib.loads((dockerfile.context / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    copies = [shlex.split(c.args) for c in dockerfile.final.all("COPY") if not c.args.startswith("--")]
    workdir = dockerfile.final.all("WORKDIR")[-1].args
    assert any(words[0] == Path(script).name and words[-1] in ("./", workdir, f"{workdir}/") for words in copies)
    assert Path(script).parent == Path(workdir)
    tree = ast.parse((dockerfile.context / Path(script).name).read_text(encoding="utf-8"))
    assert handler in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert load_yaml(dockerfile.context / "func.yaml")["runtime"] == "docker"


def test_both_images_share_one_base() -> None:
    """One Python for the step runner and the function, the one the dev environment locks."""
    bases = {json.dumps(parse_dockerfile(REPO / "images" / i / "Dockerfile").global_args) for i in IMAGES}
    assert len(bases) == 1
