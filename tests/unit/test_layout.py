"""The package's shape: one import name, imports only downward, a node that loads no web stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pepi_fleet

PACKAGE = Path(pepi_fleet.__file__).parent

# which pepi_fleet sub-packages each layer may import
ALLOWED = {
    "schemas": {"schemas"},
    "core": {"schemas", "core"},
    "node": {"schemas", "core", "node"},
    "controller": {"schemas", "core", "controller", "broker"},
    "broker": {"schemas", "core", "broker"},
}


def imported_layers(path: Path) -> set[str]:
    """The pepi_fleet sub-packages a module imports (statically, lazy imports included)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] in ("schemas", "node_agent", "controller", "broker"):
                layers.add(f"bare:{parts[0]}")
            elif parts[0] == "pepi_fleet" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layout_layers_import_only_downward(layer: str) -> None:
    bad = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        wrong = imported_layers(path) - ALLOWED[layer]
        if wrong:
            bad[str(path.relative_to(PACKAGE))] = sorted(wrong)
    assert not bad, f"{layer} imports what it must not: {bad}"


THRIFT_MODULES = {
    "core/idl.py",
    "core/thrift_map.py",
    "node/thrift_server.py",
    "controller/thrift_node_client.py",
}


def test_layout_thrift_types_stay_in_the_thrift_modules() -> None:
    thrift = {"thriftpy2", "pepi_fleet.core.idl", "pepi_fleet.core.thrift_map"}
    users = set()
    modules = [
        *PACKAGE.glob("*.py"),
        *(p for layer in ALLOWED for p in (PACKAGE / layer).rglob("*.py")),
    ]
    for path in sorted(modules):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            if any(n == t or n.startswith(t + ".") for n in names for t in thrift):
                users.add(path.relative_to(PACKAGE).as_posix())
    assert users == THRIFT_MODULES, f"Thrift imported outside its modules: {users - THRIFT_MODULES}"


def test_layout_one_idl_shipped_with_the_package() -> None:
    from pepi_fleet.core.idl import IDL_PATH, load

    assert IDL_PATH.is_file()
    assert {"CameraServer", "FleetCameraServer"} <= set(vars(load()))


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_layout_node_entry_loads_no_controller_or_web_stack() -> None:
    loaded = _modules_after(
        "import click\n"
        "from pepi_fleet.cli import main\n"
        "cmd = main.get_command(click.Context(main), 'node')\n"
        "assert cmd is not None and cmd.name == 'node'\n"
        "import pepi_fleet.node.agent, pepi_fleet.node.thrift_server, pepi_fleet.node.stream"
    )
    for heavy in ("fastapi", "uvicorn", "starlette", "websockets", "pepi_fleet.controller"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded), heavy


def test_layout_cli_commands_load_no_web_stack() -> None:
    # pepi nodes / pepi capture report nodes with the same model as /api/nodes, outside web/
    loaded = _modules_after(
        "import click\n"
        "from pepi_fleet.cli import main\n"
        "for name in ('nodes', 'capture', 'controller', 'export'):\n"
        "    assert main.get_command(click.Context(main), name) is not None\n"
        "import pepi_fleet.controller.node_report"
    )
    for heavy in ("fastapi", "uvicorn", "starlette", "pepi_fleet.controller.web"):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in loaded), heavy


def test_layout_pepi_node_script_runs_the_node_command() -> None:
    script = Path(sys.executable).with_name("pepi-node")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--broker" in out.stdout and "--data-dir" in out.stdout


def test_layout_node_pins_glibc_mmap_threshold() -> None:
    from pepi_fleet.node.memory import pin_mmap_threshold

    # glibc everywhere this project runs (Debian, Raspberry Pi OS): frames stay on mmap
    assert pin_mmap_threshold() is True
