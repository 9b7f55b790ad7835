//! The plain HTTP endpoints etcd serves beside gRPC: `/health`, `/version`, `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::grpc::maintenance::ETCD_API_VERSION;
use crate::server::EtcdServer;

pub fn router(server: Arc<EtcdServer>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(server)
}

/// etcd 3.5's health check: unhealthy without a leader, or when a linearizable read cannot
/// complete (no quorum).
async fn health(State(s): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let (code, reason) = if s.leader().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "RAFT NO LEADER")
    } else {
        match tokio::time::timeout(Duration::from_secs(1), s.linearizable_barrier()).await {
            Ok(Ok(())) => (StatusCode::OK, ""),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "QGET ERROR"),
        }
    };
    let body = format!("{{\"health\":\"{}\",\"reason\":\"{reason}\"}}", code == StatusCode::OK);
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn version() -> impl IntoResponse {
    let body = format!("{{\"etcdserver\":\"{ETCD_API_VERSION}\",\"etcdcluster\":\"3.5.0\"}}");
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(s): State<Arc<EtcdServer>>) -> impl IntoResponse {
    s.metrics.db_size.set(s.store.db_size() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode())
}
