"""The broker's ACL: the shipped ``broker/acl`` rendered for a topic root and a list of nodes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

PRODUCTION_ROOT = "pepi/v1"

NODE_READS = (
    "{root}/capture",
    "{root}/settings",
    "{root}/sync/server",
    "homeassistant/status",
)
"""What every node reads besides its own subtree. These topics hold no ``%u``, and mosquitto
2.0 warns about a ``pattern`` without ``%u``/``%c``, so each node gets them in a ``user``
section of its own (``broker/acl`` says so where the patterns are)."""


def production_acl() -> str:
    """The ACL shipped in ``broker/acl``."""
    return resources.files("pepi_fleet.broker").joinpath("acl").read_text()


def named_users(acl: str) -> list[str]:
    """The usernames that have a ``user`` section in ``acl``, in order."""
    users = []
    for line in acl.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            users.append(words[1])
    return users


SITE_NODE_READS = ("{root}/sites/+/bridge",)
"""What a node also reads on a site broker: the bridge state that broker holds (its own
site's only), from which a node started without ``--site`` learns its site. Not on the
central broker, which holds every site's: its nodes would take another site for theirs."""


def node_section(root: str, node: str, site_broker: bool = False) -> str:
    """The ``user`` section one node needs on top of the shared ``%u`` patterns (on a site
    broker, with ``site_broker``, also that broker's bridge state)."""
    reads = NODE_READS + (SITE_NODE_READS if site_broker else ())
    lines = [f"user {node}", *(f"topic read {topic.format(root=root)}" for topic in reads)]
    return "\n".join(lines) + "\n"


def bridge_user(site: str) -> str:
    """The central broker's login for a site's bridge."""
    return f"bridge-{site}"


def bridge_section(root: str, site: str, nodes: Sequence[str]) -> str:
    """The central broker's ``user`` section for a site's bridge: exactly what each of the
    site's nodes may read and write (the shipped ``%u`` patterns, spelled out per node),
    and the site's bridge state (its notification topic)."""
    rules = []
    for line in production_acl().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "pattern" and "%u" in words[2]:
            rules.append((words[1], words[2].replace(PRODUCTION_ROOT + "/", root + "/")))
    lines = [f"user {bridge_user(site)}", f"topic write {root}/sites/{site}/bridge"]
    lines += [f"topic read {topic.format(root=root)}" for topic in NODE_READS]
    for node in nodes:
        lines += [f"topic {access} {topic.replace('%u', node)}" for access, topic in rules]
    return "\n".join(lines) + "\n"


def render_acl(
    root: str,
    anonymous_access: bool,
    nodes: Iterable[str] = (),
    sites: Mapping[str, Sequence[str]] | None = None,
    *,
    site_broker: bool = False,
) -> str:
    """The production ACL for ``root`` with a section per node in ``nodes`` and one per
    bridged site in ``sites`` (site -> the nodes on its broker). ``site_broker``: the ACL of
    a site's own broker, whose nodes read its bridge state.

    With ``anonymous_access`` a section comes first that lets anonymous clients read
    everything under the root and publish the trigger topics (the loopback demo and tests).
    """
    nodes = list(nodes)
    body = production_acl().replace(PRODUCTION_ROOT + "/", root + "/")
    named = set(named_users(body))
    clash = sorted(named.intersection(nodes))
    if clash:
        raise ValueError(f"node id {clash[0]!r} is taken by a broker user: rename the node")
    sections = [node_section(root, node, site_broker) for node in nodes]
    if sections:
        body += "\n# one section per node: triggers, fleet settings, Home Assistant's birth\n"
        body += "\n".join(sections)
    bridges = [bridge_section(root, site, site_nodes) for site, site_nodes in (sites or {}).items()]
    if bridges:
        body += "\n# one section per site broker's bridge: its nodes' topics, its bridge state\n"
        body += "\n".join(bridges)
    if not anonymous_access:
        return body
    anon = (
        "# anonymous (loopback demo/tests): watch everything but the nodes' secrets, trigger\n"
        f"topic deny {root}/nodes/+/secret\n"
        f"topic read {root}/#\n"
        f"topic write {root}/capture\n"
        f"topic write {root}/nodes/+/capture\n"
        f"topic write {root}/nodes/+/clock/ping\n"
        "topic read homeassistant/#\n\n"
    )
    return anon + body
