"""``Pages``: templates and static files from package folders, rendered with security headers."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from miniprogram_pay.errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "Pages"]

BASE_PACKAGE = "miniprogram_pay.pages"
# Only the page's own files: no inline script or style, no other origin, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MISSING_JINJA2 = "pages need Jinja2, which is not installed: pip install 'miniprogram-pay[pages]'"


class Pages:
    """The pages of one feature: its package's ``templates/`` and ``static/`` folders.

    ``packages`` each hold a ``templates`` and a ``static`` folder; this
    package's own (``base.html``, ``diagram.html``, ``pages.css``, ``pages.js``)
    come last, so a feature can extend ``base.html`` and use the shared files.
    Templates get ``static(path)``, the URL of a static file, through the route
    named ``static_name``: give each feature its own name, since a host app
    may have a route called ``static`` already. A page of a mounted app gives
    ``static_path`` (where ``static_route`` is, under the mount) instead.
    """

    def __init__(self, *packages: str, static_name: str, static_path: str | None = None) -> None:
        self.packages = (*packages, BASE_PACKAGE)
        self.static_name = static_name
        # Inside a mounted app the host's router answers url_for: there, the static route's
        # path under the mount (the mount's root_path is put in front) names the files.
        self.static_path = static_path
        self._templates: Jinja2Templates | None = None

    @property
    def available(self) -> bool:
        """Whether Jinja2 is installed (static files work without it)."""
        return importlib.util.find_spec("jinja2") is not None

    def static_route(self, path: str) -> Mount:
        """Serve every package's ``static`` folder under ``path`` (the first package wins)."""
        files = StaticFiles(packages=[(package, "static") for package in self.packages])
        return Mount(path, app=files, name=self.static_name)

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
    ) -> Response:
        """The template ``name`` as an HTML answer with ``SECURITY_HEADERS``."""
        return self.templates.TemplateResponse(
            request, name, dict(context or {}), status_code=status_code, headers=SECURITY_HEADERS
        )

    @property
    def templates(self) -> Jinja2Templates:
        if self._templates is None:
            self._templates = self._load()
        return self._templates

    def _load(self) -> Jinja2Templates:
        if not self.available:
            raise ConfigurationError(MISSING_JINJA2)
        import jinja2
        from starlette.templating import Jinja2Templates

        loader = jinja2.ChoiceLoader(
            [jinja2.PackageLoader(package, "templates") for package in self.packages]
        )
        # StrictUndefined: a misspelt name fails the render instead of printing nothing.
        env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
        return Jinja2Templates(env=env, context_processors=[self._static_urls])

    def _static_urls(self, request: Request) -> dict[str, Callable[[str], str]]:
        def static(path: str) -> str:
            if self.static_path is not None:
                return f"{request.scope.get('root_path', '')}{self.static_path}/{path}"
            # A path, not an absolute URL: right behind a proxy that changes the scheme or host.
            return request.url_for(self.static_name, path=path).path

        return {"static": static}
