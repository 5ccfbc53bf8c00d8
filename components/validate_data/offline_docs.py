"""Data Docs that render styled without network.

great-expectations' Data Docs pages load Bootstrap, bootstrap-table, Font Awesome, jQuery and Vega from
public CDNs (unpkg, jsdelivr, cdnjs, maxcdn, code.jquery.com). On an air-gapped cluster, or a laptop offline,
such a page shows unstyled. `make_offline` rewrites every page of a built site: the remote <link> and
<script src> tags go, and static/data_docs.css (the subset of those styles the pages use) is inlined.
Scripts are not replaced: the pages are static tables and read fine without them (no sorting or filtering).
"""

from __future__ import annotations

import re
from pathlib import Path

from components.common.io import atomic_write_text

CSS_FILE = Path(__file__).with_name("static") / "data_docs.css"
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*", re.I)
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>\s*", re.I)
REMOTE_REF = re.compile(r"<(?:link|script)\b[^>]*\b(?:href|src)\s*=\s*[\"']?(?:https?:)?//", re.I)


def offline_html(page: str, css: str | None = None) -> str:
    """`page` without remote stylesheets/scripts, with the offline stylesheet inlined in its <head>."""
    css = CSS_FILE.read_text(encoding="utf-8") if css is None else css
    page = _REMOTE_SCRIPT.sub("", _REMOTE_LINK.sub("", page))
    style = f"<style>/* offline Data Docs styles */\n{css}</style>\n"
    head = re.search(r"</head\s*>", page, re.I)
    return page[: head.start()] + style + page[head.start() :] if head else style + page


def make_offline(site_dir: str | Path) -> int:
    """Rewrite every .html page under `site_dir` (offline_html); returns how many pages were rewritten."""
    css = CSS_FILE.read_text(encoding="utf-8")
    pages = sorted(Path(site_dir).rglob("*.html"))
    for page in pages:
        atomic_write_text(page, offline_html(page.read_text(encoding="utf-8"), css))
    return len(pages)
