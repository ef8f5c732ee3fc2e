"""Login and the current caller.

    POST   /api/0/auth/login/     public       {"username", "password"} → session cookie
    GET    /api/0/auth/           the caller   who is logged in, its organizations, CSRF token
    DELETE /api/0/auth/           the caller   log out (a browser session's CSRF-checked)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from events.errors import Unauthorized
from serve_apps.api.deps import (
    SESSION_COOKIE,
    Credentials,
    Svc,
    caller_access,
    credentials,
    public_access,
)
from serve_apps.api.shapes import Body
from storage import tenancy
from storage.tenancy import Caller

router = APIRouter(tags=["auth"])


class Login(Body):
    username: str
    password: str


@router.post("/auth/login/")
def login(body: Login, request: Request, _: Annotated[None, Depends(public_access())],
          svc: Svc) -> JSONResponse:
    """Password login (rate limited per username and per address): sets the session cookie
    (HttpOnly, SameSite=Lax; Secure over HTTPS) and answers the CSRF token that unsafe
    requests must send in X-CSRFToken."""
    client_ip = request.client.host if request.client else ""
    config = svc.config
    with svc.pool.connection() as conn, conn.transaction():
        try:
            user = tenancy.login(conn, body.username, body.password, client_ip,
                                 config.login_max_failures, config.login_window_s)
        except tenancy.LoginThrottled as exc:  # the failures recorded so far must commit
            throttled: tenancy.LoginThrottled | None = exc
        else:
            throttled = None
    if throttled is not None:
        raise throttled
    if user is None:
        raise Unauthorized("wrong username or password")
    with svc.pool.connection() as conn, conn.transaction():
        session = tenancy.start_session(conn, user, config.session_lifetime_s)
    response = JSONResponse({"user": {"id": str(user), "username": body.username},
                             "csrfToken": session.csrf_token})
    response.set_cookie(SESSION_COOKIE, session.cookie, expires=session.expires_at,
                        httponly=True, samesite="lax", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.get("/auth/")
def whoami(who: Annotated[Caller, Depends(caller_access())], creds: Annotated[Credentials, Depends(credentials)],
           svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        orgs = tenancy.caller_organizations(conn, who)
        csrf = None
        if creds.session and not creds.authorization:
            user = tenancy.session_user(conn, creds.session)
            csrf = None if user is None else user.csrf_token
    return {"user": None if who.user_id is None else {
                "id": str(who.user_id), "username": who.name},
            "organizations": orgs, "csrfToken": csrf}


@router.delete("/auth/", status_code=204)
def logout(_: Annotated[Caller, Depends(caller_access())], creds: Annotated[Credentials, Depends(credentials)],
           svc: Svc) -> Response:
    if creds.session:
        with svc.pool.connection() as conn, conn.transaction():
            tenancy.end_session(conn, creds.session)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
