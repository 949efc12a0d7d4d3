"""Helpers of the Terraform tests: the two parsers, a model of one module, and the checks.

No terraform binary (nor the providers' schemas) is available offline, so these stand in for
``terraform validate``: HashiCorp's own HCL parser (tools/hcl2json, Go compiled to WebAssembly)
proves the syntax, python-hcl2 gives the structure the checks below read. Each check is a
function of a module directory that returns its problems as strings, so a test asserts ``== []``
and a self-test can show the same function catching a mutated copy.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import yaml
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
HCL2JSON = REPO / "tools" / "hcl2json" / "parse.js"
VDIMPORT_VALUES = REPO / "charts" / "vdimport" / "values.yaml"
OCI_RESOURCE_TYPES = Path(__file__).resolve().parent / "oci_resource_types.txt"
# A miniature stack that passes every check; the self-tests mutate copies of it.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stack"

# The namespace the step pods run in: README.md and the chart's values.yaml install the chart
# with `helm install vdimport charts/vdimport -n vdimport`.
STEP_NAMESPACE = "vdimport"
# Where the step pods' ServiceAccount name is defined (the one definition; the policy repeats it).
SERVICE_ACCOUNT_KEY = "stepRunner.serviceAccount.name"

BLOCK_KINDS = {"terraform", "provider", "variable", "locals", "resource", "data", "module", "output", "moved", "import", "removed", "check"}
LABELS = {"variable": 1, "resource": 2, "data": 2, "module": 1, "output": 1, "provider": 1, "check": 1}

# Resource types outside the OCI provider, none of which has OCI's freeform_tags (Kubernetes
# objects carry labels, the rest are local to Terraform). A type in neither this set nor
# oci_resource_types.txt fails the tag check until it is classified here.
UNTAGGED_NON_OCI = {
    "helm_release",
    "kubernetes_namespace",
    "kubernetes_namespace_v1",
    "kubernetes_secret",
    "kubernetes_secret_v1",
    "kubernetes_config_map",
    "kubernetes_config_map_v1",
    "kubernetes_service_account",
    "kubernetes_service_account_v1",
    "kubernetes_manifest",
    "null_resource",
    "terraform_data",
    "random_bytes",
    "random_integer",
    "random_pet",
    "random_shuffle",
    "random_uuid",
    "random_password",
    "random_string",
    "random_id",
    "tls_private_key",
    "time_sleep",
    "local_file",
    "local_sensitive_file",
}

# Statements `in tenancy` that are acceptable, as (verb regex, resource type): each grants
# a resource type that exists only at the tenancy level, read-only. Nothing else the import
# pipeline needs (objects, buckets, instances, volumes, secrets, repos, functions, clusters)
# is tenancy-level: those statements name the compartment.
TENANCY_ALLOWLIST: dict[tuple[str, str], str] = {
    ("inspect|read", "objectstorage-namespaces"): "GetNamespace: the Object Storage namespace belongs to the tenancy; read-only",
}

# Outputs a user needs after `terraform apply`, as (what, output-name regex). Names are free;
# each need is met by at least one output whose name matches.
OUTPUT_NEEDS: list[tuple[str, str]] = [
    ("the import bucket's name", r"bucket"),
    ("the Airflow API endpoint (or the command that reaches it)", r"airflow"),
    ("the OCIR repository path of the images", r"ocir|repo|registry|image"),
    ("the function's OCID", r"function|fn_"),
    ("the cluster's OCID or its kubeconfig command", r"cluster|kubeconfig|oke"),
]

# Variables whose value can be wrong in a way a regex or a list catches: OCIDs and CIDRs.
VALIDATED_NAME = re.compile(r"(_ocids?|_ids?|cidrs?)$|cidr")

EVENT_CREATE_OBJECT = "com.oraclecloud.objectstorage.createobject"

_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False, with_meta=False
)


# --- files and the HashiCorp parser -----------------------------------------------------------


def tf_files(root: Path) -> list[Path]:
    """Every ``.tf`` file under ``root`` (sub-directories are modules), .terraform/ excluded."""
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.relative_to(root).parts)


def hcl_files(root: Path) -> list[Path]:
    """The files HashiCorp's parser checks: ``.tf`` plus the HCL variable files."""
    extra = [p for p in root.rglob("*.tfvars*") if ".terraform" not in p.relative_to(root).parts]
    return sorted({*tf_files(root), *extra})


@dataclass
class HclResult:
    parsed: dict[str, Any]
    errors: dict[str, list[str]]
    returncode: int
    stderr: str


def hashicorp_parse(paths: list[Path]) -> HclResult:
    """All ``paths`` through tools/hcl2json/parse.js in one node process."""
    if not paths:
        return HclResult({}, {}, 0, "")
    proc = subprocess.run(["node", str(HCL2JSON), *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"parse.js exited {proc.returncode}: {proc.stderr.strip()}")
    errors: dict[str, list[str]] = {}
    for line in proc.stderr.splitlines():
        for path in paths:
            if line.startswith(f"{path}: "):
                errors.setdefault(str(path), []).append(line[len(str(path)) + 2 :])
                break
        else:
            errors.setdefault("<unattributed>", []).append(line)
    return HclResult(json.loads(proc.stdout or "{}"), errors, proc.returncode, proc.stderr)


def hcl2json_declarations(document: dict[str, Any]) -> list[str]:
    """``resource.T.N``, ``variable.X``, ``local.Y``, ... declared in one file, per HashiCorp's parser."""
    names: list[str] = []

    def walk(kind: str, value: Any, depth: int, labels: tuple[str, ...]) -> None:
        if depth == 0:
            names.extend(".".join((kind, *labels)) for _ in (value if isinstance(value, list) else [value]))
            return
        for label, inner in value.items():
            walk(kind, inner, depth - 1, (*labels, label))

    for kind, value in document.items():
        if kind == "locals":
            names.extend(f"local.{name}" for block in value for name in block)
        else:
            walk(kind, value, LABELS.get(kind, 0), ())
    return sorted(names)


def python_hcl2_declarations(module: Module, path: Path) -> list[str]:
    """The same list as python-hcl2 reads the file (via the module model)."""
    names = [".".join((b.kind, *b.labels)) for b in module.blocks if b.file == path.resolve()]
    names += [f"local.{name}" for name, (_, block) in module.locals.items() if block.file == path.resolve()]
    return sorted(names)


# --- the module model (python-hcl2) -----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    kind: str
    labels: tuple[str, ...]
    body: Any
    file: Path

    @property
    def address(self) -> str:
        if self.kind == "resource":
            return ".".join(self.labels)
        return ".".join((self.kind, *self.labels))

    @property
    def where(self) -> str:
        """``file:line`` of the block's header (found in the text: python-hcl2 gives no lines)."""
        text = self.file.read_text(encoding="utf-8")
        if self.kind == "locals":
            pattern = r"^\s*" + re.escape(self.labels[0]) + r"\s*=(?!=)"
        else:
            pattern = r"^\s*" + re.escape(self.kind) + "".join(r'\s+"?' + re.escape(label) + '"?' for label in self.labels) + r"\s*\{"
        match = re.search(pattern, text, re.M)
        line = text.count("\n", 0, match.start()) + 1 if match else 0
        return f"{self.file.name}:{line}" if line else self.file.name


@dataclass
class Module:
    root: Path
    blocks: list[Block] = field(default_factory=list)
    locals: dict[str, tuple[Any, Block]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    @property
    def variables(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of("variable")}

    @property
    def resources(self) -> dict[tuple[str, str], Block]:
        return {(b.labels[0], b.labels[1]): b for b in self.of("resource")}

    @property
    def data(self) -> dict[tuple[str, str], Block]:
        return {(b.labels[0], b.labels[1]): b for b in self.of("data")}

    @property
    def modules(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of("module")}

    @property
    def outputs(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of("output")}

    def resources_of(self, type_: str) -> list[Block]:
        return [b for b in self.of("resource") if b.labels[0] == type_]


@cache
def _parse_cached(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=_OPTIONS)


def parse_hcl(text: str) -> dict[str, Any]:
    """python-hcl2's reading of ``text``; parsed once per content (treat the result as read-only)."""
    return _parse_cached(text)


def _unnest(kind: str, value: Any, depth: int, labels: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """python-hcl2 nests labelled blocks as ``{label: {label: body}}``; yield (labels, body)."""
    if depth == 0:
        yield labels, value
        return
    for item in value if isinstance(value, list) else [value]:
        for label, inner in item.items():
            yield from _unnest(kind, inner, depth - 1, (*labels, label))


@cache
def _load(root: Path, stamp: tuple[tuple[str, float], ...]) -> Module:
    module = Module(root)
    for path in sorted(root.glob("*.tf")):
        try:
            document = parse_hcl(path.read_text(encoding="utf-8"))
        except Exception as error:  # any parser error is a finding
            module.problems.append(f"{path.name}: python-hcl2 cannot parse it: {str(error).splitlines()[0][:300]}")
            continue
        for kind, value in document.items():
            if kind not in BLOCK_KINDS:
                module.problems.append(f"{path.name}: {kind!r} is not a Terraform block type")
                continue
            if kind == "locals":
                for body in value:
                    for name, local in body.items():
                        if name in module.locals:
                            module.problems.append(f"{path.name}: local.{name} is defined twice")
                        module.locals[name] = (local, Block("locals", (name,), local, path))
                continue
            for labels, body in _unnest(kind, value, LABELS.get(kind, 0)):
                for one in body if isinstance(body, list) else [body]:
                    module.blocks.append(Block(kind, labels, one, path))
    counts = Counter((b.kind, b.labels) for b in module.blocks if b.kind in LABELS and b.kind != "provider")
    module.problems += [f"{kind} {'.'.join(labels)} is declared {n} times" for (kind, labels), n in counts.items() if n > 1]
    return module


def load_module(root: Path) -> Module:
    """The module in directory ``root`` (its ``*.tf`` files), parsed once per content."""
    stamp = tuple((p.name, p.stat().st_mtime) for p in sorted(root.glob("*.tf")))
    return _load(root.resolve(), stamp)


# --- expressions ------------------------------------------------------------------------------


def _string_end(text: str, start: int) -> int:
    """Index after the string literal opening at ``text[start] == '"'`` (templates nest)."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text.startswith(("${", "%{"), i) and not text.startswith(("$${", "%%{"), i - 1):
            i = _closing(text, i + 1) + 1
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    raise ValueError(f"unterminated string in {text[start : start + 80]!r}")


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``text[start]``, skipping string literals."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
            continue
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced brackets in {text[start : start + 80]!r}")


def template_expressions(text: str) -> list[str]:
    """The expressions inside the ``${...}`` and ``%{...}`` of a template string."""
    found, i = [], 0
    while i < len(text):
        if text.startswith(("$${", "%%{"), i):
            i += 3
        elif text.startswith(("${", "%{"), i):
            end = _closing(text, i + 1)
            found.append(text[i + 2 : end].strip("~ \n\t"))
            i = end + 1
        else:
            i += 1
    return found


def single_expression(value: Any) -> str | None:
    """``var.x`` for ``"${var.x}"``: the expression when the value is one interpolation only."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        try:
            if _closing(value, 1) == len(value) - 1:
                return value[2:-1].strip()
        except ValueError:
            return None
    return None


def _code_and_strings(expression: str) -> tuple[str, list[str]]:
    """The expression with string literals blanked, and the literals (templates) themselves."""
    code, strings, i = [], [], 0
    while i < len(expression):
        if expression[i] == '"':
            end = _string_end(expression, i)
            strings.append(expression[i + 1 : end - 1])
            code.append('""')
            i = end
        else:
            code.append(expression[i])
            i += 1
    return "".join(code), strings


@dataclass(frozen=True)
class Ref:
    root: str
    parts: tuple[str, ...]
    text: str


_TRAVERSAL = re.compile(r"(?<![\w.\-:])([A-Za-z_][\w-]*)((?:\s*\.\s*(?:[A-Za-z_][\w-]*|\*|\d+)|\s*\[[^\[\]]*\])*)")
_BOUND = re.compile(r"\bfor\s+([A-Za-z_][\w-]*)(?:\s*,\s*([A-Za-z_][\w-]*))?\s+in\b")
KEYWORDS = {"true", "false", "null", "for", "in", "if", "else", "endif", "endfor"}


def expression_refs(expression: str, bound: frozenset[str] = frozenset()) -> Iterator[Ref]:
    """The traversals (``var.x``, ``oci_core_vcn.main.id``, ...) an HCL expression reads;
    ``bound`` are names of enclosing ``for`` expressions (templates nest inside them)."""
    code, strings = _code_and_strings(expression)
    bound = bound | {name for match in _BOUND.finditer(code) for name in match.groups() if name}
    for match in _TRAVERSAL.finditer(code):
        root, rest = match.group(1), match.group(2)
        after = code[match.end() :].lstrip()
        if after.startswith("(") or after.startswith("::") or root in KEYWORDS or root in bound:
            continue
        parts = tuple(re.findall(r"\.\s*([A-Za-z_][\w-]*|\*|\d+)", re.sub(r"\[[^\[\]]*\]", "", rest)))
        if parts:
            yield Ref(root, parts, f"{root}{rest}".replace(" ", ""))
        for index in re.findall(r"\[([^\[\]]*)\]", rest):  # oci_core_subnet.all[var.name].id
            yield from expression_refs(index, bound)
    for literal in strings:
        yield from template_refs(literal, bound)


def template_refs(text: str, bound: frozenset[str] = frozenset()) -> Iterator[Ref]:
    expressions = template_expressions(text)
    # `%{ for x in ... }` binds x for the `${x...}` up to its `%{ endfor }`.
    bound = bound | {name for e in expressions for match in _BOUND.finditer(e) for name in match.groups() if name}
    for expression in expressions:
        yield from expression_refs(expression, bound)


def value_refs(value: Any, skip: frozenset[str] = frozenset()) -> Iterator[Ref]:
    """Every reference in a python-hcl2 value (strings are templates; dict keys may be too)."""
    if isinstance(value, str):
        yield from template_refs(value)
    elif isinstance(value, list):
        for item in value:
            yield from value_refs(item, skip)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in skip:
                continue
            if isinstance(key, str) and "${" in key:
                yield from template_refs(key)
            yield from value_refs(item, skip)


def dynamic_names(body: Any) -> set[str]:
    """Iterator names of the ``dynamic`` blocks anywhere in a block body."""
    names: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "dynamic":
                for item in value if isinstance(value, list) else [value]:
                    for name, inner in item.items():
                        inner_body = inner[0] if isinstance(inner, list) else inner
                        names.add(inner_body.get("iterator", name) if isinstance(inner_body, dict) else name)
            names |= dynamic_names(value)
    elif isinstance(body, list):
        for item in body:
            names |= dynamic_names(item)
    return names


def _conditional(expression: str) -> tuple[str, str, str] | None:
    """``(condition, then, else)`` of a top-level ``c ? a : b``, or None."""
    depth, question, nested, i = 0, -1, 0, 0
    while i < len(expression):
        char = expression[i]
        if char == '"':
            i = _string_end(expression, i)
            continue
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        elif depth == 0 and char == "?":
            if question < 0:
                question = i
            else:
                nested += 1
        elif depth == 0 and char == ":" and question >= 0 and not expression.startswith("::", i):
            if nested == 0:
                return expression[:question].strip(), expression[question + 1 : i].strip(), expression[i + 1 :].strip()
            nested -= 1
        i += 1
    return None


def _parse_expression(expression: str) -> Any:
    return parse_hcl(f"x = {expression}")["x"]


def hcl_value(module: Module, value: Any, depth: int = 0, branches: bool = False) -> Any:
    """A python-hcl2 value with ``local.x`` and ``jsonencode``/``concat``/``compact``/``flatten``/
    ``join`` of literals evaluated where that is possible; anything else is returned as it is.
    With ``branches``, ``c ? [a] : [b]`` is the list of both branches' items (every possibility)."""
    expression = single_expression(value)
    if expression is None or depth > 10:
        return value
    if re.fullmatch(r"local\.[A-Za-z_][\w-]*", expression) and expression[6:] in module.locals:
        return hcl_value(module, module.locals[expression[6:]][0], depth + 1, branches)
    conditional = _conditional(expression) if branches else None
    if conditional:
        try:
            options = [hcl_value(module, _parse_expression(part), depth + 1, branches) for part in conditional[1:]]
        except Exception:  # not literal branches: leave it unevaluated
            return value
        if all(isinstance(option, list) for option in options):
            return [item for option in options for item in option]
        return value
    call = re.fullmatch(r"(jsonencode|concat|compact|flatten|tolist|join)\((.*)\)", expression, re.S)
    if call and _closing(expression, len(call.group(1))) == len(expression) - 1:
        function, arguments = call.groups()
        try:
            parsed = parse_hcl(f"x = [{arguments}]")["x"]
        except Exception:  # not a literal: leave it unevaluated
            return value
        items = [hcl_value(module, item, depth + 1, branches) for item in parsed]
        if function in ("jsonencode", "tolist"):
            return items[0] if len(items) == 1 else value
        if function == "join":
            parts = [hcl_value(module, item, depth + 1) for item in items[1]] if len(items) == 2 and isinstance(items[1], list) else None
            if isinstance(items[0], str) and parts is not None and all(isinstance(p, str) for p in parts):
                return items[0].join(parts)
            return value
        flat: list[Any] = []
        for item in items:
            if not isinstance(item, list):
                return value
            flat += item
        return [item for item in flat if item not in ("", None)] if function == "compact" else flat
    return value


def expand_text(module: Module, text: str, depth: int = 0) -> str:
    """``text`` with each ``${local.x}`` whose value is text (a template, or a ``join`` of
    templates) written in; interpolations of anything else stay as they are."""
    out, i = [], 0
    while i < len(text) and depth <= 10:
        if text.startswith("${", i):
            end = _closing(text, i + 1)
            inner = text[i + 2 : end].strip()
            value = (
                hcl_value(module, module.locals[inner[6:]][0])
                if re.fullmatch(r"local\.[\w-]+", inner) and inner[6:] in module.locals
                else None
            )
            if isinstance(value, str) and single_expression(value) is None:
                out.append(expand_text(module, value, depth + 1))
            else:
                out.append(text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out) + text[i:]


def resolve_text(module: Module, text: str, depth: int = 0) -> str:
    """``text`` with each ``${...}`` replaced by its value when it is a literal: a variable's
    default, a local, or ``yamldecode(file("...")).a.b`` of a file in the repository."""
    if depth > 10:
        return text

    def one(expression: str) -> str | None:
        if re.fullmatch(r"var\.[A-Za-z_][\w-]*", expression):
            variable = module.variables.get(expression[4:])
            default = variable.body.get("default") if variable else None
            return default if isinstance(default, str) else None
        if re.fullmatch(r"local\.[A-Za-z_][\w-]*", expression) and expression[6:] in module.locals:
            local = module.locals[expression[6:]][0]
            return resolve_text(module, local, depth + 1) if isinstance(local, str) else None
        yaml_ref = re.fullmatch(r'yamldecode\(\s*file\(\s*"([^"]+)"\s*\)\s*\)((?:\.[A-Za-z_]\w*)+)', expression)
        if yaml_ref:
            path = yaml_ref.group(1).replace("${path.module}", str(module.root)).replace("${path.root}", str(module.root))
            try:
                node: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except OSError:
                return None
            for key in yaml_ref.group(2).strip(".").split("."):
                node = node.get(key) if isinstance(node, dict) else None
            return node if isinstance(node, str) else None
        return None

    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            end = _closing(text, i + 1)
            value = one(text[i + 2 : end].strip())
            out.append(value if value is not None else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# --- checks -----------------------------------------------------------------------------------


def syntax_problems(module: Module) -> list[str]:
    """What python-hcl2 or the module model found: unknown block types, duplicates."""
    return list(module.problems)


def variable_problems(module: Module) -> list[str]:
    """Every variable has a type and a description."""
    found = []
    for name, block in module.variables.items():
        if "type" not in block.body:
            found.append(f"{block.where}: variable {name} has no type")
        description = block.body.get("description")
        if not isinstance(description, str) or not description.strip():
            found.append(f"{block.where}: variable {name} has no description")
    return found


def validation_problems(module: Module) -> list[str]:
    """OCIDs, ids and CIDRs are checked at plan time: a validation block that reads the variable."""
    found = []
    for name, block in module.variables.items():
        if not VALIDATED_NAME.search(name):
            continue
        validations = block.body.get("validation") or []
        if not validations:
            found.append(f"{block.where}: variable {name} (an OCID, id or CIDR) has no validation block")
            continue
        for validation in validations:
            condition = validation.get("condition", "")
            if not any(ref.root == "var" and ref.parts[0] == name for ref in value_refs(condition)):
                found.append(f"{block.where}: a validation of variable {name} does not read var.{name}")
            if not str(validation.get("error_message", "")).strip():
                found.append(f"{block.where}: a validation of variable {name} has no error_message")
    return found


@cache
def oci_resource_types() -> dict[str, bool]:
    """OCI resource type -> takes freeform_tags (oci_resource_types.txt)."""
    table = {}
    for line in OCI_RESOURCE_TYPES.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            type_, tags = line.split()
            table[type_] = tags == "freeform_tags"
    return table


def common_tags_local(module: Module) -> str | None:
    """The local every tagged resource uses: the one most ``freeform_tags`` read."""
    counts: Counter[str] = Counter()
    for block in module.of("resource"):
        tags = block.body.get("freeform_tags")
        for ref in value_refs(tags) if tags is not None else []:
            if ref.root == "local":
                counts[ref.parts[0]] += 1
    return counts.most_common(1)[0][0] if counts else None


def tag_problems(module: Module) -> list[str]:
    """Every resource whose type takes freeform_tags sets them from the one common-tags local."""
    table = oci_resource_types()
    common = common_tags_local(module)
    found = []
    if module.of("resource") and common is None:
        found.append("no resource sets freeform_tags from a local (the common tags)")
    elif common is not None and common not in module.locals:
        found.append(f"freeform_tags read local.{common}, which is not defined")
    for block in module.of("resource"):
        type_ = block.labels[0]
        if type_ in UNTAGGED_NON_OCI or table.get(type_) is False:
            continue
        if type_ not in table:
            hint = "not an OCI provider resource type" if type_.startswith("oci_") else "not classified"
            found.append(f"{block.where}: {type_} is {hint}: add it to UNTAGGED_NON_OCI in tfkit.py or fix the type")
            continue
        tags = block.body.get("freeform_tags")
        if tags is None:
            found.append(f"{block.where}: {block.address} takes freeform_tags but does not set them (local.{common})")
            continue
        expression = single_expression(tags)
        reads_common = expression is not None and re.fullmatch(
            rf"local\.{re.escape(str(common))}|merge\(\s*local\.{re.escape(str(common))}\s*,.*\)", expression, re.S
        )
        if not reads_common:
            found.append(
                f"{block.where}: {block.address} sets freeform_tags = {tags!r}, not local.{common} (or merge(local.{common}, ...))"
            )
    return found


_SPECIAL_ROOTS = {"each", "count", "self", "path", "terraform"}


def _child_outputs(module: Module, block: Block) -> set[str] | None:
    source = block.body.get("source")
    if isinstance(source, str) and source.startswith(("./", "../")):
        child = (module.root / source).resolve()
        if child.is_dir():
            return set(load_module(child).outputs)
    return None


def reference_problems(module: Module) -> list[str]:
    """Every var., local., module., data. and resource reference names a declaration here."""
    variables, resources, data, modules = module.variables, module.resources, module.data, module.modules
    resource_types = {type_ for type_, _ in resources}
    found: list[str] = []

    def check(where: str, value: Any, skip: frozenset[str] = frozenset(), bound: set[str] | None = None) -> None:
        for ref in value_refs(value, skip):
            head = ref.parts[0]
            if ref.root in _SPECIAL_ROOTS or ref.root in (bound or set()):
                continue
            if ref.root == "var":
                ok = head in variables
            elif ref.root == "local":
                ok = head in module.locals
            elif ref.root == "module":
                outputs = _child_outputs(module, modules[head]) if head in modules else set()
                ok = head in modules and (outputs is None or len(ref.parts) < 2 or ref.parts[1] in outputs)
            elif ref.root == "data":
                ok = len(ref.parts) >= 2 and (head, ref.parts[1]) in data
            elif ref.root in resource_types or "_" in ref.root:
                ok = (ref.root, head) in resources
            else:
                ok = False
            if not ok:
                found.append(f"{where}: {ref.text} does not resolve")

    for block in module.blocks:
        if block.kind == "terraform":
            continue
        bound = dynamic_names(block.body)
        if block.kind == "variable":
            check(block.where, {k: v for k, v in block.body.items() if k != "type"})
        elif block.kind in ("moved", "removed"):
            check(block.where, {k: v for k, v in block.body.items() if k != "from"})
        else:
            body = block.body if isinstance(block.body, dict) else {}
            lifecycle = [{k: v for k, v in item.items() if k != "ignore_changes"} for item in body.get("lifecycle", [])]
            rest = {k: v for k, v in body.items() if k not in ("lifecycle", "provider", "providers", "alias")}
            check(block.where, [rest, lifecycle], bound=bound)
    for name, (value, block) in module.locals.items():
        check(f"{block.where} (local.{name})", value)
    return found


def import_bucket(module: Module) -> tuple[Block | None, str]:
    """The bucket users upload into: the only bucket, or the one named for imports/uploads/images."""
    buckets = module.resources_of("oci_objectstorage_bucket")
    if len(buckets) == 1:
        return buckets[0], ""
    named = [b for b in buckets if re.search(r"import|upload|image", b.labels[1] + str(b.body.get("name", "")), re.I)]
    if len(named) == 1:
        return named[0], ""
    return None, f"cannot tell the import bucket among {[b.address for b in buckets]} (one bucket, or one named *import*/*upload*/*image*)"


def _event_condition(module: Module, rule: Block) -> tuple[Any, str]:
    raw = rule.body.get("condition")
    value = hcl_value(module, raw)
    if isinstance(value, dict):
        return value, ""
    if isinstance(value, str) and single_expression(value) is None:
        # A JSON template ("{...${x}...}"): interpolations become placeholders, then JSON.
        pieces: list[str] = []

        def hold(match: re.Match[str]) -> str:
            pieces.append(match.group(0))
            return f"@@{len(pieces) - 1}@@"

        text = re.sub(r"\$\{[^{}]*\}", hold, value)
        try:
            document = json.loads(text)
        except ValueError as error:
            return None, f"condition is neither jsonencode({{...}}) nor JSON ({error})"
        restored = json.dumps(document)
        for index, piece in enumerate(pieces):
            restored = restored.replace(f"@@{index}@@", piece.replace('"', '\\"'))
        return json.loads(restored), ""
    return None, f"condition {raw!r} cannot be read (write it as jsonencode({{...}}) of literals and references)"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def events_problems(module: Module) -> list[str]:
    """The events rule fires on createobject in the import bucket only, into the function."""
    rules = module.resources_of("oci_events_rule")
    if not rules:
        return ["no oci_events_rule: uploads would trigger nothing"]
    bucket, why = import_bucket(module)
    if bucket is None:
        return [why]
    found = []
    if bucket.body.get("object_events_enabled") is not True:
        found.append(f"{bucket.where}: {bucket.address} does not set object_events_enabled = true: it would emit no events")
    for other in module.resources_of("oci_objectstorage_bucket"):  # the work bucket: what lands there starts nothing
        if other is not bucket and other.body.get("object_events_enabled") is not False:
            found.append(f"{other.where}: {other.address} is not the import bucket and does not set object_events_enabled = false")
    bucket_name = bucket.body.get("name")
    bucket_refs = {f"{bucket.address}.name", f"{bucket.address}[0].name"}
    functions = {b.labels[1] for b in module.resources_of("oci_functions_function")}
    for rule in rules:
        condition, why = _event_condition(module, rule)
        if condition is None:
            found.append(f"{rule.where}: {rule.address}: {why}")
            continue
        if not isinstance(condition, dict):
            found.append(f"{rule.where}: {rule.address}: condition is not an object")
            continue
        event_types = [
            resolve_text(module, t) if isinstance(t, str) else t for t in _as_list(hcl_value(module, condition.get("eventType")))
        ]
        if event_types != [EVENT_CREATE_OBJECT]:
            found.append(f"{rule.where}: {rule.address}: eventType is {event_types!r}, not exactly [{EVENT_CREATE_OBJECT!r}]")
        details = condition.get("data", {}).get("additionalDetails", {}) if isinstance(condition.get("data"), dict) else {}
        names = _as_list(details.get("bucketName")) if isinstance(details, dict) else [None]
        for name in names:
            resolved = hcl_value(module, name)
            expression = single_expression(resolved)
            if not (resolved == bucket_name or (expression is not None and expression.replace(" ", "") in bucket_refs)):
                found.append(
                    f"{rule.where}: {rule.address}: data.additionalDetails.bucketName {name!r} "
                    f"is not the import bucket ({bucket.address}.name)"
                )
        if not names or names == [None]:
            found.append(f"{rule.where}: {rule.address}: no data.additionalDetails.bucketName condition: it matches every bucket")
        if rule.body.get("is_enabled") is not True:
            found.append(f"{rule.where}: {rule.address} is not enabled (is_enabled = true)")
        actions = [a for outer in rule.body.get("actions", []) for a in outer.get("actions", [])]
        if not actions:
            found.append(f"{rule.where}: {rule.address} has no actions")
        for action in actions:
            function = single_expression(action.get("function_id"))
            target = re.fullmatch(r"oci_functions_function\.([\w-]+)(?:\[0\])?\.id", (function or "").replace(" ", ""))
            if action.get("action_type") != "FAAS" or not target or target.group(1) not in functions:
                found.append(
                    f"{rule.where}: {rule.address}: action {action.get('action_type')!r} -> {action.get('function_id')!r} "
                    "is not FAAS to an oci_functions_function of this module"
                )
            if action.get("is_enabled") is not True:
                found.append(f"{rule.where}: {rule.address}: an action is not enabled (is_enabled = true)")
    return found


_STATEMENT = re.compile(
    r"^allow\s+(?P<subject>.+?)\s+to\s+(?P<verb>\{[^}]*\}|inspect|read|use|manage)\s*(?P<resource>[\w-]+)?"
    r"\s+in\s+(?P<location>tenancy|compartment\s+id\s+\S+|compartment\s+\S+)(?:\s+where\s+(?P<where>.+))?$",
    re.I | re.S,
)


def policy_statements(module: Module) -> tuple[list[tuple[Block, str]], list[str]]:
    """(policy, statement) for every statement, and the policies whose statements are not literal."""
    statements, found = [], []
    for policy in module.resources_of("oci_identity_policy"):
        value = hcl_value(module, policy.body.get("statements"), branches=True)
        items = value if isinstance(value, list) else [value]
        for item in items:
            item = hcl_value(module, item)
            if isinstance(item, str):
                item = expand_text(module, item)
            if not isinstance(item, str) or single_expression(item) is not None:
                found.append(
                    f"{policy.where}: {policy.address}: statement {item!r} is not a literal (template) string; it cannot be checked"
                )
                continue
            statements.append((policy, " ".join(item.split())))
    return statements, found


def policy_problems(module: Module, values_path: Path = VDIMPORT_VALUES) -> list[str]:
    """Least privilege: no manage all-resources, no tenancy scope outside TENANCY_ALLOWLIST,
    every any-user statement constrained, the workload statements name the step runner."""
    statements, found = policy_statements(module)
    values = yaml.safe_load(values_path.read_text(encoding="utf-8"))
    service_account = values
    for key in SERVICE_ACCOUNT_KEY.split("."):
        service_account = service_account[key]
    clusters = {b.labels[1] for b in module.resources_of("oci_containerengine_cluster")}
    workload = 0
    for policy, statement in statements:
        where = f"{policy.where}: {policy.address}: {statement!r}"
        match = _STATEMENT.match(statement)
        if not match:
            found.append(f"{where}: not an 'Allow ... to ... in ...' statement this check understands")
            continue
        verb, resource = match.group("verb").lower(), (match.group("resource") or "").lower()
        location, condition = match.group("location").lower(), match.group("where") or ""
        if resource == "all-resources" and verb in ("manage", "use"):
            found.append(f"{where}: grants {verb} all-resources")
        if location == "tenancy":
            allowed = [why for (verbs, type_), why in TENANCY_ALLOWLIST.items() if type_ == resource and re.fullmatch(verbs, verb)]
            if not allowed:
                found.append(f"{where}: tenancy-wide; name the compartment or add (verb, resource) to TENANCY_ALLOWLIST with a reason")
        subject = match.group("subject").lower()
        if subject.startswith("any-user") and not re.search(r"request\.principal\.|target\.", condition):
            found.append(f"{where}: any-user without a where clause on request.principal or target")
        principal = dict(re.findall(r"request\.principal\.(\w+)\s*=\s*'([^']*)'", condition))
        if principal.get("type") == "workload":
            workload += 1
            namespace = resolve_text(module, principal.get("namespace", ""))
            account = resolve_text(module, principal.get("service_account", ""))
            cluster = principal.get("cluster_id", "")
            if namespace != STEP_NAMESPACE:
                found.append(f"{where}: request.principal.namespace is {namespace!r}, not {STEP_NAMESPACE!r}")
            if account != service_account:
                found.append(
                    f"{where}: request.principal.service_account is {account!r}, "
                    f"not {service_account!r} ({values_path.name}: {SERVICE_ACCOUNT_KEY})"
                )
            if not _names_cluster(module, cluster, clusters):
                found.append(f"{where}: request.principal.cluster_id {cluster!r} is not this module's oci_containerengine_cluster id")
    if workload == 0:
        found.append("no workload-identity statement (request.principal.type = 'workload'): the step pods could do nothing")
    # A dynamic group lives in the tenancy; its matching rule must not reach the whole tenancy.
    for group in module.resources_of("oci_identity_dynamic_group"):
        rule = str(group.body.get("matching_rule", ""))
        if not re.search(r"(resource|instance)\.(compartment\.)?id\s*=", rule):
            found.append(
                f"{group.where}: {group.address}: matching rule {rule!r} names no resource.compartment.id, "
                "instance.compartment.id (or the resource's own id)"
            )
        elif re.match(r"\s*any\s*\{", rule, re.I) and len(re.findall(r"=", rule)) > 1:
            found.append(
                f"{group.where}: {group.address}: matching rule {rule!r} is ANY {{...}}: one clause without the compartment suffices"
            )
    return found


def _names_cluster(module: Module, value: str, clusters: set[str], depth: int = 0) -> bool:
    for expression in template_expressions(value):
        if re.fullmatch(r"oci_containerengine_cluster\.([\w-]+)(?:\[0\])?\.id", expression.replace(" ", "")):
            return expression.split(".")[1].split("[")[0] in clusters
        if re.fullmatch(r"local\.[\w-]+", expression) and depth < 10:
            local = module.locals.get(expression[6:], (None,))[0]
            return isinstance(local, str) and _names_cluster(module, local, clusters, depth + 1)
    return False


def cluster_problems(module: Module) -> list[str]:
    """Workload identity needs an enhanced cluster."""
    if not module.resources_of("oci_containerengine_cluster"):
        return ["no oci_containerengine_cluster: nowhere for Airflow and the step pods to run"]
    return [
        f"{b.where}: {b.address}: type is {b.body.get('type')!r}; OKE workload identity needs ENHANCED_CLUSTER"
        for b in module.resources_of("oci_containerengine_cluster")
        if b.body.get("type") != "ENHANCED_CLUSTER"
    ]


def schema_problems(module: Module, schema_path: Path) -> list[str]:
    """OCI Resource Manager's schema.yaml lists exactly the module's variables."""
    if not schema_path.is_file():
        return [f"{schema_path.name} is missing"]
    schema = yaml.safe_load(schema_path.read_text(encoding="utf-8")) or {}
    declared = set(module.variables)
    listed = set(schema.get("variables") or {})
    found = [f"{schema_path.name}: variables.{name} is not a variable of the module" for name in sorted(listed - declared)]
    found += [f"{schema_path.name}: variable {name} is missing from variables" for name in sorted(declared - listed)]
    grouped: Counter[str] = Counter()
    for group in schema.get("variableGroups") or []:
        grouped.update(group.get("variables") or [])
    found += [f"{schema_path.name}: variableGroups names {name}, not a variable of the module" for name in sorted(set(grouped) - declared)]
    found += [f"{schema_path.name}: {name} is in {n} variableGroups" for name, n in grouped.items() if n > 1]
    return found


def tfvars_problems(module: Module, example: Path) -> list[str]:
    """The example variables file sets every variable without a default, and nothing else."""
    if not example.is_file():
        return [f"{example.name} is missing"]
    try:
        values = parse_hcl(example.read_text(encoding="utf-8"))
    except Exception as error:
        return [f"{example.name} does not parse: {str(error).splitlines()[0][:300]}"]
    required = {name for name, block in module.variables.items() if "default" not in block.body}
    found = [f"{example.name} does not set {name} (no default)" for name in sorted(required - set(values))]
    found += [f"{example.name} sets {name}, which is not a variable" for name in sorted(set(values) - set(module.variables))]
    return found


def output_problems(module: Module) -> list[str]:
    """The outputs a user needs exist (OUTPUT_NEEDS, matched by name) and say what they are."""
    outputs = module.outputs
    found = [
        f"no output for {what} (an output named like /{pattern}/)"
        for what, pattern in OUTPUT_NEEDS
        if not any(re.search(pattern, name) for name in outputs)
    ]
    found += [
        f"{b.where}: output {name} has no description" for name, b in outputs.items() if not str(b.body.get("description", "")).strip()
    ]
    return found


def provider_problems(module: Module) -> list[str]:
    """Every provider a resource or data source uses is pinned in required_providers."""
    required: dict[str, Any] = {}
    for block in module.of("terraform"):
        for item in block.body.get("required_providers", []):
            required.update(item)
    if module.of("terraform") and not any("required_version" in b.body for b in module.of("terraform")):
        found = ["no required_version in the terraform block"]
    else:
        found = [] if module.of("terraform") else ["no terraform block (required_providers, required_version)"]
    used = {b.labels[0].split("_")[0] for b in module.blocks if b.kind in ("resource", "data")} - {"terraform"}
    for name in sorted(used):
        spec = required.get(name)
        if not isinstance(spec, dict) or not spec.get("source") or not spec.get("version"):
            found.append(f"provider {name} is used but not in required_providers with a source and a version")
    return found


CHECKS = {
    "syntax": syntax_problems,
    "variables": variable_problems,
    "validations": validation_problems,
    "tags": tag_problems,
    "references": reference_problems,
    "events": events_problems,
    "cluster": cluster_problems,
    "outputs": output_problems,
    "providers": provider_problems,
}
