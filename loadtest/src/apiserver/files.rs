//! The files the stand-in leaves in its state directory for clients: CA certificates and
//! kubeconfigs for each kind of caller.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::pki::PemPair;

use super::ApiServerError;

/// How a kubeconfig's user authenticates.
pub(crate) enum Credential<'a> {
    Token(&'a str),
    Certificate(&'a PemPair),
}

/// A kubeconfig for `user` talking to `server`, trusting `ca_pem`.
pub(crate) fn kubeconfig(server: &str, ca_pem: &str, user: &str, credential: Credential) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user_block = match credential {
        Credential::Token(token) => format!("    token: {token}\n"),
        Credential::Certificate(pair) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pair.cert_pem),
            b64(&pair.key_pem)
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fleet\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: \"{user}\"\n  user:\n{user_block}\
         contexts:\n- name: fleet\n  context:\n    cluster: fleet\n    user: \"{user}\"\n\
         current-context: fleet\npreferences: {{}}\n",
        ca = b64(ca_pem),
    )
}

/// Writes `contents` to `dir/name`, returning the path.
pub(crate) fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, ApiServerError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| ApiServerError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
