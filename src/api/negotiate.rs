//! Content negotiation for the metrics resources: which body format an `Accept` header asks for.
//!
//! Follows kube-apiserver's negotiation for a resource endpoint:
//! - a missing or empty header means JSON, the first serializer;
//! - the header is split into clauses, each `type/subtype;param=value;...`; a clause that does not
//!   parse is skipped, a bare `*` means `*/*`;
//! - clauses are ordered by quality first and then wildcards last, with the same comparison and
//!   the same (insertion) sort Go's negotiator applies to a short header, so the rare headers whose
//!   order that comparison leaves ambiguous resolve as upstream resolves them;
//! - each clause is tried against the serializers in the server's order, JSON then protobuf, and
//!   `*/*` or `application/*` match JSON first;
//! - `as`, `g` and `v` ask for a conversion: only `as=Table` with `g=meta.k8s.io` and `v=v1` or
//!   `v1beta1` is served, and only as JSON; any other conversion skips the clause;
//! - `stream=watch` is tolerated (upstream ignores it outside watches); another `stream` value
//!   skips the clause; other parameters are ignored;
//! - when no clause matches, the answer is `406 Not Acceptable`.
//!
//! Deliberate differences, all towards leniency: type, subtype and parameter names compare
//! case-insensitively (RFC 9110), quoted parameter values are unquoted, tabs count as
//! whitespace, and a header of only whitespace counts as missing. Not served (so they end in 406 unless another clause matches): YAML and the
//! `PartialObjectMetadata` conversions.
//!
//! Parsing never panics and does no I/O; it borrows from the header and allocates one small
//! vector of clauses.

use thiserror::Error;

/// The body format of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/json`: the object itself.
    Json,
    /// `application/json;as=Table;g=meta.k8s.io;v=...`: a `Table` of the objects.
    Table(TableVersion),
    /// `application/vnd.kubernetes.protobuf`: the object in Kubernetes' protobuf envelope.
    Protobuf,
}

impl Format {
    /// The `Content-Type` a response in this format carries.
    pub fn content_type(self) -> &'static str {
        match self {
            // kube-apiserver labels a table with the plain JSON media type.
            Format::Json | Format::Table(_) => "application/json",
            Format::Protobuf => PROTOBUF_MEDIA_TYPE,
        }
    }
}

/// Which `meta.k8s.io` version of `Table` a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableVersion {
    V1,
    V1beta1,
}

impl TableVersion {
    /// The `apiVersion` a table (and its `PartialObjectMetadata` rows) of this version carries.
    pub fn api_version(self) -> &'static str {
        match self {
            TableVersion::V1 => "meta.k8s.io/v1",
            TableVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// No clause of the `Accept` header names a format this server produces. Callers answer
/// `406 Not Acceptable` with a `Status` body of reason [`NotAcceptable::REASON`] carrying
/// [`NotAcceptable::message`], kube-apiserver's text listing the media types it serves.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("only the following media types are accepted: {}", SUPPORTED.join(", "))]
pub struct NotAcceptable;

impl NotAcceptable {
    /// The `reason` of the `Status` a 406 carries.
    pub const REASON: &'static str = "NotAcceptable";

    /// The `Status` message kube-apiserver sends with a 406.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// The protobuf media type, as Kubernetes names it.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Media types listed in the 406 message, in the server's order.
const SUPPORTED: &[&str] = &["application/json", PROTOBUF_MEDIA_TYPE];

/// The most clauses of one header considered; the rest are ignored. Real clients send one to
/// three; the bound keeps the quadratic sort cheap on a hostile header.
const MAX_CLAUSES: usize = 64;

/// Picks the response format for an `Accept` header (`None` when the request had none).
pub fn negotiate(accept: Option<&str>) -> Result<Format, NotAcceptable> {
    let header = match accept {
        None => return Ok(Format::Json),
        Some(h) if h.trim_matches(is_ows).is_empty() => return Ok(Format::Json),
        Some(h) => h,
    };
    for clause in parse(header) {
        for serializer in [Serializer::Json, Serializer::Protobuf] {
            if !serializer.matches(&clause) {
                continue;
            }
            if let Some(format) = serializer.accept(&clause) {
                return Ok(format);
            }
        }
    }
    Err(NotAcceptable)
}

/// The table version the header's best matching clause asks for, if that clause is a table
/// request; `None` when the header negotiates to plain JSON, protobuf or nothing.
pub fn accepts_table(accept: &str) -> Option<TableVersion> {
    match negotiate(Some(accept)) {
        Ok(Format::Table(version)) => Some(version),
        _ => None,
    }
}

/// Whether the header negotiates to the protobuf encoding.
pub fn accepts_protobuf(accept: &str) -> bool {
    matches!(negotiate(Some(accept)), Ok(Format::Protobuf))
}

/// The format an error `Status` is written in for this `Accept` header. Upstream negotiates an
/// error without conversions: a `Table` clause is skipped, the first clause naming JSON or
/// protobuf wins, and when none does the `Status` is written as JSON anyway.
pub fn negotiate_status(accept: Option<&str>) -> Format {
    let Some(header) = accept.filter(|h| !h.trim_matches(is_ows).is_empty()) else {
        return Format::Json;
    };
    for clause in parse(header) {
        if clause.params.converts() {
            continue;
        }
        for serializer in [Serializer::Json, Serializer::Protobuf] {
            if !serializer.matches(&clause) {
                continue;
            }
            if let Some(format) = serializer.accept(&clause) {
                return format;
            }
        }
    }
    Format::Json
}

/// Whether an `Accept` header on an OpenAPI document path admits the JSON document, the only
/// encoding of those documents served here. As kube-openapi's handlers do, a missing header
/// means `*/*`, a clause matches on type and subtype (each possibly `*`) and its parameters and
/// quality are not looked at. Upstream also serves the documents as gnostic protobuf
/// (`application/com.github.proto-openapi.spec.v2.v1.0+protobuf` and the v3 equivalents); a
/// header naming only those is answered `406` here.
pub fn accepts_json_document(accept: Option<&str>) -> bool {
    let Some(header) = accept.filter(|h| !h.trim_matches(is_ows).is_empty()) else {
        return true;
    };
    parse(header).iter().any(|clause| {
        (clause.kind == "*" || clause.kind.eq_ignore_ascii_case("application"))
            && (clause.subtype == "*" || clause.subtype.eq_ignore_ascii_case("json"))
    })
}

// === parsing ===

/// One media range of an `Accept` header, borrowing from it.
#[derive(Clone, Debug, Default)]
struct Clause<'a> {
    kind: &'a str,
    subtype: &'a str,
    quality: f32,
    params: Params<'a>,
}

/// The parameters negotiation looks at; everything else is ignored.
#[derive(Clone, Debug, Default)]
struct Params<'a> {
    convert_kind: Option<&'a str>,
    convert_group: Option<&'a str>,
    convert_version: Option<&'a str>,
    stream: Option<&'a str>,
}

impl Params<'_> {
    fn converts(&self) -> bool {
        self.convert_kind.is_some()
            || self.convert_group.is_some()
            || self.convert_version.is_some()
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits and orders the clauses of a header.
fn parse(header: &str) -> Vec<Clause<'_>> {
    let mut clauses: Vec<Clause<'_>> = header
        .split(',')
        .filter_map(parse_clause)
        .take(MAX_CLAUSES)
        .collect();
    // Go's sort of a slice this short is an insertion sort driven by this comparison; it is not
    // a strict order (a specific low-quality clause can move before a wildcard), so the same
    // algorithm is used to land on the same first clause.
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && before(&clauses[j], &clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses
}

/// Go's negotiator's "less": higher quality first, then a concrete type, then a concrete subtype.
fn before(a: &Clause<'_>, b: &Clause<'_>) -> bool {
    a.quality > b.quality
        || (a.kind != "*" && b.kind == "*")
        || (a.subtype != "*" && b.subtype == "*")
}

fn parse_clause(part: &str) -> Option<Clause<'_>> {
    let mut pieces = part.trim_matches(is_ows).split(';');
    let range = pieces.next()?.trim_matches(is_ows);
    let (kind, subtype) = match range.split_once('/') {
        Some((kind, subtype)) => (kind.trim_matches(is_ows), subtype.trim_matches(is_ows)),
        None if range == "*" => ("*", "*"),
        None => return None,
    };
    if kind.is_empty() || subtype.is_empty() || subtype.contains('/') {
        return None;
    }
    let mut clause = Clause {
        kind,
        subtype,
        quality: 1.0,
        params: Params::default(),
    };
    for param in pieces {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let name = name.trim_matches(is_ows);
        if name.eq_ignore_ascii_case("q") {
            // Go parses the raw value and takes 0 when it fails; a NaN sorts like 0.
            clause.quality = value.parse::<f32>().unwrap_or(0.0);
            continue;
        }
        let value = unquote(value.trim_matches(is_ows));
        let params = &mut clause.params;
        if name.eq_ignore_ascii_case("as") {
            params.convert_kind = Some(value);
        } else if name.eq_ignore_ascii_case("g") {
            params.convert_group = Some(value);
        } else if name.eq_ignore_ascii_case("v") {
            params.convert_version = Some(value);
        } else if name.eq_ignore_ascii_case("stream") {
            params.stream = Some(value);
        }
    }
    Some(clause)
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

// === serializers ===

/// The encodings this server has, in the order kube-apiserver tries them.
#[derive(Clone, Copy, Debug)]
enum Serializer {
    Json,
    Protobuf,
}

impl Serializer {
    fn media_type(self) -> (&'static str, &'static str) {
        match self {
            Serializer::Json => ("application", "json"),
            Serializer::Protobuf => ("application", "vnd.kubernetes.protobuf"),
        }
    }

    fn matches(self, clause: &Clause<'_>) -> bool {
        let (kind, subtype) = self.media_type();
        let kind_matches = clause.kind.eq_ignore_ascii_case(kind);
        let subtype_matches = clause.subtype == "*" || clause.subtype.eq_ignore_ascii_case(subtype);
        (kind_matches && subtype_matches) || (clause.kind == "*" && clause.subtype == "*")
    }

    /// The format this serializer gives for the clause's parameters, if it can serve them.
    fn accept(self, clause: &Clause<'_>) -> Option<Format> {
        let params = &clause.params;
        match params.stream {
            None | Some("") | Some("watch") => {}
            Some(_) => return None,
        }
        if !params.converts() {
            return Some(match self {
                Serializer::Json => Format::Json,
                Serializer::Protobuf => Format::Protobuf,
            });
        }
        if params.convert_group != Some("meta.k8s.io") || params.convert_kind != Some("Table") {
            return None;
        }
        let version = match params.convert_version {
            Some("v1") => TableVersion::V1,
            Some("v1beta1") => TableVersion::V1beta1,
            _ => return None,
        };
        // Tables are rendered as JSON (or YAML, which is not served) only.
        match self {
            Serializer::Json => Some(Format::Table(version)),
            Serializer::Protobuf => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn missing_or_blank_header_means_json() {
        assert_eq!(negotiate(None), Ok(Format::Json));
        assert_eq!(negotiate(Some("")), Ok(Format::Json));
        assert_eq!(negotiate(Some("  \t")), Ok(Format::Json));
    }

    #[test]
    fn wildcards_mean_json() {
        for header in ["*/*", "*", "application/*", "application/*;q=0.9", " */* "] {
            assert_eq!(negotiate(Some(header)), Ok(Format::Json), "{header}");
        }
    }

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        assert_eq!(
            negotiate(Some(KUBECTL_GET)),
            Ok(Format::Table(TableVersion::V1))
        );
        assert_eq!(accepts_table(KUBECTL_GET), Some(TableVersion::V1));
    }

    #[test]
    fn a_v1beta1_table_is_served_when_asked_for_alone() {
        let header = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(accepts_table(header), Some(TableVersion::V1beta1));
    }

    #[test]
    fn a_table_of_an_unknown_version_falls_through_to_the_next_clause() {
        let header = "application/json;as=Table;v=v2;g=meta.k8s.io, application/json";
        assert_eq!(negotiate(Some(header)), Ok(Format::Json));
        let header = "application/json;as=Table;v=v2;g=meta.k8s.io";
        assert_eq!(negotiate(Some(header)), Err(NotAcceptable));
    }

    #[test]
    fn a_table_needs_its_group() {
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1")),
            Err(NotAcceptable)
        );
        assert_eq!(negotiate(Some("application/json;v=v1")), Err(NotAcceptable));
    }

    #[test]
    fn a_table_is_never_protobuf() {
        let header = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io";
        assert_eq!(negotiate(Some(header)), Err(NotAcceptable));
        let header =
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(header)), Ok(Format::Json));
    }

    #[test]
    fn a_wildcard_table_request_is_a_json_table() {
        let header = "*/*;as=Table;v=v1;g=meta.k8s.io";
        assert_eq!(negotiate(Some(header)), Ok(Format::Table(TableVersion::V1)));
    }

    #[test]
    fn client_go_protobuf_preference_is_protobuf() {
        let header = "application/vnd.kubernetes.protobuf, */*";
        assert_eq!(negotiate(Some(header)), Ok(Format::Protobuf));
        assert!(accepts_protobuf(header));
        assert!(!accepts_protobuf("application/json"));
    }

    #[test]
    fn quality_orders_clauses() {
        let header = "application/json;q=0.5, application/vnd.kubernetes.protobuf";
        assert_eq!(negotiate(Some(header)), Ok(Format::Protobuf));
        let header = "application/json, application/vnd.kubernetes.protobuf;q=0.5";
        assert_eq!(negotiate(Some(header)), Ok(Format::Json));
    }

    #[test]
    fn a_specific_clause_moves_before_a_wildcard_as_go_sorts_it() {
        // Go's comparison puts the concrete type first even at a lower quality.
        let header = "*/*, application/vnd.kubernetes.protobuf;q=0.5";
        assert_eq!(negotiate(Some(header)), Ok(Format::Protobuf));
    }

    #[test]
    fn unsupported_types_are_not_acceptable() {
        for header in [
            "text/html",
            "application/yaml",
            "image/png, text/plain;q=0.1",
        ] {
            assert_eq!(negotiate(Some(header)), Err(NotAcceptable), "{header}");
        }
        assert_eq!(
            NotAcceptable.message(),
            "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
        );
    }

    #[test]
    fn malformed_clauses_are_skipped() {
        for header in [
            "garbage, application/json",
            "/, application/json",
            "application/, application/json",
            "a/b/c, application/json",
            ";;;, application/json",
            ",,,application/json",
            "application/json;q",
            "application/json;=;==;as",
        ] {
            assert_eq!(negotiate(Some(header)), Ok(Format::Json), "{header}");
        }
        for header in ["garbage", ",", ";", "/", "application/", "\u{0}"] {
            assert_eq!(negotiate(Some(header)), Err(NotAcceptable), "{header}");
        }
    }

    #[test]
    fn media_types_and_parameter_names_ignore_case_and_quotes() {
        let header = "Application/JSON; AS=\"Table\"; V=v1; G=meta.k8s.io";
        assert_eq!(negotiate(Some(header)), Ok(Format::Table(TableVersion::V1)));
    }

    #[test]
    fn stream_watch_is_tolerated_and_other_streams_are_not() {
        assert_eq!(
            negotiate(Some("application/json;stream=watch")),
            Ok(Format::Json)
        );
        assert_eq!(
            negotiate(Some("application/json;stream=other")),
            Err(NotAcceptable)
        );
    }

    #[test]
    fn pretty_and_unknown_parameters_are_ignored() {
        assert_eq!(
            negotiate(Some("application/json;pretty=1;charset=utf-8")),
            Ok(Format::Json)
        );
    }

    #[test]
    fn content_types_name_the_encoding() {
        assert_eq!(Format::Json.content_type(), "application/json");
        assert_eq!(
            Format::Table(TableVersion::V1).content_type(),
            "application/json"
        );
        assert_eq!(Format::Protobuf.content_type(), PROTOBUF_MEDIA_TYPE);
    }

    #[test]
    fn errors_skip_table_clauses_and_fall_back_to_json() {
        assert_eq!(negotiate_status(None), Format::Json);
        assert_eq!(negotiate_status(Some(KUBECTL_GET)), Format::Json);
        assert_eq!(
            negotiate_status(Some("application/vnd.kubernetes.protobuf, */*")),
            Format::Protobuf
        );
        let header =
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf";
        assert_eq!(negotiate_status(Some(header)), Format::Protobuf);
        assert_eq!(negotiate_status(Some("text/html")), Format::Json);
    }

    #[test]
    fn openapi_documents_are_json_for_any_header_that_admits_json() {
        for header in [
            None,
            Some(""),
            Some("application/json"),
            Some("*/*"),
            Some("application/*"),
            Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json"),
        ] {
            assert!(accepts_json_document(header), "{header:?}");
        }
        for header in [
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            "application/com.github.proto-openapi.spec.v3.v1.0+protobuf",
            "text/html",
            "garbage",
        ] {
            assert!(!accepts_json_document(Some(header)), "{header}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_negotiates_without_panicking(header in proptest::prelude::any::<String>()) {
            let _ = negotiate(Some(&header));
            let _ = accepts_table(&header);
            let _ = accepts_protobuf(&header);
        }

        #[test]
        fn a_json_clause_anywhere_makes_any_header_acceptable(
            header in "[ -~]{0,80}",
        ) {
            // A JSON clause of top quality can only lose to another served format.
            let with_json = format!("{header},application/json");
            proptest::prop_assert!(negotiate(Some(&with_json)).is_ok());
        }

        #[test]
        fn header_like_strings_never_panic(
            header in "([a-z*]{0,12}/[a-z.*]{0,24}(;[a-zA-Z]{1,6}=[a-zA-Z0-9.\" ]{0,12}){0,4}, ?){0,6}",
        ) {
            let _ = negotiate(Some(&header));
        }
    }
}
