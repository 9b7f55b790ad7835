//! Kubeconfig files with everything embedded (`certificate-authority-data`,
//! `client-certificate-data`, `client-key-data`), as kubeadm writes `admin.conf`: one cluster,
//! one user, one context `<user>@<cluster>`, current.

use std::path::Path;

use base64::Engine as _;

use crate::Issued;

/// A kubeconfig for one user of one cluster. The PEM fields are embedded base64-encoded, so
/// the file stands alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubeconfig {
    /// The cluster's (and, with the user, the context's) name.
    pub cluster_name: String,
    /// The API server's URL, `https://host:port`.
    pub server: String,
    /// The CA the server's certificate chains to, PEM.
    pub ca_pem: Vec<u8>,
    /// The user's name in the file (the certificate's CN is what the server goes by).
    pub user_name: String,
    /// The user's client certificate, PEM.
    pub client_cert_pem: Vec<u8>,
    /// The user's private key, PEM.
    pub client_key_pem: Vec<u8>,
}

impl Kubeconfig {
    /// A kubeconfig for `user` authenticating with `client`, a certificate [`crate::Ca::issue`] made.
    pub fn new(
        cluster_name: impl Into<String>,
        server: impl Into<String>,
        ca_pem: impl Into<Vec<u8>>,
        user_name: impl Into<String>,
        client: &Issued,
    ) -> Kubeconfig {
        Kubeconfig {
            cluster_name: cluster_name.into(),
            server: server.into(),
            ca_pem: ca_pem.into(),
            user_name: user_name.into(),
            client_cert_pem: client.cert_pem().into_bytes(),
            client_key_pem: client.key_pem().into_bytes(),
        }
    }

    /// kubeadm's context name: `<user>@<cluster>`.
    pub fn context_name(&self) -> String {
        format!("{}@{}", self.user_name, self.cluster_name)
    }

    /// The file's text (YAML).
    pub fn to_yaml(&self) -> String {
        let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
        let (cluster, user, context) = (&self.cluster_name, &self.user_name, self.context_name());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {context}\n  context:\n    cluster: {cluster}\n    user: {user}\ncurrent-context: {context}\npreferences: {{}}\n",
            server = self.server,
            ca = b64(&self.ca_pem),
            cert = b64(&self.client_cert_pem),
            key = b64(&self.client_key_pem),
        )
    }

    /// Writes the file with mode 0600 (it holds a private key).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_private(path, self.to_yaml().as_bytes())
    }
}
