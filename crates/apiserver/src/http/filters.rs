//! The filter chain every request passes before its handler, in upstream's order
//! (`DefaultBuildHandlerChain`): request info → authentication → max-in-flight →
//! authorization. Each step is one function here; what it decides with lives elsewhere
//! ([`RequestInfo`], the [`crate::auth`] chains), so adding an authentication method or an
//! authorizer never touches this file.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Ctx;
use crate::auth::{Attributes, UserInfo};
use crate::request_info::RequestInfo;
use crate::status::ApiError;

/// Paths served to requests that present no credentials (the health probes a load balancer
/// or kubelet runs): anything else without credentials is a 401, as with upstream's
/// `--anonymous-auth=false`.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz"];

pub async fn chain(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let info = RequestInfo::parse(&parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""));

    let user = match ctx.authenticators.authenticate(&parts).await {
        Ok(Some(user)) => user,
        Ok(None) if PUBLIC_PATHS.contains(&info.path.as_str()) => {
            parts.extensions.insert(info);
            return next.run(Request::from_parts(parts, body)).await;
        }
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(why) => {
            tracing::debug!(path = %info.path, "authentication failed: {why}");
            return ApiError::unauthorized().into_response();
        }
    };

    let _permit = match (&ctx.inflight, info.is_long_running()) {
        (Some(sem), false) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return ApiError::too_many_requests().into_response(),
        },
        _ => None,
    };

    if let Err(e) = ctx.authorizers.authorize(&Attributes { user: &user, info: &info }) {
        return e.into_response();
    }
    parts.extensions.insert(info);
    parts.extensions.insert::<UserInfo>(user);
    next.run(Request::from_parts(parts, body)).await
}
