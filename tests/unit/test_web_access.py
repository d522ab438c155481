"""Users and API tokens in the data dir: hashed, private, re-read when the CLI changes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from pepi_fleet.cli import main
from pepi_fleet.controller.access import (
    ACCESS_FILE,
    AccessError,
    AccessStore,
    Principal,
    Role,
)

# cheap parameters: the tests check behaviour, not the cost of guessing
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> AccessStore:
    return AccessStore(tmp_path, FAST)


def test_access_user_password_is_hashed_and_checked(store: AccessStore) -> None:
    store.add_user("olga", Role.OPERATOR, "correct horse")
    text = store.path.read_text()
    assert "correct horse" not in text and "$argon2" in text
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.verify_password("olga", "correct horse") == Principal(
        "olga", Role.OPERATOR, "password"
    )
    assert store.verify_password("olga", "wrong horse") is None
    assert store.verify_password("nobody", "correct horse") is None


def test_access_user_rules(store: AccessStore) -> None:
    with pytest.raises(AccessError, match="at least 8"):
        store.add_user("olga", Role.OPERATOR, "short")
    with pytest.raises(AccessError, match="invalid user name"):
        store.add_user("../etc", Role.OPERATOR, "long enough")
    store.add_user("olga", Role.VIEWER, "first password")
    with pytest.raises(AccessError, match="--replace"):
        store.add_user("olga", Role.OPERATOR, "second password")
    store.add_user("olga", Role.OPERATOR, "second password", replace=True)
    assert store.role_of("olga") is Role.OPERATOR
    assert store.verify_password("olga", "first password") is None


def test_access_tokens_are_kept_as_hashes_and_revocable(store: AccessStore) -> None:
    token = store.add_token("ha", Role.VIEWER)
    assert token.startswith("pepi_") and len(token) > 40
    assert token not in store.path.read_text()
    assert store.verify_token(token) == Principal("ha", Role.VIEWER, "token")
    assert store.verify_token(token + "x") is None
    with pytest.raises(AccessError, match="exists"):
        store.add_token("ha", Role.OPERATOR)
    assert store.remove_token("ha") is True
    assert store.verify_token(token) is None
    assert store.remove_token("ha") is False


def test_access_running_controller_sees_changes_at_once(tmp_path: Path) -> None:
    running, cli = AccessStore(tmp_path, FAST), AccessStore(tmp_path, FAST)
    assert running.empty()
    cli.add_user("vic", Role.VIEWER, "viewer password")
    assert running.role_of("vic") is Role.VIEWER
    cli.remove_user("vic")
    assert running.role_of("vic") is None
    assert running.empty()


def test_access_unreadable_file_lets_nobody_in(tmp_path: Path) -> None:
    (tmp_path / ACCESS_FILE).write_text("{not json")
    store = AccessStore(tmp_path, FAST)
    assert store.role_of("olga") is None and store.verify_token("pepi_x") is None
    with pytest.raises(AccessError, match="cannot read"):
        store.add_user("olga", Role.OPERATOR, "long enough")


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_access_cli_user_add_prompts_twice_list_remove(tmp_path: Path) -> None:
    base = ["controller", "--data-dir", str(tmp_path), "user"]
    olga = "pw-olga-1\npw-olga-1\n"
    code, _out, err = run(*base, "add", "olga", "--role", "operator", input=olga)
    assert code == 0, err
    code, _out, err = run(*base, "add", "vic", input="pw-vic-11\nother-one\npw-vic-11\npw-vic-11\n")
    assert code == 0, err  # a mismatch is asked again
    code, out, _err = run(*base, "list")
    assert "olga" in out and "operator" in out and "vic" in out and "viewer" in out
    assert AccessStore(tmp_path, FAST).verify_password("olga", "pw-olga-1") is not None
    code, _out, err = run(*base, "remove", "vic")
    assert code == 0 and "user vic removed" in err
    code, _out, err = run(*base, "remove", "vic")
    assert code != 0 and "no user 'vic': 'pepi controller user list' lists them" in err


def test_access_cli_user_add_reads_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-1\n")
    code, _out, err = run(
        "controller", "--data-dir", str(tmp_path / "d"), "user", "add", "olga",
        "--role", "operator", "--password-file", str(secret),
    )  # fmt: skip
    assert code == 0, err
    assert AccessStore(tmp_path / "d", FAST).verify_password("olga", "from-a-file-1")


def test_access_cli_has_no_password_option(tmp_path: Path) -> None:
    code, _out, err = run(
        "controller", "--data-dir", str(tmp_path), "user", "add", "olga", "--password", "x"
    )
    assert code == 2 and "No such option" in err


def test_access_cli_token_add_prints_it_once(tmp_path: Path) -> None:
    base = ["controller", "--data-dir", str(tmp_path), "token"]
    code, out, err = run(*base, "add", "ha", "--role", "operator")
    assert code == 0, err
    token = out.strip()
    assert "shown only now" in err
    assert AccessStore(tmp_path, FAST).verify_token(token) is not None
    code, out, _err = run(*base, "list")
    assert "ha" in out and token not in out
    assert json.loads((tmp_path / ACCESS_FILE).read_text())["tokens"]["ha"]["role"] == "operator"
    code, _out, err = run(*base, "remove", "ha")
    assert code == 0 and "token ha revoked" in err
    assert AccessStore(tmp_path, FAST).verify_token(token) is None
    code, _out, err = run(*base, "remove", "ha")
    assert code != 0 and "no token 'ha': 'pepi controller token list' lists them" in err


def test_access_cli_needs_the_data_dir() -> None:
    code, _out, err = run("controller", "user", "list")
    assert code == 2 and "--data-dir" in err
