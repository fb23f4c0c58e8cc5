"""The browser admin UI: static files from the top-level ui/ folder.

``GET /`` returns ui/index.html, and ``GET /ui/<path>`` serves the rest (the
JavaScript modules, the stylesheet and the vendored hls.js). The page calls
the REST API under /api, so these routes add no other server logic.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

# NOTE: the folder is found next to the package in a source checkout (or an
# editable install). A wheel does not contain ui/ yet, so a box installed from
# a wheel logs a warning and serves no UI.
UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def setup_ui(app: web.Application, ui_dir: Path = UI_DIR) -> None:
    """Add ``GET /`` and ``GET /ui/<path>``, when ``ui_dir`` has an index.html."""
    index = ui_dir / "index.html"
    if not index.is_file():
        logger.warning("admin UI not served: %s is missing", index)
        return

    async def index_page(_request: web.Request) -> web.FileResponse:
        # The page is small and changes with each upgrade, so browsers must
        # revalidate it instead of keeping an old copy.
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    root = ui_dir.resolve()

    async def ui_file(request: web.Request) -> web.FileResponse:
        # aiohttp's static route returns a missing file as with a bare 404 that
        # bypasses the error middleware, so the lookup is done here and a
        # missing file gets the JSON 404 like every other path.
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", index_page)
    app.router.add_get("/ui/{path:.+}", ui_file)
