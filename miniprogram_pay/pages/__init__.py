"""Server-rendered pages: Jinja2 templates, plain static files, a strict Content-Security-Policy.

The sandbox console uses it, and any page of the package should: templates and
static files come from package folders (no build step), and pages carry no
inline script, handler or style, so the policy allows the page's own origin
only. Jinja2 is an extra (``pip install 'miniprogram-pay[pages]'``, part of
``[serve]``), imported on the first render.

Example::

    pages = Pages("myapp.console", static_name="console-static")
    routes = [Route("/", index), pages.static_route("/static")]

    async def index(request: Request) -> Response:
        return pages.render(request, "index.html", {"title": "Console"})
"""

from __future__ import annotations

from miniprogram_pay.pages.diagram import Diagram, DiagramEdge, DiagramNode, state_diagram
from miniprogram_pay.pages.rendering import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, Pages

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "Diagram",
    "DiagramEdge",
    "DiagramNode",
    "Pages",
    "state_diagram",
]
