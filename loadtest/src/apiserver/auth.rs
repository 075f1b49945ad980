//! Who a caller is and what they may do.
//!
//! Authentication: a client certificate verified by the client CA (user = CN, groups = O), else a
//! bearer token from the fixed user table, else anonymous. Authorization is a small fixed policy
//! (not RBAC) that both the stand-in's own endpoints and `SubjectAccessReview` answers use, so a
//! metrics server asking "may X list pods.metrics.k8s.io?" gets the same answer the stand-in
//! would apply itself. Owns no I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The user `kubeconfig` authenticates as: may read everything, metrics included.
pub const METRICS_READER: &str = "metrics-reader";
/// Group whose members may read everything, metrics included (the metrics reader is in it).
pub const READERS_GROUP: &str = "metrics-readers";
/// The user `denied.kubeconfig` authenticates as: may read nodes and pods, not metrics.
pub const DENIED_USER: &str = "metrics-denied";
/// The user `server.kubeconfig` authenticates as (the metrics server's own identity).
pub const SERVER_USER: &str = "system:serviceaccount:kube-system:metrics-server";
/// The user `admin.kubeconfig` authenticates as, in `system:masters`.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// Group whose members may do anything.
pub const MASTERS_GROUP: &str = "system:masters";
/// Group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if !all.iter().any(|g| g == AUTHENTICATED_GROUP) {
            all.push(AUTHENTICATED_GROUP.to_owned());
        }
        UserInfo {
            name: name.to_owned(),
            uid: String::new(),
            groups: all,
        }
    }
}

/// The known users and their bearer tokens.
pub(crate) struct Users {
    by_token: HashMap<String, UserInfo>,
    token_of: HashMap<String, String>,
}

/// A hard-to-guess token. Not cryptographic: `RandomState` is seeded per process, which is all a
/// loopback simulation needs to keep tests from depending on a fixed secret.
fn fresh_token(user: &str) -> String {
    let mut out = String::with_capacity(40);
    for round in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(user.as_bytes());
        h.write_u64(round);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Users {
    pub(crate) fn new() -> Self {
        let mut users = Users {
            by_token: HashMap::new(),
            token_of: HashMap::new(),
        };
        users.add(UserInfo::new(METRICS_READER, &[READERS_GROUP]));
        users.add(UserInfo::new(DENIED_USER, &[]));
        users.add(UserInfo::new(
            SERVER_USER,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
            ],
        ));
        users.add(UserInfo::new(ADMIN_USER, &[MASTERS_GROUP]));
        users
    }

    fn add(&mut self, user: UserInfo) {
        let token = fresh_token(&user.name);
        self.token_of.insert(user.name.clone(), token.clone());
        self.by_token.insert(token, user);
    }

    pub(crate) fn by_token(&self, token: &str) -> Option<&UserInfo> {
        self.by_token.get(token)
    }

    pub(crate) fn token_of(&self, user: &str) -> Option<&str> {
        self.token_of.get(user).map(String::as_str)
    }

    /// Every known user with its groups (for writing kubeconfigs and certificates).
    pub(crate) fn find(&self, user: &str) -> Option<&UserInfo> {
        let token = self.token_of.get(user)?;
        self.by_token.get(token)
    }
}

/// The user a verified client certificate names: CN is the user, each O a group.
pub(crate) fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    Some(UserInfo::new(&name, &groups))
}

/// What a request (or a review) asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

/// Paths anyone may read, authenticated or not (like `system:public-info-viewer`).
pub(crate) fn is_public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Paths every authenticated user may read (discovery).
fn is_discovery_path(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || path == "/apis"
        || path.starts_with("/apis/")
        || path.starts_with("/openapi")
}

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Decides a request; the string is the reason a review reports.
pub fn authorize(user: &UserInfo, attributes: &Attributes) -> (bool, &'static str) {
    if user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return (true, "member of system:masters");
    }
    match attributes {
        Attributes::NonResource { verb, path } => {
            let readable = verb == "get" || verb == "head";
            if readable && is_public_path(path) {
                return (true, "public path");
            }
            let authenticated = user.groups.iter().any(|g| g == AUTHENTICATED_GROUP);
            if readable && authenticated && is_discovery_path(path) {
                return (true, "discovery is readable by authenticated users");
            }
            (false, "")
        }
        Attributes::Resource {
            verb,
            group,
            resource,
            ..
        } => {
            let read = READ_VERBS.contains(&verb.as_str());
            let reader =
                user.name == METRICS_READER || user.groups.iter().any(|g| g == READERS_GROUP);
            if read && reader {
                return (true, "metrics readers may read everything");
            }
            match user.name.as_str() {
                DENIED_USER if read && group != "metrics.k8s.io" => {
                    (true, "metrics-denied may read everything but metrics")
                }
                SERVER_USER => {
                    let allowed = match (group.as_str(), resource.as_str()) {
                        ("", "nodes" | "pods" | "configmaps" | "namespaces") => read,
                        ("authentication.k8s.io", "tokenreviews") => verb == "create",
                        ("authorization.k8s.io", "subjectaccessreviews") => verb == "create",
                        _ => false,
                    };
                    if allowed {
                        (true, "granted to the metrics server")
                    } else {
                        (false, "")
                    }
                }
                _ => (false, ""),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(verb: &str, group: &str, resource: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
        }
    }

    #[test]
    fn metrics_are_readable_by_the_reader_and_not_by_the_denied_user() {
        let reader = UserInfo::new(METRICS_READER, &[]);
        let denied = UserInfo::new(DENIED_USER, &[]);
        let list_metrics = resource("list", "metrics.k8s.io", "pods");
        assert!(authorize(&reader, &list_metrics).0);
        assert!(!authorize(&denied, &list_metrics).0);
        assert!(authorize(&denied, &resource("list", "", "nodes")).0);
        assert!(!authorize(&reader, &resource("delete", "", "nodes")).0);
        let member = UserInfo::new("alice", &[READERS_GROUP]);
        assert!(authorize(&member, &list_metrics).0);
    }

    #[test]
    fn masters_and_public_paths_are_always_allowed() {
        let nobody = UserInfo {
            name: "system:anonymous".to_owned(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".to_owned()],
        };
        let healthz = Attributes::NonResource {
            verb: "get".to_owned(),
            path: "/healthz".to_owned(),
        };
        assert!(authorize(&nobody, &healthz).0);
        let apis = Attributes::NonResource {
            verb: "get".to_owned(),
            path: "/apis".to_owned(),
        };
        assert!(!authorize(&nobody, &apis).0);
        let admin = UserInfo::new("someone", &[MASTERS_GROUP]);
        assert!(authorize(&admin, &resource("delete", "", "nodes")).0);
    }

    #[test]
    fn server_user_may_review_but_not_read_metrics() {
        let server = UserInfo::new(SERVER_USER, &[]);
        assert!(
            authorize(
                &server,
                &resource("create", "authentication.k8s.io", "tokenreviews")
            )
            .0
        );
        assert!(authorize(&server, &resource("watch", "", "pods")).0);
        assert!(!authorize(&server, &resource("list", "metrics.k8s.io", "pods")).0);
    }

    #[test]
    fn tokens_are_distinct_per_user_and_resolve_back() {
        let users = Users::new();
        let a = users.token_of(METRICS_READER).expect("token");
        let b = users.token_of(DENIED_USER).expect("token");
        assert_ne!(a, b);
        assert_eq!(
            users.by_token(a).map(|u| u.name.as_str()),
            Some(METRICS_READER)
        );
        assert!(users.by_token("nope").is_none());
    }
}
