"""Import layering, read from the source (ast): lower modules never import upper ones.

Every import counts, including those under ``if TYPE_CHECKING:`` and those inside
functions: a type-only import of an upper module is still a circle in the design
(the lower module knows the upper one's private methods), which is what issue 13
asked to remove. Each package's modules are listed in layers, bottom first; a
module may import only modules of the layers below its own, so no circle can
form. A new module must be added to its package's table here, and to the map in
docs/design.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "asyncstore"

#: The modules of asyncstore.cas, bottom layer first (see docs/design.md, "Layers").
CAS_LAYERS: list[set[str]] = [
    {"_digest"},  # Digest, Hasher, hash_bytes
    {"_layout", "_types"},  # blob keys and refs; descriptors and records
    {"_blobs"},  # the shared blob operations: write once, dedupe, counters
    {"_read"},  # BlobStream and the verified whole reads built on it
    {"_artifacts", "_sessions", "_tree"},  # features over the blobs
    {"_store"},  # ContentStore: the public facade
    {"__init__"},
]

#: The modules of asyncstore.oci, bottom layer first.
OCI_LAYERS: list[set[str]] = [
    {"_names"},
    {"_manifest"},
    {"_registry"},
    {"__init__"},
]

#: The modules of asyncstore.backends.local (a package since issue 13), bottom layer first.
LOCAL_LAYERS: list[set[str]] = [
    {"_translate", "_paths"},  # OSError translation; keys to paths, their checks
    {"_sidecar"},  # metadata sidecars, ETags, ObjectInfo
    {"_files"},  # the root, temp files, the commit, reads, deletes, copies
    {"_uploads", "_listing"},  # multipart upload files; the key-ordered walk
    {"_backend"},  # LocalBackend: the contract over them
    {"__init__"},  # the public names and from_url
]

#: Every package whose modules are layered, with its table.
LAYERED = [
    ("asyncstore.cas", CAS_LAYERS),
    ("asyncstore.oci", OCI_LAYERS),
    ("asyncstore.backends.local", LOCAL_LAYERS),
]

#: What asyncstore.cas must never import: the layers above it.
ABOVE_CAS = ("asyncstore.oci", "asyncstore.registry", "asyncstore._cli", "asyncstore.fsspec")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, here: str | None = None) -> Iterator[tuple[int, str, str | None]]:
    """Every import of the file at ``path``: (line, module, imported name or None).

    Relative imports are resolved; ``from package import submodule`` yields the
    submodule as the module. Imports under ``if TYPE_CHECKING:`` and inside
    functions are included.
    """
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if is_module(submodule):
                    yield node.lineno, submodule, None
                else:
                    yield node.lineno, target, alias.name


def files(package: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*package.split(".")[1:]).glob("*.py"))


def layer_violations(package: str, layers: list[set[str]]) -> list[str]:
    rank = {name: level for level, names in enumerate(layers) for name in names}
    problems = []
    for path in files(package):
        if path.stem not in rank:
            problems.append(f"{package}.{path.stem} is in no layer of tests/test_layers.py")
            continue
        for line, target, _ in imports(path):
            if not target.startswith(f"{package}."):
                continue
            stem = target[len(package) + 1 :].partition(".")[0]
            if stem in rank and rank[stem] >= rank[path.stem]:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line}: {path.stem} (layer {rank[path.stem]}) "
                    f"imports {stem} (layer {rank[stem]}): not a lower layer"
                )
    return problems


@pytest.mark.parametrize(("package", "layers"), LAYERED)
def test_modules_import_only_lower_layers(package: str, layers: list[set[str]]) -> None:
    problems = layer_violations(package, layers)
    assert not problems, "\n".join(problems)


def test_the_layer_tables_name_every_module_once() -> None:
    for package, layers in LAYERED:
        listed = [name for names in layers for name in names]
        assert sorted(listed) == sorted({*listed}), package
        assert sorted(listed) == sorted(path.stem for path in files(package)), package


def test_cas_never_imports_the_layers_above_it() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {target}"
        for path in files("asyncstore.cas")
        for line, target, _ in imports(path)
        if target.startswith(ABOVE_CAS)
    ]
    assert not found, "\n".join(found)


def cas_public_names() -> set[str]:
    tree = ast.parse((PACKAGE / "cas" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("asyncstore/cas/__init__.py has no __all__")


def test_oci_imports_only_public_names_of_cas() -> None:
    public = cas_public_names()
    found = []
    for path in files("asyncstore.oci"):
        for line, target, name in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("asyncstore.cas."):
                found.append(f"{where}: imports the private module {target}")
            elif target == "asyncstore.cas" and name is not None and name not in public:
                found.append(f"{where}: imports {name}, which is not in asyncstore.cas.__all__")
    assert not found, "\n".join(found)


def test_oci_calls_no_private_member_of_its_content_store() -> None:
    """``self.cas._get(...)`` couples oci to ContentStore's insides as much as an import does."""
    found = []
    for path in files("asyncstore.oci"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            owner = node.value
            named = (isinstance(owner, ast.Attribute) and owner.attr == "cas") or (
                isinstance(owner, ast.Name) and owner.id == "cas"
            )
            if named and not node.attr.startswith("__"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: cas.{node.attr}")
    assert not found, "\n".join(found)


def test_the_checker_sees_relative_type_checking_and_submodule_imports(tmp_path: Path) -> None:
    """The parser itself: the three forms the cas circles were written in are all found."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _layout\n"
        "from ._types import Descriptor\n"
        "if TYPE_CHECKING:\n"
        "    from ._store import ContentStore\n"
        "def f():\n"
        "    from ..oci import RegistryStorage\n"
    )
    probe = tmp_path / "_probe.py"
    probe.write_text(source)
    found = {(target, name) for _, target, name in imports(probe, "asyncstore.cas._probe")}
    assert {
        ("asyncstore.cas._layout", None),
        ("asyncstore.cas._types", "Descriptor"),
        ("asyncstore.cas._store", "ContentStore"),
        ("asyncstore.oci", "RegistryStorage"),
    } <= found
