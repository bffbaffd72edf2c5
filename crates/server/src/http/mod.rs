//! The HTTP edge: one axum router for the REST API, the WebSocket upgrade,
//! health and metrics, and the embedded web UI.
//!
//! Handlers are thin: they extract, call [`Node`](crate::node::Node), and map
//! [`ChatError`] to `{"error":{"code","message"}}` with the matching status.
//! The router's state is [`AppState`]; handlers take the part they need
//! (`State<Arc<Node>>`, through `FromRef`).

pub mod api;
pub mod health;
pub mod openapi;
pub mod rooms;
pub mod server_api;
pub mod web;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use parley_protocol::rest::{ErrorBody, ErrorDetail};

use crate::error::ChatError;
use crate::node::Node;
use crate::session::Registry;

/// Largest REST request body.
const MAX_BODY: usize = 64 * 1024;

/// What the handlers share: the node's chat rules, and the live sessions
/// (only the WebSocket upgrade needs those).
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub sessions: Arc<Registry>,
}

impl FromRef<AppState> for Arc<Node> {
    fn from_ref(state: &AppState) -> Arc<Node> {
        state.node.clone()
    }
}

/// One route of the router: its path, the methods it answers, and their
/// handlers. [`routes`] lists them for the OpenAPI document's test
/// (`openapi::tests`), so the router and the document cannot diverge
/// unnoticed; the integration test `server_api.rs` checks `methods`
/// against what the live router answers.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    handlers: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &'static [&'static str],
    handlers: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        handlers,
    }
}

/// Every route the router has, besides the web UI's static files.
fn table() -> Vec<Route> {
    vec![
        route("/api/auth/register", &["POST"], post(api::register)),
        route("/api/auth/login", &["POST"], post(api::login)),
        route("/api/auth/password", &["POST"], post(api::change_password)),
        route("/api/auth/logout", &["POST"], post(api::logout)),
        route("/api/auth/logout-all", &["POST"], post(api::logout_all)),
        route(
            "/api/rooms",
            &["GET", "POST"],
            get(rooms::list).post(rooms::create),
        ),
        route("/api/rooms/{room}", &["PATCH"], patch(rooms::patch)),
        route(
            "/api/rooms/{room}/members",
            &["GET", "POST"],
            get(rooms::members).post(rooms::add_member),
        ),
        route(
            "/api/rooms/{room}/members/{user}",
            &["PUT", "DELETE"],
            put(rooms::set_role).delete(rooms::remove_member),
        ),
        route(
            "/api/rooms/{room}/bans",
            &["GET", "POST"],
            get(rooms::bans).post(rooms::ban),
        ),
        route(
            "/api/rooms/{room}/bans/{user}",
            &["DELETE"],
            delete(rooms::unban),
        ),
        route(
            "/api/rooms/{room}/messages",
            &["GET", "POST"],
            get(api::messages).post(api::post_message),
        ),
        route(
            "/api/server/rooms/{room}/messages",
            &["POST"],
            post(server_api::publish),
        ),
        route(
            "/api/server/rooms/{room}/presence",
            &["GET"],
            get(server_api::presence),
        ),
        route(
            "/api/server/rooms",
            &["POST"],
            post(server_api::create_room),
        ),
        route(
            "/api/server/rooms/{room}/members/{user}",
            &["PUT", "DELETE"],
            put(server_api::put_member).delete(server_api::remove_member),
        ),
        route(
            "/api/server/rooms/{room}/bans",
            &["POST"],
            post(server_api::ban),
        ),
        route(
            "/api/server/rooms/{room}/bans/{user}",
            &["DELETE"],
            delete(server_api::unban),
        ),
        route(
            "/api/server/users",
            &["POST"],
            post(server_api::create_user),
        ),
        route(
            "/api/server/users/{user}/disconnect",
            &["POST"],
            post(server_api::disconnect),
        ),
        route(
            "/api/server/users/{user}/revoke",
            &["POST"],
            post(server_api::revoke),
        ),
        route("/api/search", &["GET"], get(api::search)),
        route("/api/openapi.json", &["GET"], get(openapi::document)),
        route("/ws", &["GET"], get(ws::upgrade)),
        route("/healthz", &["GET"], get(health::healthz)),
        route("/readyz", &["GET"], get(health::readyz)),
        route(METRICS, &["GET"], get(health::metrics)),
    ]
}

/// The router's routes as (path, methods), in the router's order.
pub fn routes() -> Vec<(&'static str, &'static [&'static str])> {
    table().into_iter().map(|r| (r.path, r.methods)).collect()
}

/// The node's router. `with_metrics: false` leaves `/metrics` out (it is
/// then served by [`metrics_router`] on `PARLEY_METRICS_LISTEN`).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    table()
        .into_iter()
        .filter(|r| with_metrics || r.path != METRICS)
        .fold(Router::new(), |router, r| router.route(r.path, r.handlers))
        .merge(web::routes())
        .fallback(|| async { ChatError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

const METRICS: &str = "/metrics";

/// The router of the separate metrics listener: `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(METRICS, get(health::metrics))
        .fallback(|| async { ChatError::not_found("only /metrics is served here") })
        .with_state(state)
}

/// Content-Security-Policy for the web UI: no inline script, nothing from
/// elsewhere; WebSocket back to this origin only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

/// `axum::Json`, but only a JSON object is accepted, and a bad body becomes a
/// `bad_request` error in Parley's format.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ChatError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Object<T>: a JSON object only, never the array of T's fields that
        // serde alone would take (docs/protocol.md).
        match axum::Json::<parley_protocol::object::Object<T>>::from_request(req, state).await {
            Ok(axum::Json(parley_protocol::object::Object(value))) => Ok(ApiJson(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    parley_protocol::ErrorCode::TooLarge
                } else {
                    parley_protocol::ErrorCode::BadRequest
                };
                Err(ChatError::new(code, rejection.body_text()))
            }
        }
    }
}

/// The user of a request's bearer token.
pub struct AuthUser(pub String);

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<Node>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = AuthToken::from_request_parts(parts, state).await?;
        Ok(AuthUser(token.claims.sub))
    }
}

/// A request's bearer token and its claims (`sub` is the user it speaks
/// for, as [`crate::auth::Auth::verify_claims`] says): for the endpoints
/// that act on the token itself (logout).
pub struct AuthToken {
    pub token: String,
    pub claims: parley_protocol::token::Claims,
}

impl<S> FromRequestParts<S> for AuthToken
where
    Arc<Node>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ChatError::unauthorized("missing Authorization: Bearer <token>"))?;
        let claims = Arc::<Node>::from_ref(state)
            .auth
            .verify_claims(token)
            .await?;
        Ok(AuthToken {
            token: token.to_string(),
            claims,
        })
    }
}

/// The TCP peer of the request, when the server records it (it does:
/// `into_make_service_with_connect_info`).
pub struct ClientPeer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientPeer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientPeer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0),
        ))
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}
