//! The chain-rule explorer: an interactive page served at `/` by `arlm serve`.
//!
//! The page shows p(x_t | x_<t) at work on the served models: a text scored token by
//! token (the chain rule written out with its numbers, the running sum, surprisal bars,
//! NLL, perplexity and bits per byte), a What-if branch at any token, generation with the
//! distribution after every sampler stage, two models compared on one text, and exposure
//! bias measured under the exact synthetic source.
//!
//! Everything the page needs is compiled into the binary (`include_str!` of the files in
//! `page/`): plain HTML, CSS and JavaScript with inline SVG charts, so it works offline
//! and building arlm needs no Node toolchain. The numbers come from the library through
//! [`handlers`]; the page only formats them.
//!
//! The page and its assets need no API key (they hold no data); the JSON endpoints sit
//! behind the same key check as the completions API, and the page asks for the key when
//! the server answers 401.

pub mod handlers;
pub mod trace;

use super::AppState;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The page's files: (name, content type, text).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("page/style.css"),
    ),
    (
        "core.js",
        "text/javascript; charset=utf-8",
        include_str!("page/core.js"),
    ),
    (
        "score.js",
        "text/javascript; charset=utf-8",
        include_str!("page/score.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("page/panels.js"),
    ),
];

const INDEX: &str = include_str!("page/index.html");

/// The JSON endpoints (put behind the API-key check).
pub fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/explorer/models", get(handlers::models))
        .route("/explorer/score", post(handlers::score))
        .route("/explorer/generate", post(handlers::generate))
        .route("/explorer/exposure", post(handlers::exposure))
}

/// The page and its assets (public).
pub fn page_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/explorer/static/{name}", get(asset))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some(&(_, kind, text)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
