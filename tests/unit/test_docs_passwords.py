"""No password on a command line in the docs: 'ps' shows command lines to every user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docker-compose.yml", "broker/mosquitto.conf", "deploy/compose.env.example"]
ON_A_COMMAND_LINE = [
    re.compile(r"--password(?!-file)[ =]\S"),  # pepi --password X
    re.compile(r"(?<![\w-])-P\s+(?![<…])\S"),  # -P X (not a placeholder: -P <…>, -P …)
    re.compile(r"mosquitto_passwd\b[^\n]*\s-b\b"),  # mosquitto_passwd -b FILE USER X
    re.compile(r"mqtts?://[^/\s:@]+:[^/\s@]+@"),  # mqtt://user:pass@host
]


@pytest.mark.parametrize("doc", DOCS)
def test_docs_put_no_password_on_a_command_line(doc: str) -> None:
    text = (REPO / doc).read_text()
    found = [m.group(0) for pattern in ON_A_COMMAND_LINE for m in pattern.finditer(text)]
    assert not found, f"{doc}: a password on a command line: {found}"


def test_docs_patterns_catch_what_they_should() -> None:
    bad = [
        "pepi controller --password hunter2",
        'mosquitto_pub -u automation -P "$PW" -t x',
        "mosquitto_passwd -c -b passwd controller secret",
        "pepi nodes --broker mqtt://controller:hunter2@rig:1883",
    ]
    for line in bad:
        assert any(p.search(line) for p in ON_A_COMMAND_LINE), line
    good = "pepi nodes --password-file /etc/pepi/pw --broker mqtt://rig:1883"
    assert not any(p.search(good) for p in ON_A_COMMAND_LINE)
