"""A site broker's bridge to the central one: the shipped ``broker/bridge.conf`` filled in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from pepi_fleet.broker.access import PRODUCTION_ROOT
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.ids import validate_node_id, validate_site_id

BRIDGE_CONF_NAME = "pepi-bridge.conf"
CENTRAL_TLS_PORT = 8883
_PLACEHOLDER = re.compile(r"@[A-Z]+@")


@dataclass(frozen=True)
class SiteSpec:
    """One site: its broker's name(s) for its nodes' TLS, and the nodes that use it."""

    site: str
    nodes: tuple[str, ...]
    hosts: tuple[str, ...]


def shipped_bridge_conf() -> str:
    """``broker/bridge.conf`` as shipped, with its ``@WORDS@`` placeholders."""
    return resources.files("pepi_fleet.broker").joinpath("bridge.conf").read_text()


def render_bridge_conf(
    site: str, address: str, cafile: str, password: str, root: str = PRODUCTION_ROOT
) -> str:
    """The site's bridge drop-in: ``address`` is the central broker's ``host:port`` (TLS),
    ``cafile`` the path of the rig's CA on the site broker's host."""
    validate_site_id(site)
    if any(c.isspace() for c in address + cafile + password) or not address:
        raise PepiError("bridge address, CA path and password must be non-empty single words")
    text = shipped_bridge_conf()
    for word, value in (
        ("@SITE@", site),
        ("@ADDRESS@", address),
        ("@CAFILE@", cafile),
        ("@PASSWORD@", password),
    ):
        text = text.replace(word, value)
    left = _PLACEHOLDER.findall(text)
    if left:
        raise PepiError(f"broker/bridge.conf has an unknown placeholder {left[0]}")
    return text.replace(f"{PRODUCTION_ROOT}/", f"{root}/")


def parse_site_option(value: str) -> tuple[str, list[str]]:
    """``north=cam05,cam06`` -> (``north``, [``cam05``, ``cam06``]); PepiError if malformed."""
    site, sep, rest = value.partition("=")
    if not sep:
        raise PepiError(f"--site {value!r}: write SITE=NODE,NODE,... e.g. north=cam05,cam06")
    validate_site_id(site.strip())
    nodes = [validate_node_id(n.strip()) for n in rest.split(",") if n.strip()]
    if not nodes:
        raise PepiError(f"--site {value!r}: name the site's nodes, e.g. {site}=cam05,cam06")
    return site.strip(), nodes
