//! Who may see the console: anyone who reaches a loopback address when no
//! token is set; elsewhere whoever presents the read-only console token, in
//! the `sluice_console` cookie the login form sets (or as a bearer token,
//! for scripts). The token is compared in constant time and never logged.

use super::Console;
use super::html::{esc, page};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_host::token::Token;

/// The cookie holding the console token.
const COOKIE: &str = "sluice_console";

/// Who may see the console.
#[derive(Clone)]
pub enum Access {
    /// Anyone: the HTTP port is bound to loopback and no token is set.
    Open,
    /// Whoever presents this token.
    Token(Token),
    /// No one: the port is reachable from elsewhere and no token is set.
    Closed,
}

fn cookie_token(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            pair.strip_prefix(COOKIE.as_bytes())
                .and_then(|rest| rest.strip_prefix(b"="))
        })
}

/// Lets a request through, or answers with the login form or a refusal.
pub async fn require(State(console): State<Console>, request: Request, next: Next) -> Response {
    match &console.0.access {
        Access::Open => next.run(request).await,
        Access::Closed => closed(),
        Access::Token(token) => {
            let headers = request.headers();
            let by_cookie = cookie_token(headers).is_some_and(|t| token.matches(t));
            let by_bearer =
                token.matches_bearer(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()));
            if by_cookie || by_bearer {
                next.run(request).await
            } else if request.uri().path().starts_with("/console/api/") {
                (
                    StatusCode::UNAUTHORIZED,
                    "the console token is required: log in at /console/login",
                )
                    .into_response()
            } else {
                login_page(StatusCode::UNAUTHORIZED, None)
            }
        }
    }
}

fn closed() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The console is off here: the aggregator's HTTP port is reachable from other hosts and no console token is set. Set console.token_file (a read-only token) in the aggregator's config, or bind http.listen to loopback.\n",
    )
        .into_response()
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let error = error.map_or(String::new(), |e| {
        format!(r#"<p class="error" id="login-error">{}</p>"#, esc(e))
    });
    let body = format!(
        r#"<h1>Log in</h1>
<p>This console is read-only; its token is set in the aggregator's config (<code>console.token_file</code>).</p>
{error}
<form method="post" action="/console/login" class="login">
<label>Console token <input type="password" name="token" id="token" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>"#
    );
    (status, page("Log in", "", &body)).into_response()
}

/// `GET /console/login`.
pub async fn form(State(console): State<Console>) -> Response {
    match console.0.access {
        Access::Closed => closed(),
        _ => login_page(StatusCode::OK, None),
    }
}

/// `POST /console/login` with `token=…`: sets the cookie and goes to the console.
pub async fn login(State(console): State<Console>, body: Bytes) -> Response {
    let Access::Token(token) = &console.0.access else {
        return match console.0.access {
            Access::Closed => closed(),
            _ => redirect_home(None),
        };
    };
    let given = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !token.matches(given.as_bytes()) {
        tracing::warn!("Refused a console login with a wrong token.");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the console token."),
        );
    }
    // The cookie carries only printable ASCII; a token that is not cannot be set.
    let cookie = format!("{COOKIE}={given}; Path=/console; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(v) if given.bytes().all(|b| b.is_ascii_graphic() && b != b';') => redirect_home(Some(v)),
        _ => login_page(
            StatusCode::BAD_REQUEST,
            Some("The console token must be printable ASCII without ';'."),
        ),
    }
}

fn redirect_home(cookie: Option<HeaderValue>) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console/"));
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}
