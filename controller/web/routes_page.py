"""The web page at ``/`` and the capture-set fragments its script swaps in.

Node cards are built by the page's script from ``GET /api/nodes`` and the event stream's
``nodes`` diffs (``static/nodes.js``)."""

from __future__ import annotations

import html
import logging
import time
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import get_args
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from pepi_fleet.controller.access import OPEN, Principal
from pepi_fleet.controller.export import Layout
from pepi_fleet.controller.ledger import ImageState
from pepi_fleet.controller.node_report import FleetOut, NodeOut
from pepi_fleet.controller.presence import NodeState
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.api_models import CaptureSetDetail
from pepi_fleet.controller.web.routes_captures import capture_detail
from pepi_fleet.controller.web.routes_deps import (
    CaptureIdPath,
    ControllerDep,
    PrincipalDep,
    unknown_capture,
)
from pepi_fleet.controller.web.routes_export import export_url
from pepi_fleet.schemas.camera import MAX_EXPOSURE_US, AwbMode

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
HISTORY = 20
EXPORTS: list[tuple[Layout, str]] = [
    ("meshroom", "Meshroom"),
    ("colmap", "COLMAP"),
    ("flat", "flat"),
]
NONE = "\N{EN DASH}"
NO_CACHE = {"Cache-Control": "no-store"}
SCRIPTS = ("format.js", "previews.js", "nodes.js", "app.js", "settings.js")
"""The page's scripts, in the order they run (plain deferred scripts, no build step)."""


class Safe(str):
    """HTML that is already escaped (or built from escaped parts)."""


@lru_cache(maxsize=8)
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(name: str, **values: object) -> Safe:
    """Fill ``templates/<name>``; every value is escaped unless it is ``Safe``."""
    escaped = {k: v if isinstance(v, Safe) else html.escape(str(v)) for k, v in values.items()}
    return Safe(_template(name).substitute(escaped))


def join(parts: list[Safe]) -> Safe:
    """Concatenate fragments."""
    return Safe("".join(parts))


def tag(name: str, text: object, **attrs: object) -> Safe:
    """``<name attrs>text</name>`` with text and attribute values escaped."""
    attr = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items()
    )
    body = text if isinstance(text, Safe) else html.escape(str(text))
    return Safe(f"<{name}{attr}>{body}</{name}>")


def when(ts: float | None) -> Safe:
    """A ``<time>`` the script shows in the viewer's local time."""
    if ts is None:
        return Safe(NONE)
    utc = time.strftime("%H:%M:%S", time.gmtime(ts))
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return tag("time", f"{utc} UTC", datetime=iso, data_ts=f"{ts:.3f}")


def size(n: int) -> str:
    """Bytes for people."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def plural(n: int, noun: str) -> str:
    """``1 capture``, ``2 captures``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def spread_text(spread_s: float | None) -> str:
    """Spread in milliseconds."""
    return NONE if spread_s is None else f"{spread_s * 1000:.3f} ms"


def set_view_url(capture_id: str) -> str:
    """Where the set view of a capture set is (``routes_set_view``)."""
    return f"/sets/{quote(capture_id, safe='')}"


def export_links(capture_id: str) -> Safe:
    """Zips of the set laid out for photogrammetry tools."""
    links = [
        tag("a", label, href=export_url(capture_id, layout), download="")
        for layout, label in EXPORTS
    ]
    return tag("span", Safe("export for " + ", ".join(links)), class_="export")


def capture_set(detail: CaptureSetDetail) -> Safe:
    """One capture set: per-node status, spread, thumbnails, zip and export links."""
    is_open = detail.state == "open"
    parts = []
    for r in detail.results:
        if r.status is None:
            text, cls = ("waiting…" if is_open else "no answer"), "wait"
        elif r.status == "ok":
            text, cls = f"ok · {plural(len(r.frames), 'frame')}", "ok"
        else:
            text, cls = f"{r.status}{': ' + r.error if r.error else ''}", "bad"
        parts.append(tag("li", Safe(f"<b>{r.node_id}</b> {html.escape(text)}"), class_=cls))
    for site, nodes in detail.unreachable.items():
        text = f"cut off (its bridge was down): {', '.join(nodes)} not triggered"
        parts.append(
            tag("li", Safe(f"<b>site {html.escape(site)}</b> {html.escape(text)}"), class_="cut")
        )
    thumbs = []
    for f in detail.files:
        label = f"{f.node_id} cam{f.camera}"
        if f.thumbnail_url and f.url:
            img = Safe(
                f'<img src="{f.thumbnail_url}" alt="{label}" title="{label}" loading="lazy">'
            )
            thumbs.append(tag("a", img, href=f.url, target="_blank", rel="noopener"))
        elif f.state is ImageState.FAILED:
            thumbs.append(tag("span", f"{label}: retrying", class_="thumb failed"))
        elif f.state is not ImageState.DONE:
            thumbs.append(tag("span", f"{label}: downloading…", class_="thumb pending"))
    busy = any(f.state in (ImageState.PENDING, ImageState.DOWNLOADING) for f in detail.files)
    images = f"{detail.images_done}/{detail.images_total} images"
    if detail.images_failed:
        images += f", {detail.images_failed} failed"
    view = tag("a", "set view", href=set_view_url(detail.capture_id), class_="set-view")
    zip_link = (
        join(
            [
                tag("a", "Download zip", href=detail.zip_url, class_="zip", download=""),
                export_links(detail.capture_id),
            ]
        )
        if detail.images_done
        else ""
    )
    scheduled = Safe(f" · fires {when(detail.at)}") if detail.at else ""
    target = f" · node {detail.target_node}" if detail.target_node else ""
    return render(
        "capture_set.html",
        capture_id=detail.capture_id,
        state=detail.state,
        live="1" if is_open or busy else "0",
        when=Safe(when(detail.triggered_at) + scheduled + html.escape(target)),
        spread=spread_text(detail.spread_s),
        images=images,
        view=view,
        zip=zip_link,
        parts=join(parts),
        thumbs=join(thumbs),
    )


def static_version() -> str:
    """Changes whenever a static file does: the page's links to them bypass old caches."""
    return str(max(int(p.stat().st_mtime) for p in STATIC.iterdir()))


def settings_section(controller: Controller, nodes: list[NodeOut]) -> Safe:
    """The camera settings form and the lock-exposure button (``static/settings.js``)."""
    fleet = controller.camera_settings.fleet().model_dump_json(exclude_none=True)
    online = [n.node_id for n in nodes if n.state is NodeState.ONLINE]
    return render(
        "settings_form.html",
        fleet="none" if fleet == "{}" else fleet,
        node_options=join([tag("option", n, value=n) for n in online]),
        awb_options=join([tag("option", f"auto: {m}", value=m) for m in get_args(AwbMode)]),
        max_exposure=MAX_EXPOSURE_US,
    )


def scripts(version: str) -> Safe:
    """The ``<script>`` tags of the page."""
    return join(
        [Safe(f'<script src="/static/{name}?v={version}" defer></script>') for name in SCRIPTS]
    )


def page(controller: Controller, principal: Principal = OPEN) -> Safe:
    """The whole page as it is now, as ``principal`` may use it (a viewer has no capture
    buttons); the script keeps it current from then on."""
    fleet = FleetOut.of(
        controller.nodes(), controller.broker_connected, time.time(), controller.clock_of
    )
    details = [
        capture_detail(d)
        for r in controller.ledger.list_sets(HISTORY)
        if (d := controller.ledger.get_set(r.set_id)) is not None
    ]
    spreads = [d.spread_s for d in details if d.spread_s is not None and d.state == "complete"]
    messages = (
        ""
        if fleet.broker_connected
        else tag(
            "p",
            "The controller is not connected to the MQTT broker: captures cannot be "
            "triggered and node states are stale until it reconnects.",
            class_="msg error",
            data_key="broker",
        )
    )
    return render(
        "page.html",
        version=(version := static_version()),
        scripts=scripts(version),
        role=principal.role.value,
        user=principal.name,
        user_hidden="" if principal.name else " hidden",
        online=fleet.counts.online,
        stale=fleet.counts.stale,
        offline=fleet.counts.offline,
        broker_class="up" if fleet.broker_connected else "down",
        broker_text="connected" if fleet.broker_connected else "unreachable",
        last_spread=spread_text(spreads[0] if spreads else None),
        messages=messages,
        no_nodes_hidden=" hidden" if fleet.nodes else "",
        settings=settings_section(controller, fleet.nodes),
        nodes_toolbar=render("nodes_toolbar.html"),
        captures=join([capture_set(d) for d in details]),
        no_captures_hidden=" hidden" if details else "",
    )


@router.get("/", response_class=HTMLResponse)
def index(controller: ControllerDep, principal: PrincipalDep) -> HTMLResponse:
    """The page."""
    return HTMLResponse(page(controller, principal or OPEN), headers=NO_CACHE)


@router.get("/ui/captures/{capture_id}", response_class=HTMLResponse)
def capture_fragment(capture_id: CaptureIdPath, controller: ControllerDep) -> HTMLResponse:
    """One capture set, for the script to swap in."""
    detail = controller.ledger.get_set(capture_id)
    if detail is None:
        raise unknown_capture(capture_id)
    return HTMLResponse(capture_set(capture_detail(detail)), headers=NO_CACHE)
