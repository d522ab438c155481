"""Downloads of a capture set: one image, its thumbnail, the manifest, the whole set as a zip."""

from __future__ import annotations

import io
import logging
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image, UnidentifiedImageError

from pepi_fleet.controller.ledger import ImageState, SetDetail
from pepi_fleet.controller.manifest import MANIFEST_FILE
from pepi_fleet.controller.service import Controller
from pepi_fleet.controller.web.api_models import THUMBNAIL_FORMATS, ApiError
from pepi_fleet.controller.web.routes_deps import (
    ERRORS,
    CaptureIdPath,
    ControllerDep,
    unknown_capture,
)
from pepi_fleet.controller.zip_stream import stream_zip

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["files"], responses=ERRORS)

FILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
MEDIA_TYPES = {".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png"}
FileName = Annotated[
    str,
    PathParam(pattern=FILE_NAME_PATTERN, max_length=200, description="a file name of the set"),
]
IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "The image"}
}


def _set_or_404(controller: Controller, capture_id: str) -> SetDetail:
    detail = controller.ledger.get_set(capture_id)
    if detail is None:
        raise unknown_capture(capture_id)
    return detail


def _set_files(controller: Controller, detail: SetDetail) -> dict[str, tuple[Path, str]]:
    """Verified files of a set (and its manifest) by name: (path, format).

    Names come from the ledger, never from the request, so no request can reach
    outside the set's folder.
    """
    data_dir = controller.config.data_dir
    files = {
        PurePosixPath(img.path).name: (data_dir / img.path, img.format)
        for img in detail.images
        if img.state is ImageState.DONE
    }
    manifest = data_dir / detail.record.set_id / MANIFEST_FILE
    if manifest.is_file():
        files[MANIFEST_FILE] = (manifest, "json")
    return files


def _file_or_404(controller: Controller, capture_id: str, name: str) -> tuple[Path, str]:
    files = _set_files(controller, _set_or_404(controller, capture_id))
    found = files.get(name)
    if found is None or not found[0].is_file():
        raise HTTPException(
            404,
            f"capture set {capture_id} has no downloaded file {name!r} (yet): "
            f"see GET /api/captures/{capture_id} for its files",
        )
    return found


@router.get("/captures/{capture_id}/files/{name}", summary="Download one file", responses=IMAGE)
def download_file(capture_id: CaptureIdPath, name: FileName, controller: ControllerDep) -> Response:
    """One verified image of the set, byte for byte as the node stored it (or manifest.json)."""
    path, _fmt = _file_or_404(controller, capture_id, name)
    media = "application/json" if name == MANIFEST_FILE else None
    return FileResponse(
        path,
        media_type=media or MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        filename=name,
        content_disposition_type="inline",
    )


@router.get(
    "/captures/{capture_id}/files/{name}/thumbnail",
    summary="Thumbnail of one image",
    responses={**IMAGE, 415: {"model": ApiError, "description": "Not an image format"}},
)
def thumbnail(
    capture_id: CaptureIdPath,
    name: FileName,
    controller: ControllerDep,
    width: Annotated[int, Query(ge=16, le=1024, description="longest side in pixels")] = 320,
) -> Response:
    """A small JPEG of one image (cached; the files never change once verified)."""
    path, fmt = _file_or_404(controller, capture_id, name)
    if fmt not in THUMBNAIL_FORMATS:
        raise HTTPException(415, f"{name} is {fmt}, which has no thumbnail: download the file")
    stat = path.stat()
    try:
        data = _thumbnail(str(path), stat.st_mtime_ns, stat.st_size, width)
    except (OSError, UnidentifiedImageError) as exc:
        logger.warning("no thumbnail of %s: %s", path, exc)
        raise HTTPException(415, f"{name} could not be read as an image: download it") from exc
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"}
    )


@lru_cache(maxsize=256)
def _thumbnail(path: str, mtime_ns: int, size: int, width: int) -> bytes:
    with Image.open(path) as img:
        img.draft("RGB", (width, width))  # JPEG decodes at a reduced scale: fast on big frames
        small = img.convert("RGB")
        small.thumbnail((width, width))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


@router.get(
    "/captures/{capture_id}/zip",
    summary="Download the set as a zip",
    responses={
        200: {"content": {"application/zip": {}}, "description": "Streamed zip"},
        409: {"model": ApiError, "description": "No image of the set is downloaded yet"},
    },
)
def download_zip(capture_id: CaptureIdPath, controller: ControllerDep) -> StreamingResponse:
    """Every verified image of the set plus manifest.json, streamed (stored, not recompressed)."""
    files = _set_files(controller, _set_or_404(controller, capture_id))
    if not any(fmt != "json" for _path, fmt in files.values()):
        raise HTTPException(
            409, f"capture set {capture_id} has no downloaded images yet: try again shortly"
        )
    members = [(f"{capture_id}/{name}", path) for name, (path, _fmt) in sorted(files.items())]
    return StreamingResponse(
        stream_zip(members),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{capture_id}.zip"'},
    )
