//! Identity headers set by the front proxy (`X-Remote-User`, `X-Remote-Group`,
//! `X-Remote-Extra-<key>`), read only after the proxy's certificate has been verified.
//!
//! Reading the headers is kept apart from verifying the certificate so that no code path can
//! reach these headers without going through [`super::DelegatedAuthenticator`]'s checks first.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;

use super::AuthenticatedUser;

/// The names of the identity headers, as `--requestheader-*-headers` or the ConfigMap give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderNames {
    /// Tried in order; the first with a non-empty value names the user.
    pub username: Vec<HeaderName>,
    /// Every value of every one is a group.
    pub group: Vec<HeaderName>,
    /// Lower-cased prefixes; a header `<prefix><key>` carries a value of extra `<key>`.
    pub extra_prefixes: Vec<String>,
}

// === impl HeaderNames ===

impl HeaderNames {
    /// Header names from configuration; names that are not valid HTTP header names are skipped
    /// (no request could carry them).
    pub fn new(username: &[String], group: &[String], extra_prefixes: &[String]) -> Self {
        let names = |list: &[String]| {
            list.iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
                .filter_map(|n| HeaderName::try_from(n).ok())
                .collect()
        };
        HeaderNames {
            username: names(username),
            group: names(group),
            extra_prefixes: extra_prefixes
                .iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// The user the headers name, or `None` when no username header has a value.
    pub fn user(&self, headers: &HeaderMap) -> Option<AuthenticatedUser> {
        let name = self
            .username
            .iter()
            .filter_map(|h| headers.get(h))
            .filter_map(|v| v.to_str().ok())
            .find(|v| !v.is_empty())?
            .to_owned();
        let groups = self
            .group
            .iter()
            .flat_map(|h| headers.get_all(h))
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            // `HeaderName`s are stored lower-cased, so the prefixes are too.
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| header.as_str().strip_prefix(p.as_str()))
            else {
                continue;
            };
            let Ok(value) = value.to_str() else { continue };
            extra
                .entry(unescape_extra_key(key))
                .or_default()
                .push(value.to_owned());
        }
        Some(AuthenticatedUser {
            name,
            uid: String::new(),
            groups,
            extra,
        })
    }

    /// Whether `header` is one of the identity headers.
    pub fn is_identity_header(&self, header: &HeaderName) -> bool {
        self.username.contains(header)
            || self.group.contains(header)
            || self
                .extra_prefixes
                .iter()
                .any(|p| header.as_str().starts_with(p.as_str()))
    }

    /// Removes every identity header, so nothing after authentication can mistake a client's own
    /// `X-Remote-User` for a proxied identity.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|h| self.is_identity_header(h))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Extra keys are percent-encoded so they can hold characters header names cannot; a key that
/// does not decode is kept as sent.
fn unescape_extra_key(key: &str) -> String {
    let key = key.to_ascii_lowercase();
    match percent_decode_str(&key).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> HeaderNames {
        HeaderNames::new(
            &["X-Remote-User".into()],
            &["X-Remote-Group".into()],
            &["X-Remote-Extra-".into()],
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::try_from(*k).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_user_groups_and_extras_come_from_their_headers() {
        let user = defaults()
            .user(&headers(&[
                ("x-remote-user", "alice"),
                ("x-remote-group", "devs"),
                ("X-Remote-Group", "system:authenticated"),
                ("x-remote-extra-scopes", "read"),
                ("x-remote-extra-scopes", "write"),
                ("X-Remote-Extra-Example.com%2fteam", "blue"),
                ("x-remote-extra-bad%zz", "kept"),
            ]))
            .unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["devs", "system:authenticated"]);
        assert_eq!(user.extra["scopes"], ["read", "write"]);
        assert_eq!(user.extra["example.com/team"], ["blue"]);
        assert_eq!(user.extra["bad%zz"], ["kept"]);
    }

    #[test]
    fn no_username_header_means_no_user() {
        assert_eq!(
            defaults().user(&headers(&[("x-remote-group", "admins")])),
            None
        );
        assert_eq!(defaults().user(&headers(&[("x-remote-user", "")])), None);
    }

    #[test]
    fn username_headers_are_tried_in_order() {
        let names = HeaderNames::new(&["X-First".into(), "X-Second".into()], &[], &[]);
        let user = names
            .user(&headers(&[("x-second", "second"), ("x-first", "")]))
            .unwrap();
        assert_eq!(user.name, "second");
        let user = names
            .user(&headers(&[("x-second", "second"), ("x-first", "first")]))
            .unwrap();
        assert_eq!(user.name, "first");
    }

    #[test]
    fn stripping_removes_every_identity_header_and_nothing_else() {
        let mut map = headers(&[
            ("x-remote-user", "mallory"),
            ("x-remote-group", "system:masters"),
            ("x-remote-extra-a", "b"),
            ("authorization", "Bearer t"),
            ("accept", "application/json"),
        ]);
        defaults().strip(&mut map);
        let mut left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization"]);
    }
}
