"""The browser admin UI: static files from the top-level ui/ folder.

``GET /`` returns ui/index.html, and ``GET /ui/<path>`` serves the rest (the
JavaScript modules, the stylesheet and the vendored hls.js). The page calls
the REST API under /api, so these routes add no other server logic.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

# ui/ next to the package, in a source checkout or an editable install.
SOURCE_UI_DIR = Path(__file__).resolve().parent.parent / "ui"
# Install location of ui/ from a built wheel (the data-files of
# pyproject.toml).
# NOTE: a `pip install --user` puts it under the user base instead, which
# is not looked up, so such a box serves no UI.
INSTALLED_UI_DIR = Path(sys.prefix) / "share" / "realcast-box" / "ui"


def bundle_dir() -> Path | None:
    """Return the folder of a PyInstaller build's data files, or None from source.

    PyInstaller sets ``sys.frozen`` and puts the bundled data under
    ``sys._MEIPASS``: the temporary unpack folder of a one-file build, or
    the _internal folder next to a one-folder build's executable.
    """
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        return Path(sys._MEIPASS)
    return None


def default_ui_dirs() -> tuple[Path, ...]:
    """Return the folders where ui/ may be, in the order they are tried."""
    bundle = bundle_dir()
    if bundle is not None:
        return (bundle / "ui",)
    return (SOURCE_UI_DIR, INSTALLED_UI_DIR)


def find_ui_dir(candidates: Iterable[Path] | None = None) -> Path | None:
    """Return the first folder of ``candidates`` with an index.html, or None.

    ``candidates`` defaults to default_ui_dirs().
    """
    if candidates is None:
        candidates = default_ui_dirs()
    for folder in candidates:
        if (folder / "index.html").is_file():
            return folder
    return None


def setup_ui(app: web.Application, ui_dir: Path | None = None) -> None:
    """Add ``GET /`` and ``GET /ui/<path>`` for ``ui_dir`` (found when None)."""
    if ui_dir is None:
        ui_dir = find_ui_dir()
    if ui_dir is None or not (ui_dir / "index.html").is_file():
        logger.warning(
            "admin UI not served: no index.html in %s",
            " or ".join(str(folder) for folder in default_ui_dirs()),
        )
        return
    index = ui_dir / "index.html"
    root = ui_dir.resolve()

    async def index_page(_request: web.Request) -> web.FileResponse:
        # The page is small and changes with each upgrade, so browsers must
        # revalidate it instead of keeping an old copy.
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def ui_file(request: web.Request) -> web.FileResponse:
        # aiohttp's static route returns a missing file as a bare 404 that
        # bypasses the error middleware, so the lookup is done here and a
        # missing file gets the JSON 404 like every other path.
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", index_page)
    app.router.add_get("/ui/{path:.+}", ui_file)
