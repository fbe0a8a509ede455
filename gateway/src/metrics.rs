//! Prometheus metrics of the gateway (`--metrics ADDR`, off by default):
//! HTTP requests by route template and status, and their latency.
//!
//! The route is the matched route template (`/scim/v2/{resource}/{id}`,
//! `/openidm/managed/{type}/{id}`), never the raw path: each router marks its
//! matched template on the response ([`mark_route`]), and [`track`], around
//! everything, reads it; a request no route matched counts as `unmatched`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

/// `{route, status}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "idm_http_requests_total";
/// `{route}`: time to the response's headers.
pub const HTTP_DURATION: &str = "idm_http_request_duration_seconds";

/// Every metric the gateway exports.
pub const NAMES: &[&str] = &[HTTP_REQUESTS, HTTP_DURATION];

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets (seconds): 1 ms to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the recorder and serves `/metrics` on `addr` (plain HTTP);
/// fails at once when `addr` cannot be bound. Call once, inside the runtime.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    let failed = |e: metrics_exporter_prometheus::BuildError| format!("--metrics {addr}: {e}");
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(LATENCY_BUCKETS)
        .map_err(failed)?
        .install()
        .map_err(failed)?;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from an HTTP request to its response's headers, by route template"
    );
    tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--metrics on a non-loopback address: anyone who reaches it reads the metrics (plain HTTP, no authentication)");
    }
    Ok(())
}

/// The matched route template, carried from a router's routes out to [`track`].
#[derive(Clone)]
struct Route(MatchedPath);

/// A layer of each router: marks the response with the template its request
/// matched, if any (a nested service sets its own, fuller template, which
/// the layer around everything cannot see on the request). A wrong method on
/// a matched path counts under the path's template.
pub async fn mark_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// Around everything: counts and times each request under its route.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route_label(response.extensions().get::<Route>().map(|r| r.0.as_str()));
    histogram!(HTTP_DURATION, "route" => route.clone()).record(started.elapsed());
    counter!(HTTP_REQUESTS, "route" => route, "status" => status_label(response.status()))
        .increment(1);
    response
}

fn route_label(template: Option<&str>) -> String {
    match template {
        // `/admin` + `/`, nested, reads `/admin//`.
        Some(template) => template.replace("//", "/"),
        None => UNMATCHED.to_string(),
    }
}

/// The status as its three digits (bounded: a status is 100 to 999).
fn status_label(status: axum::http::StatusCode) -> String {
    status.as_u16().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_its_template_or_unmatched_and_a_status_its_digits() {
        assert_eq!(
            route_label(Some("/scim/v2/{resource}/{id}")),
            "/scim/v2/{resource}/{id}"
        );
        assert_eq!(route_label(Some("/admin//")), "/admin/");
        assert_eq!(route_label(None), "unmatched");
        assert_eq!(status_label(axum::http::StatusCode::NOT_FOUND), "404");
        assert_eq!(status_label(axum::http::StatusCode::OK), "200");
    }

    /// The routers' shape (a nested router, a nested service, fallbacks)
    /// with the two layers where `http::router` puts them: every request
    /// counts once, under its template or `unmatched`.
    #[test]
    fn requests_count_under_their_route_template_nested_or_not() {
        use axum::Router;
        use axum::body::Body;
        use axum::routing::{get, post};
        use tonic::codegen::Service;

        let scim = Router::new()
            .route("/{resource}", get(|| async { "list" }))
            .route("/{resource}/{id}", get(|| async { "one" }))
            .route("/Bulk", post(|| async { "bulk" }))
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no") })
            .layer(axum::middleware::from_fn(mark_route));
        let rest = Router::new()
            .route("/managed/{type}/{id}", get(|| async { "rest" }))
            .layer(axum::middleware::from_fn(mark_route));
        let mut app = Router::new()
            .nest("/scim/v2", scim)
            .nest_service("/openidm", rest)
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "outside") })
            .layer(axum::middleware::from_fn(track));

        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                for (method, path) in [
                    ("GET", "/scim/v2/Users"),
                    ("GET", "/scim/v2/Users/bjensen"),
                    ("GET", "/scim/v2/Groups/g-1"),
                    ("GET", "/scim/v2/Bulk"),
                    ("GET", "/scim/v2/a/b/c"),
                    ("GET", "/openidm/managed/user/bjensen"),
                    ("GET", "/openidm/nothing"),
                    ("GET", "/secret/path"),
                ] {
                    let request = axum::http::Request::builder()
                        .method(method)
                        .uri(path)
                        .body(Body::empty())
                        .unwrap();
                    app.call(request).await.unwrap();
                }
            });
        });
        let text = handle.render();
        for line in [
            r#"idm_http_requests_total{route="/scim/v2/{resource}",status="200"} 1"#,
            r#"idm_http_requests_total{route="/scim/v2/{resource}/{id}",status="200"} 2"#,
            r#"idm_http_requests_total{route="/scim/v2/Bulk",status="405"} 1"#,
            r#"idm_http_requests_total{route="/openidm/managed/{type}/{id}",status="200"} 1"#,
            r#"idm_http_requests_total{route="unmatched",status="404"} 3"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        for raw in ["bjensen", "Users", "secret", "nothing", "g-1"] {
            assert!(!text.contains(raw), "{raw} in\n{text}");
        }
    }
}
