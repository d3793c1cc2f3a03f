"""Signing in to a UI that asks its user for the API's key.

A UI served beyond loopback with an API key set must not attach that key to every call for
whoever reaches it: it asks each user for the key instead, checks it against the API, and
keeps it in a session cookie (HttpOnly, SameSite=Strict: gone with the browser session, out
of reach of page scripts). Every API call of that user's callbacks carries it.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import urlsplit

import flask
from dash import dcc, html

KEY_COOKIE = "outlier_lab_key"
LOGIN_PATH = "/_outlier/login"
LOGOUT_PATH = "/_outlier/logout"
REFUSED_COOKIE = "outlier_lab_refused"  # why the last sign-in failed, for the form to say (a minute)


NOTEBOOK_COOKIE = "outlier_lab_notebook"  # the browser session's notebook id (set by assets/workbench.js)


def notebook_session() -> str | None:
    """The notebook of the browser session whose request this is, or None."""
    return flask.request.cookies.get(NOTEBOOK_COOKIE) if flask.has_request_context() else None


def request_key() -> str | None:
    """The key of the user whose request this is, or None (no request, or not signed in)."""
    return flask.request.cookies.get(KEY_COOKIE) if flask.has_request_context() else None


def _next_path(raw: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//elsewhere`)."""
    if not raw or not raw.startswith("/") or raw.startswith("//"):
        return "/"
    return raw


def _page_path() -> str:
    """The page the user opened: the layout is fetched by the page, so its address is the referrer."""
    referrer = urlsplit(flask.request.referrer or "")
    if referrer.netloc and referrer.netloc != flask.request.host:
        return "/"
    return _next_path(referrer.path + (f"?{referrer.query}" if referrer.query else ""))


def install(server: flask.Flask, refusal: Callable[[str], str | None]) -> None:
    """The sign-in and sign-out routes; `refusal(key)` asks the API about the key: None when it takes it, else why not."""

    @server.post(LOGIN_PATH)
    def sign_in():
        key, target = flask.request.form.get("key", ""), _next_path(flask.request.form.get("next"))
        why = refusal(key) if key else "Give the API's key."
        response = flask.redirect(target, code=303)
        if why:
            response.set_cookie(REFUSED_COOKIE, why, max_age=60, httponly=True, samesite="Strict", secure=flask.request.is_secure)
            return response
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="Strict", secure=flask.request.is_secure)
        response.delete_cookie(REFUSED_COOKIE)
        return response

    @server.post(LOGOUT_PATH)
    def sign_out():
        response = flask.redirect("/", code=303)
        response.delete_cookie(KEY_COOKIE)
        return response


def form() -> html.Div:
    """The page a user who has not signed in sees instead of the workbench."""
    target = _page_path() if flask.has_request_context() else "/"
    why = flask.request.cookies.get(REFUSED_COOKIE) if flask.has_request_context() else None
    return html.Div([
        html.Header(html.Span("Outlier Lab", className="brand"), className="header"),
        html.Section([
            html.H3("Sign in"),
            html.P("This workbench is served beyond this machine and its API asks for a key. Give the API's key; it is kept for this browser session only."),
            html.Div(why, className="message message-auth", role="alert", id="login-refused") if why else None,
            html.Form([
                dcc.Input(type="password", name="key", id="login-key", placeholder="API key", autoComplete="current-password", className="login-key"),
                dcc.Input(type="hidden", name="next", value=target),
                html.Button("Sign in", type="submit", className="button primary"),
            ], action=LOGIN_PATH, method="POST", className="buttons"),
        ], className="card login-card"),
    ], className="shell")


def sign_out_button() -> html.Form:
    return html.Form(html.Button("Sign out", type="submit", className="button"), action=LOGOUT_PATH, method="POST", className="sign-out")
