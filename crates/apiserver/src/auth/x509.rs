//! Client-certificate authentication (upstream's `x509.Authenticator` with its
//! `CommonNameUserConversion`): the TLS layer has already verified the chain against
//! `--client-ca-file`; the certificate's CN is the user and each O a group.

use axum::http::request::Parts;
use futures::future::BoxFuture;

use super::{Authenticator, UserInfo, SYSTEM_AUTHENTICATED};

/// The user of the connection's verified client certificate, read once per connection by
/// the listener (a certificate cannot change within a TLS connection) and attached to each
/// of its requests; `None` when the client sent none.
#[derive(Clone, Debug)]
pub struct VerifiedClientCert(pub Option<UserInfo>);

/// Authenticates requests that came on a connection with a verified client certificate.
pub struct ClientCertificate;

impl Authenticator for ClientCertificate {
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, Result<Option<UserInfo>, String>> {
        let user = req.extensions.get::<VerifiedClientCert>().and_then(|c| c.0.clone());
        Box::pin(async move { Ok(user) })
    }
}

/// The user of a verified client certificate: CN is the name, each O a group, plus
/// `system:authenticated` as upstream adds it. `None` for a certificate without a CN.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let subject = kaname_tls::subject(der)?;
    let mut groups = subject.organizations;
    groups.push(SYSTEM_AUTHENTICATED.to_string());
    Some(UserInfo { name: subject.common_name?, groups, ..UserInfo::default() })
}
