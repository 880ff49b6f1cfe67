"""The import rule of docs/design.md, read from the code: each room imports only the rooms it stands on."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Room → the rooms its modules may import besides itself (docs/design.md, "The import rule").
MAY_USE: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "infra": frozenset({"schemas"}),
    "processors": frozenset({"schemas", "infra"}),
    "consumers": frozenset({"schemas", "infra"}),
    "producers": frozenset({"schemas", "infra", "consumers"}),
    "gateway": frozenset({"schemas", "infra", "producers", "consumers"}),
    # Adapters for other frameworks (pipecat): clients of the service, like any other system using the SDK.
    "integrations": frozenset({"schemas", "infra", "producers", "consumers"}),
}
OURS = frozenset(MAY_USE) | {"scripts", "tests"}
# Inside processors/ each processor is a room of its own: it talks to the others only through Kafka and
# PostgreSQL, and shares only processors/common (the Kafka adapter every processor runs in).
SHARED_PROCESSOR_ROOM = "common"

# Imports the rule forbids that the code still makes, each until the step of issue 12 that removes it. An entry
# that no longer occurs fails the test too, so this list only ever shrinks.
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    """One import the rule forbids: the file, and the module it names (shortened to its room)."""

    path: str
    target: str

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.target


def imported_modules(source: str, package: str) -> set[str]:
    """Every module the source names in an import, at any depth (also inside functions and TYPE_CHECKING).

    ``package`` is the importing module's package, against which a relative import is resolved.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def room_of(module: str) -> str:
    """The room a module is in; a processor's own sub-room for the modules under processors/."""
    parts = module.split(".")
    if parts[0] == "processors" and len(parts) > 1:
        return f"processors.{parts[1]}"
    return parts[0]


def allowed(source_module: str, target: str) -> bool:
    here, there = room_of(source_module), room_of(target)
    if there.split(".")[0] not in OURS or here == there:
        return True
    if here.startswith("processors.") and there.startswith("processors."):
        return there == f"processors.{SHARED_PROCESSOR_ROOM}"
    return there.split(".")[0] in MAY_USE[here.split(".")[0]]


def violations_in(path: str, source: str) -> list[Violation]:
    module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    package = module if path.endswith("/__init__.py") else module.rpartition(".")[0]
    return sorted({Violation(path, room_of(target)) for target in imported_modules(source, package)
                   if not allowed(module, target)}, key=lambda v: v.key)


def code_violations() -> list[Violation]:
    found: list[Violation] = []
    for room in MAY_USE:
        for file in sorted((ROOT / room).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            found.extend(violations_in(path, file.read_text(encoding="utf-8")))
    return found


def test_no_room_imports_one_the_rule_forbids() -> None:
    new = [f"{v.path} imports {v.target}" for v in code_violations() if v.key not in KNOWN]
    assert not new, "imports against docs/design.md's rule:\n" + "\n".join(new)


def test_every_known_exception_still_exists_so_the_list_only_shrinks() -> None:
    present = {v.key for v in code_violations()}
    gone = [f"{path} -> {target}" for path, target in KNOWN if (path, target) not in present]
    assert not gone, "no longer imported (strike them from KNOWN):\n" + "\n".join(gone)


@pytest.mark.parametrize(("path", "source", "target"), [
    ("gateway/ws.py", "from processors.tts.engines import registry", "processors.tts"),
    ("gateway/ws.py", "def f():\n    import processors.lipsync.core", "processors.lipsync"),
    ("processors/tts/main.py", "from gateway.app import create_app", "gateway"),
    ("processors/tts/main.py", "from processors.lipsync.core import LipSyncCore", "processors.lipsync"),
    ("processors/lipsync/main.py", "from consumers.session_stream import Record", "consumers"),
    ("schemas/session.py", "from infra.settings import Settings", "infra"),
    ("infra/kafka.py", "from producers.client import AvatarProducer", "producers"),
    ("consumers/session_stream.py", "from producers.client import Chunk", "producers"),
    ("producers/client.py", "from tests.media import astronaut", "tests"),
    ("infra/launcher.py", "from scripts.load_test import main", "scripts"),
    ("integrations/pipecat/avatar_video.py", "from gateway.speak import Refusal", "gateway"),
    ("gateway/ws.py", "from integrations.pipecat import AvatarVideoService", "integrations"),
    ("processors/tts/text/plan.py", "from ...lipsync import core", "processors.lipsync"),
])
def test_a_forbidden_import_is_caught(path: str, source: str, target: str) -> None:
    assert violations_in(path, source) == [Violation(path, target)]


@pytest.mark.parametrize(("path", "source"), [
    ("gateway/ws.py", "from producers.client import ProduceError\nfrom consumers.session_stream import Record"),
    ("processors/tts/main.py", "from processors.common.kafka_app import KafkaApp\nfrom infra.settings import S"),
    ("processors/lipsync/core.py", "from . import mel\nfrom .engines import base"),
    ("processors/registration/__init__.py", "from .analyse import analyse_upload"),
    ("producers/client.py", "from consumers.session_stream import Record\nimport numpy"),
    ("schemas/session.py", "from schemas import envelope"),
])
def test_what_the_rule_allows_passes(path: str, source: str) -> None:
    assert violations_in(path, source) == []


def module_of(file: Path) -> str:
    return file.relative_to(ROOT).as_posix().removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def run_by_processes() -> set[str]:
    """Every module under processors/ that a processor's entry point (processors/*/main.py) imports, at any
    depth: what runs in a processor process."""
    files = {module_of(file): file for file in (ROOT / "processors").rglob("*.py")}
    reached: set[str] = set()
    todo = [module for module in files if module.endswith(".main")]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        file = files[module]
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for name in imported_modules(file.read_text(encoding="utf-8"), package):
            parts = name.split(".")
            todo += [prefix for k in range(1, len(parts) + 1) if (prefix := ".".join(parts[:k])) in files]
        # "from package import module" names the module as an attribute of the package
        tree = ast.parse(file.read_text(encoding="utf-8"))
        todo += [f"{node.module}.{alias.name}" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level
                 for alias in node.names if f"{node.module}.{alias.name}" in files]
    return reached


def test_every_module_under_processors_runs_in_a_processor_process() -> None:
    """processors/ holds the stream processors: a module no processor runs belongs in another room."""
    modules = {module_of(file) for file in (ROOT / "processors").rglob("*.py")}
    idle = sorted(module for module in modules - run_by_processes() if module != "processors")
    assert not idle, "modules under processors/ that no processor imports:\n" + "\n".join(idle)
