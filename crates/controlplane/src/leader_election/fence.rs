//! The leader's writes, fenced by the server: no write of a deposed leader reaches the store.
//!
//! Upstream has no fencing (client-go's docs disclaim it): a leader paused or cut off past its
//! lease can still send a write after a standby took over. The [`Term`](super::Term) check
//! before each action narrows that to a write already in flight; this closes it.
//!
//! How: every mutating request of the leader's work carries the header
//! `Kaname-Lease-Fence: <namespace>/<name>@<resourceVersion>`, the resourceVersion of the
//! Lease as this candidate last *wrote* it (acquired or renewed). The API server adds "the
//! Lease's mod_revision is still that" to the store transaction of the write itself, so the
//! write and the check are one atomic step in the store's order: once a standby has written the
//! Lease (the only way to take over), every write conditioned on an earlier version fails with
//! 409 Conflict, however late it arrives.
//!
//! Our own renewals also change the Lease's resourceVersion; so that they never fence out our
//! own writes in flight, a renewal waits (a bounded time) for the writes in flight to finish
//! and holds new ones back until the new resourceVersion is known (the `gate`).
//!
//! Requests are refused locally, without being sent, when this candidate holds no term.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Method, Request};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

/// The request header the API server checks (see the module docs).
pub const HEADER: &str = "kaname-lease-fence";

/// The current fence of one elector: shared by the elector, which sets it, and the clients
/// whose writes carry it.
pub struct Fence {
    /// `<namespace>/<name>`: which Lease conditions the writes.
    lease: String,
    /// The header value while leading; `None` otherwise (writes refused locally).
    value: Mutex<Option<HeaderValue>>,
    /// Writes in flight hold it shared; a renewal holds it exclusively.
    gate: Arc<RwLock<()>>,
}

impl Fence {
    pub(super) fn new(namespace: &str, name: &str) -> Arc<Fence> {
        Arc::new(Fence {
            lease: format!("{namespace}/{name}"),
            value: Mutex::new(None),
            gate: Arc::new(RwLock::new(())),
        })
    }

    /// Held across a write of the Lease: waits up to `patience` for our own writes in flight
    /// (beyond it the renewal goes ahead; a write it overtakes fails with 409 and is retried
    /// by its caller as any conflict is).
    pub(super) async fn hold(&self, patience: Duration) -> Option<OwnedRwLockWriteGuard<()>> {
        tokio::time::timeout(patience, self.gate.clone().write_owned()).await.ok()
    }

    /// After a successful write of the Lease by this candidate (`Some(resourceVersion)`), or
    /// when its term ends (`None`).
    pub(super) fn set(&self, resource_version: Option<&str>) {
        let v = resource_version.and_then(|rv| HeaderValue::from_str(&format!("{}@{rv}", self.lease)).ok());
        *self.value.lock().unwrap() = v;
    }

    /// The header value writes carry now (`None`: not leading).
    pub fn current(&self) -> Option<HeaderValue> {
        self.value.lock().unwrap().clone()
    }

    /// The tower layer that fences a kube client's writes (add it with
    /// `kube::client::ClientBuilder::with_layer`).
    pub fn layer(self: &Arc<Self>) -> FenceLayer {
        FenceLayer(self.clone())
    }
}

#[derive(Clone)]
pub struct FenceLayer(Arc<Fence>);

impl<S> tower_layer::Layer<S> for FenceLayer {
    type Service = Fenced<S>;
    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced { fence: self.0.clone(), inner: Arc::new(tokio::sync::Mutex::new(inner)) }
    }
}

/// A client service whose mutating requests carry the fence.
///
/// The inner service sits behind a mutex because the request must wait for the gate before it
/// is handed on, and kube's boxed stack is not `Clone`; the lock is held only while the inner
/// service gets ready and takes the request, not while the response is awaited.
pub struct Fenced<S> {
    fence: Arc<Fence>,
    inner: Arc<tokio::sync::Mutex<S>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower_service::Service<Request<B>> for Fenced<S>
where
    S: tower_service::Service<Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner service's readiness is awaited in `call`, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let fence = self.fence.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let _gate = if mutating {
                let gate = fence.gate.clone().read_owned().await;
                let Some(v) = fence.current() else {
                    return Err(format!("not the leader of {}: write not sent", fence.lease).into());
                };
                req.headers_mut().insert(HEADER, v);
                Some(gate)
            } else {
                None
            };
            let response = {
                let mut svc = inner.lock().await;
                futures::future::poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into)?;
                svc.call(req)
            };
            response.await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_layer::Layer;
    use tower_service::Service;

    /// Answers with the fence header the request carried.
    #[derive(Default)]
    struct Echo;
    impl Service<Request<()>> for Echo {
        type Response = Option<HeaderValue>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Option<HeaderValue>, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Self::Future {
            std::future::ready(Ok(req.headers().get(HEADER).cloned()))
        }
    }

    fn request(method: Method) -> Request<()> {
        Request::builder().method(method).uri("/api/v1/pods").body(()).unwrap()
    }

    #[tokio::test]
    async fn writes_carry_the_fence_reads_do_not_and_no_term_sends_nothing() {
        let fence = Fence::new("kube-system", "kube-scheduler");
        let mut svc = fence.layer().layer(Echo);
        let err = svc.call(request(Method::POST)).await.unwrap_err();
        assert_eq!(err.to_string(), "not the leader of kube-system/kube-scheduler: write not sent");
        assert_eq!(svc.call(request(Method::GET)).await.unwrap(), None);
        fence.set(Some("42"));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(svc.call(request(m)).await.unwrap().unwrap(), "kube-system/kube-scheduler@42");
        }
        assert_eq!(svc.call(request(Method::GET)).await.unwrap(), None);
        fence.set(None);
        assert!(svc.call(request(Method::DELETE)).await.is_err());
    }

    #[tokio::test]
    async fn a_renewal_holds_writes_back_until_the_new_version_is_known() {
        let fence = Fence::new("kube-system", "kube-scheduler");
        fence.set(Some("1"));
        let guard = fence.hold(Duration::from_secs(1)).await.expect("no writes in flight");
        let mut svc = fence.layer().layer(Echo);
        let write = tokio::spawn(async move { svc.call(request(Method::POST)).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!write.is_finished(), "a write went out during a renewal");
        fence.set(Some("2"));
        drop(guard);
        assert_eq!(write.await.unwrap().unwrap(), "kube-system/kube-scheduler@2");
    }
}
