"""The operator's dashboard at /dashboard: sign-in, API tokens, usage reports.

Pages (HTML rendered on the server with Jinja2, autoescaped; charts are
inline SVG from `charts.py`; no script, no external resource):

- `GET /dashboard/login`, `POST /dashboard/login`: an admin token for a
  session cookie (`sessions.py`). The sign-in form's CSRF value is a cookie
  and a hidden field that must match (there is no session yet).
- `GET /dashboard`: the reports, filtered by period, token name, language and
  model version: requests, shown, accepted, acceptance rate, accepted and
  retained characters (30 s, 2 min), latency p50/p95 over time, errors by
  kind, the served model and its promotion history.
- `GET /dashboard/tokens`, `POST /dashboard/tokens` (create: the token is
  shown once, in that response only), `POST /dashboard/tokens/revoke`.
- `POST /dashboard/logout`.
- `GET /dashboard/api/report`: the same report as JSON (the page shows exactly
  these numbers), for a session or `Authorization: Bearer <admin token>`.

Every POST needs the session's CSRF token in the form (403 otherwise) and a
form body (x-www-form-urlencoded, at most 16 KiB) whose fields are checked by
pydantic; a GET without a session goes to the sign-in page (the JSON report:
401). Answers carry a Content-Security-Policy without scripts, no framing and
no caching.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from acepilot.server.team import charts
from acepilot.server.team.models import ModelManager
from acepilot.server.team.promotions import history
from acepilot.server.team.sessions import COOKIE, LOGIN_COOKIE, Session, Sessions, same
from acepilot.server.team.store import NO_TOKEN, PERIODS, ReportQuery, UsageStore
from acepilot.server.team.tokens import TOKEN_NAME, TokenError, TokenStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 16 * 1024
PREFIX = "/dashboard"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NAME_PATTERN = TOKEN_NAME.pattern
LANGUAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+#-]{0,31}$"
VERSION_PATTERN = r"^v[0-9]{1,9}$"


class Form(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    csrf: Annotated[str, StringConstraints(max_length=128)] = ""


class LoginForm(Form):
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class TokenForm(Form):
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class Filters(BaseModel):
    """The report's query string; an empty value means "all"."""

    model_config = ConfigDict(extra="forbid")
    period: Literal["1h", "24h", "7d", "30d", "90d"] = "24h"
    token: Annotated[str, StringConstraints(max_length=64)] = ""
    language: Annotated[str, StringConstraints(max_length=32)] = ""
    version: Annotated[str, StringConstraints(max_length=16)] = ""

    def query(self) -> ReportQuery:
        for value, pattern, what in (
            (self.token, NAME_PATTERN, "token"),
            (self.language, LANGUAGE_PATTERN, "language"),
            (self.version, VERSION_PATTERN, "version"),
        ):
            if value and not re.fullmatch(pattern.strip("^$"), value):
                raise FormError(400, f"'{what}' is not a valid {what} filter")
        return ReportQuery(
            self.period, self.token or None, self.language or None, self.version or None
        )


class FormError(Exception):
    """A request the dashboard refuses: status and a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---- formatting: the page shows the API's numbers with these rules ------------------


def fmt_count(value: int | None) -> str:
    return "—" if value is None else str(int(value))


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def fmt_time(value: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))


class Dashboard:
    """The dashboard's state and routes (see the module docstring)."""

    def __init__(
        self,
        store: UsageStore,
        tokens: TokenStore,
        sessions: Sessions,
        manager: ModelManager | None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.sessions = sessions
        self.manager = manager
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            fmt_count=fmt_count, fmt_rate=fmt_rate, fmt_ms=fmt_ms, fmt_time=fmt_time
        )

    def routes(self) -> list[Route]:
        page = self.page
        return [
            Route(PREFIX, page(self.report_page), methods=["GET"]),
            Route(PREFIX + "/", page(self.report_page), methods=["GET"]),
            Route(PREFIX + "/login", page(self.login_page, signed_in=False), methods=["GET"]),
            Route(PREFIX + "/login", page(self.login, signed_in=False), methods=["POST"]),
            Route(PREFIX + "/logout", page(self.logout), methods=["POST"]),
            Route(PREFIX + "/tokens", page(self.tokens_page), methods=["GET"]),
            Route(PREFIX + "/tokens", page(self.create_token), methods=["POST"]),
            Route(PREFIX + "/tokens/revoke", page(self.revoke_token), methods=["POST"]),
            Route(PREFIX + "/api/report", self.report_json, methods=["GET"]),
            Route(PREFIX + "/static/dashboard.css", self.css, methods=["GET"]),
        ]

    # ---- plumbing ------------------------------------------------------------------

    def page(
        self,
        handler: Callable[[Request, Session | None], Awaitable[Response]],
        signed_in: bool = True,
    ) -> Callable[[Request], Awaitable[Response]]:
        """Session check, CSRF check on POST, security headers, errors as a page."""

        async def wrapped(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE))
            try:
                if signed_in and session is None:
                    if request.method == "GET":
                        response: Response = RedirectResponse(PREFIX + "/login", 303)
                    else:
                        raise FormError(401, "You are not signed in (or the session expired).")
                else:
                    response = await handler(request, session)
            except FormError as exc:
                response = self.render(
                    "error.html",
                    session,
                    status_code=exc.status,
                    message=exc.message,
                    status=exc.status,
                )
            except Exception:
                log.exception("dashboard: %s %s failed", request.method, request.url.path)
                response = self.render(
                    "error.html", session, status_code=500, message="Internal error.", status=500
                )
            response.headers.update(HEADERS)
            return response

        return wrapped

    def render(
        self, template: str, session: Session | None, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            session=session, csrf=session.csrf if session else "", **context
        )
        return HTMLResponse(html, status_code=status_code)

    async def form(self, request: Request, model: type[Form], session: Session | None) -> Any:
        """The POST's form fields as `model`; 403 unless its CSRF token is the session's."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise FormError(415, "Send the form as application/x-www-form-urlencoded.")
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_FORM_BYTES:
                raise FormError(413, f"The form is larger than {MAX_FORM_BYTES} bytes.")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            raise FormError(400, "The form is not valid (UTF-8, at most 8 fields).") from None
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise FormError(400, "A form field is repeated.")
        expected = session.csrf if session else request.cookies.get(LOGIN_COOKIE)
        if not same(fields.get("csrf"), expected):
            raise FormError(
                403,
                "The form's CSRF token is missing or does not match your session: "
                "reload the page and send the form again.",
            )
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "form"
            hint = (
                " (a token name is letters, digits and . _ @ + -, at most 64, "
                "starting with a letter or digit)"
                if where == "name"
                else ""
            )
            raise FormError(400, f"'{where}': {first['msg']}{hint}") from None

    # ---- sign-in -------------------------------------------------------------------

    async def login_page(self, request: Request, session: Session | None) -> Response:
        if session is not None:
            return RedirectResponse(PREFIX, 303)
        return self.login_form(request)

    def login_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        value = secrets.token_urlsafe(32)
        response = self.render(
            "login.html", None, status_code=status, error=error, login_csrf=value
        )
        self.cookie(response, request, LOGIN_COOKIE, value, 600)
        return response

    def cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def login(self, request: Request, session: Session | None) -> Response:
        form = await self.form(request, LoginForm, None)
        admin = await anyio.to_thread.run_sync(self.sessions.admin_of, form.token)
        if admin is None:
            log.warning("dashboard: a sign-in with an unknown or revoked admin token")
            return self.login_form(
                request,
                "Unknown or revoked admin token (create one with: "
                "acepilot team-server admin create NAME).",
                401,
            )
        session_id, _ = self.sessions.start(admin)
        log.info("dashboard: %s signed in", admin)
        response = RedirectResponse(PREFIX, 303)
        self.cookie(response, request, COOKIE, session_id, int(self.sessions.lifetime_s))
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def logout(self, request: Request, session: Session | None) -> Response:
        await self.form(request, Form, session)
        self.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse(PREFIX + "/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # ---- tokens --------------------------------------------------------------------

    async def tokens_page(self, request: Request, session: Session | None) -> Response:
        return await self.show_tokens(session)

    async def show_tokens(
        self,
        session: Session | None,
        created: tuple[str, str] | None = None,
        notice: str = "",
        error: str = "",
        status: int = 200,
    ) -> Response:
        listed = await anyio.to_thread.run_sync(self.tokens.list)
        return self.render(
            "tokens.html",
            session,
            status_code=status,
            tokens=listed,
            created=created,
            notice=notice,
            error=error,
        )

    async def create_token(self, request: Request, session: Session | None) -> Response:
        form = await self.form(request, TokenForm, session)
        assert session is not None
        try:
            token = await anyio.to_thread.run_sync(self.tokens.create, form.name)
        except TokenError as exc:
            return await self.show_tokens(session, error=str(exc), status=409)
        log.info("dashboard: %s created the token %s", session.admin, form.name)
        return await self.show_tokens(session, created=(form.name, token))

    async def revoke_token(self, request: Request, session: Session | None) -> Response:
        form = await self.form(request, TokenForm, session)
        assert session is not None
        try:
            await anyio.to_thread.run_sync(self.tokens.revoke, form.name)
        except TokenError as exc:
            return await self.show_tokens(session, error=str(exc), status=409)
        log.info("dashboard: %s revoked the token %s", session.admin, form.name)
        return await self.show_tokens(session, notice=f"Revoked {form.name}.")

    # ---- reports -------------------------------------------------------------------

    def filters(self, request: Request) -> Filters:
        params = list(request.query_params.multi_items())
        if len(params) > 4 or len(dict(params)) != len(params):
            raise FormError(400, "Filters: period, token, language and version, once each.")
        try:
            return Filters.model_validate(dict(params))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "filter"
            raise FormError(400, f"'{where}': {first['msg']}") from None

    def served(self) -> dict[str, Any] | None:
        manager = self.manager
        current = manager.current if manager is not None else None
        if manager is None or current is None:
            return None
        return {
            "name": manager.name,
            "version": current.version,
            "precision": current.entry.manifest.get("precision"),
            "family": current.family,
        }

    def full_report(self, query: ReportQuery) -> dict[str, Any]:
        """What both the page and the JSON endpoint show (one source of numbers)."""
        report = self.store.report(query)
        report["model"] = self.served()
        if self.manager is not None:
            try:
                report["promotions"] = history(self.manager.registry, self.manager.name)
            except OSError as exc:
                log.warning("dashboard: the promotion history is unreadable (%s)", exc)
                report["promotions"] = []
        else:
            report["promotions"] = []
        return report

    async def report_json(self, request: Request) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        admin = session.admin if session else None
        if admin is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token:
                admin = await anyio.to_thread.run_sync(self.sessions.admin_of, token)
        if admin is None:
            return JSONResponse(
                {
                    "error": {
                        "message": "sign in at /dashboard/login, or send "
                        "Authorization: Bearer <admin token>",
                        "type": "authentication_error",
                    }
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", **HEADERS},
            )
        try:
            query = self.filters(request).query()
        except FormError as exc:
            body = {"error": {"message": exc.message, "type": "invalid_request_error"}}
            return JSONResponse(body, status_code=exc.status, headers=HEADERS)
        report = await anyio.to_thread.run_sync(self.full_report, query)
        return JSONResponse(report, headers=HEADERS)

    async def report_page(self, request: Request, session: Session | None) -> Response:
        filters = self.filters(request)
        query = filters.query()
        report, choices = await anyio.to_thread.run_sync(
            lambda: (self.full_report(query), self.store.choices())
        )
        series = report["series"]
        labels = [charts.time_label(slot["start"], report["step_s"]) for slot in series]
        by_token = [
            (row["token"] or "(no token)", row["acceptance_rate"]) for row in report["by_token"]
        ]
        retained = [
            (row["token"] or "(no token)", row["retained_120s"]["rate"])
            for row in report["by_token"]
        ]
        figures = {
            "requests": charts.bars(
                "Completion requests per slot", labels, [slot["requests"] for slot in series]
            ),
            "latency": charts.lines(
                "Latency p50 / p95 (ms)",
                labels,
                {
                    "p50": [slot["latency_p50_ms"] for slot in series],
                    "p95": [slot["latency_p95_ms"] for slot in series],
                },
                " ms",
            ),
            "acceptance": charts.hbars("Acceptance rate per token", by_token, fmt_rate, 1.0),
            "retention": charts.hbars(
                "Characters still there after 2 min, per token", retained, fmt_rate, 1.0
            ),
        }
        export = "?" + urlencode({k: v for k, v in filters.model_dump().items() if v}, doseq=False)
        return self.render(
            "report.html",
            session,
            report=report,
            filters=filters,
            choices=choices,
            periods=list(PERIODS),
            figures=figures,
            export=export.rstrip("?"),
            no_token=NO_TOKEN,
        )

    async def css(self, request: Request) -> Response:
        response = FileResponse(HERE / "static" / "dashboard.css", media_type="text/css")
        response.headers.update({**HEADERS, "Cache-Control": "max-age=3600"})
        return response
