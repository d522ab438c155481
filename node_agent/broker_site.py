"""Which site's broker a node is on, from the bridge states that broker holds (pure)."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class BrokerSite:
    """The site a node reports in its status: the one its broker says, else ``--site``.

    A site's broker holds its own bridge's state (``<root>/sites/<site>/bridge``, retained,
    published by mosquitto as the bridge's notification) and lets its nodes read it (the
    ACL ``pepi broker init --site`` writes). So a node that sees exactly one site's bridge
    state is on that site's broker, whatever it was started with: a node started without
    ``--site`` there would otherwise be shown stale instead of unreachable while the bridge
    is down. A broker holding several sites' states is a central one with an open ACL; it
    teaches nothing.
    """

    def __init__(self, configured: str | None) -> None:
        self.configured = configured
        self._held: set[str] = set()  # sites whose bridge state the broker holds
        self._lock = threading.Lock()

    @property
    def site(self) -> str | None:
        """The site to report: the broker's own, when it has exactly one, else ``--site``."""
        with self._lock:
            return self._learnt() or self.configured

    def on_bridge_state(self, site: str, payload: bytes) -> bool:
        """Handle ``sites/<site>/bridge`` as the broker delivers it: ``1`` or ``0`` (what
        mosquitto publishes), empty (the state was cleared). True when the site to report
        changed; anything else is ignored."""
        if payload not in (b"1", b"0", b""):
            logger.warning("ignoring bridge state %r of site %s", payload[:40], site)
            return False
        with self._lock:
            before = self._learnt() or self.configured
            if payload:
                self._held.add(site)
            else:
                self._held.discard(site)
            learnt = self._learnt()
            after = learnt or self.configured
        if after == before:
            return False
        if learnt is not None and self.configured is None:
            logger.info(
                "this node's broker is site %s's (it holds that bridge's state): reporting "
                "site %s; start the node with --site %s to say so",
                learnt, learnt, learnt,
            )  # fmt: skip
        elif learnt is not None:
            logger.warning(
                "started with --site %s, but this node's broker is site %s's (it holds that "
                "bridge's state): reporting site %s; correct --site",
                self.configured, learnt, learnt,
            )  # fmt: skip
        else:
            logger.info("no single site's bridge on this broker: reporting site %s", after)
        return True

    def _learnt(self) -> str | None:
        return next(iter(self._held)) if len(self._held) == 1 else None
