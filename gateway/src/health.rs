//! `GET /health`: whether the gateway and the core behind it can serve, for
//! a load balancer or a monitor. No auth, and nothing but status words:
//!
//! ```json
//! {"status": "UP", "components": {"gateway": "UP", "core": "UP",
//!  "idm.store": "UP", "idm.outbox": "UP", "idm.scheduler": "UP", "idm.tokens": "UP"}}
//! ```
//!
//! `200` when every component is UP, else `503`. The core's components are
//! its `grpc.health.v1.Health` services; the core is asked at most once per
//! [`FRESH`] (requests meanwhile are answered from the last answer, and
//! requests that come while it is being asked wait for that one answer),
//! so a flood of probes costs the core nothing. A core that does not answer
//! within [`CHECK_TIMEOUT`] is `core: DOWN`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::core::CoreChannel as Channel;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long an answer of the core is reused.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long the core has to answer all the checks.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The core's named health services shown, besides the core's overall `""`.
pub const CORE_COMPONENTS: [&str; 4] = ["idm.store", "idm.outbox", "idm.scheduler", "idm.tokens"];

const UP: &str = "UP";
const DOWN: &str = "DOWN";

/// The body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: &'static str,
    pub components: BTreeMap<&'static str, &'static str>,
}

impl Report {
    fn up(&self) -> bool {
        self.status == UP
    }
}

/// The core's health, asked over the gateway's connection to it and cached.
pub struct CoreHealth {
    channel: Channel,
    last: Mutex<Option<(Instant, Report)>>,
}

impl CoreHealth {
    pub fn new(channel: Channel) -> Self {
        CoreHealth {
            channel,
            last: Mutex::new(None),
        }
    }

    /// The last answer if it is fresh, else a new one (one at a time: the
    /// requests waiting on the lock share it).
    pub async fn report(&self) -> Report {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return report.clone();
        }
        let report = self.ask().await;
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn ask(&self) -> Report {
        let client = HealthClient::new(self.channel.clone());
        let check = |service: &'static str| {
            let mut client = client.clone();
            async move {
                let answer = client
                    .check(HealthCheckRequest {
                        service: service.to_string(),
                    })
                    .await;
                match answer {
                    Ok(answer) => Some(answer.into_inner().status == ServingStatus::Serving as i32),
                    // NOT_FOUND: a core without that component (or draining).
                    Err(status) if status.code() == tonic::Code::NotFound => Some(false),
                    Err(status) => {
                        tracing::debug!(service, error = %status.message(), "core health check failed");
                        None
                    }
                }
            }
        };
        let [store, outbox, scheduler, tokens] = CORE_COMPONENTS;
        let all = async {
            let (overall, a, b, c, d) = tokio::join!(
                check(""),
                check(store),
                check(outbox),
                check(scheduler),
                check(tokens)
            );
            (
                overall,
                vec![(store, a), (outbox, b), (scheduler, c), (tokens, d)],
            )
        };
        // No answer in time: the core is down, and so is each component.
        let (overall, named) = tokio::time::timeout(CHECK_TIMEOUT, all)
            .await
            .unwrap_or_default();
        let word = |up: bool| if up { UP } else { DOWN };
        let mut components =
            BTreeMap::from([("gateway", UP), ("core", word(overall == Some(true)))]);
        for component in CORE_COMPONENTS {
            let up = named
                .iter()
                .find(|(name, _)| *name == component)
                .and_then(|(_, up)| *up)
                .unwrap_or(false);
            components.insert(component, word(up));
        }
        let status = word(components.values().all(|s| *s == UP));
        Report { status, components }
    }
}

/// The `GET /health` route, with its own state: `http::router` mounts it
/// at `/health` (marked with its template, so metrics count it as `/health`).
pub fn route<S: Clone + Send + Sync + 'static>(health: Arc<CoreHealth>) -> MethodRouter<S> {
    get(answer)
        .layer(axum::middleware::from_fn(crate::metrics::mark_route))
        .with_state(health)
}

async fn answer(State(health): State<Arc<CoreHealth>>) -> Response {
    let report = health.report().await;
    let status = if report.up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(report),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;
    use tonic::transport::Endpoint;
    use tonic_health::ServingStatus as Serving;

    /// The gateway's health check of the core at `endpoint`, over a channel
    /// built as the gateway builds it.
    fn core_health(endpoint: Endpoint) -> CoreHealth {
        let channel = endpoint
            .connect_timeout(Duration::from_millis(200))
            .connect_lazy();
        CoreHealth::new(tonic::service::interceptor::InterceptedService::new(
            channel,
            crate::core::TagRequestId,
        ))
    }

    /// A core's `grpc.health.v1.Health` on a loopback port, with `down` NOT_SERVING
    /// and the other components SERVING (`""` too: tonic_health's default).
    async fn core_with_one_component_down(down: &str) -> std::net::SocketAddr {
        let (reporter, service) = tonic_health::server::health_reporter();
        for component in CORE_COMPONENTS {
            let status = if component == down {
                Serving::NotServing
            } else {
                Serving::Serving
            };
            reporter.set_service_status(component, status).await;
        }
        let incoming =
            tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
        let address = incoming.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        address
    }

    #[tokio::test]
    async fn one_core_component_not_serving_is_named_down_and_the_answer_is_503() {
        let core = core_with_one_component_down("idm.outbox").await;
        let endpoint = Endpoint::from_shared(format!("http://{core}")).unwrap();
        let response = answer(State(Arc::new(core_health(endpoint)))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The core answered (`""` SERVING): the named component alone is
        // what turns the whole DOWN.
        assert_eq!(
            body,
            json!({"status": "DOWN", "components": {
                "gateway": "UP", "core": "UP", "idm.store": "UP",
                "idm.outbox": "DOWN", "idm.scheduler": "UP", "idm.tokens": "UP"}})
        );
    }

    #[tokio::test]
    async fn an_unreachable_core_is_down_and_the_answer_is_cached() {
        // Nothing listens on port 9 of loopback (discard; refused).
        let health = core_health(Endpoint::from_static("http://127.0.0.1:9"));
        let report = health.report().await;
        assert_eq!(report.status, DOWN);
        assert_eq!(report.components["gateway"], UP);
        assert_eq!(report.components["core"], DOWN);
        assert_eq!(report.components["idm.outbox"], DOWN);
        let cached_at = health.last.lock().await.as_ref().map(|(at, _)| *at);
        assert_eq!(health.report().await, report);
        let again = health.last.lock().await.as_ref().map(|(at, _)| *at);
        assert_eq!(
            cached_at, again,
            "a fresh answer is reused, not asked again"
        );
        let body = serde_json::to_value(&report).unwrap();
        assert_eq!(body["components"]["core"], "DOWN");
    }
}
