"""A node's site from the bridge states its broker holds: learnt on a site broker, kept from
--site elsewhere, never guessed on a broker holding several sites' states."""

from __future__ import annotations

import pytest

from pepi_fleet.node.broker_site import BrokerSite


def test_broker_site_learnt_from_the_only_bridge_its_broker_holds() -> None:
    site = BrokerSite(None)
    assert site.site is None
    assert site.on_bridge_state("north", b"1")
    assert site.site == "north"
    # the bridge going down and up again is the same site: nothing to republish
    assert not site.on_bridge_state("north", b"0")
    assert not site.on_bridge_state("north", b"1")
    assert site.site == "north"


def test_broker_site_overrides_a_wrong_site_option(caplog: pytest.LogCaptureFixture) -> None:
    site = BrokerSite("south")
    assert site.site == "south"
    assert site.on_bridge_state("north", b"1")
    assert site.site == "north"
    assert "started with --site south" in caplog.text


def test_broker_site_several_sites_held_is_a_central_broker() -> None:
    """An open ACL on the central broker shows every site's bridge: none is the node's."""
    site = BrokerSite(None)
    site.on_bridge_state("north", b"1")
    assert site.on_bridge_state("south", b"1")
    assert site.site is None
    configured = BrokerSite("east")
    configured.on_bridge_state("north", b"1")
    configured.on_bridge_state("south", b"0")
    assert configured.site == "east"


def test_broker_site_cleared_state_forgets_the_site() -> None:
    site = BrokerSite("north")
    assert not site.on_bridge_state("north", b"1")
    assert not site.on_bridge_state("north", b"")
    learnt = BrokerSite(None)
    learnt.on_bridge_state("north", b"1")
    assert learnt.on_bridge_state("north", b"")
    assert learnt.site is None


def test_broker_site_ignores_what_no_bridge_publishes() -> None:
    site = BrokerSite(None)
    assert not site.on_bridge_state("north", b"up")
    assert not site.on_bridge_state("north", b"\xff" * 100)
    assert site.site is None
