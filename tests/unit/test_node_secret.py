"""The node's Thrift secret: made once, kept private, reused; an unusable file is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from pepi_fleet.node.secret import SECRET_FILE, load_or_create_secret
from pepi_fleet.schemas.secret import NodeSecret


def test_node_secret_is_created_private_and_reused(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert NodeSecret(secret=secret).secret == secret  # the published payload accepts it
    assert load_or_create_secret(tmp_path / "data") == secret


def test_node_secret_differs_between_nodes(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


@pytest.mark.parametrize("content", [b"", b"short", b"\xff" * 40, b"spaces in it " * 4])
def test_node_secret_unusable_file_is_replaced(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SECRET_FILE).write_bytes(content)
    secret = load_or_create_secret(tmp_path)
    assert NodeSecret(secret=secret).secret == secret
    assert (tmp_path / SECRET_FILE).read_text().strip() == secret


def test_node_secret_file_made_readable_is_made_private_again(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    assert load_or_create_secret(tmp_path) == secret
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600
