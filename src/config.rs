//! Command-line flags, named as upstream metrics-server names them.
//!
//! Owns parsing and validation of the command line and nothing else: no file is read and no socket
//! opened here. Values parse the way upstream's flag library parses them (Go durations such as
//! `1m30s`, comma-separated lists, `--flag=value` and `--flag value`, `--bool-flag[=true|false]`), so
//! an existing Deployment's arguments work unchanged. Unknown flags are an error.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Address types a node may list in `status.addresses`.
pub const ADDRESS_TYPES: [&str; 5] = [
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// Why the command line was rejected after parsing; each message names the offending flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--metric-resolution must be at least 1s, got {0:?}")]
    ResolutionTooShort(Duration),
    #[error("--kubelet-request-timeout must be positive")]
    ZeroRequestTimeout,
    #[error("--kubelet-insecure-tls cannot be combined with --kubelet-certificate-authority")]
    InsecureWithCertificateAuthority,
    #[error("--{given} requires --{missing}")]
    MissingPair {
        given: &'static str,
        missing: &'static str,
    },
    #[error("--kubelet-preferred-address-types: unknown address type {0:?}")]
    UnknownAddressType(String),
    #[error("--kubelet-preferred-address-types must name at least one address type")]
    NoAddressTypes,
    #[error("--tls-min-version: unknown version {0:?} (use VersionTLS12 or VersionTLS13)")]
    UnknownTlsVersion(String),
    #[error("--tls-cipher-suites: unknown cipher suite {0:?}")]
    UnknownCipherSuite(String),
    #[error("--{0} must be a port between 1 and 65535")]
    ZeroPort(&'static str),
}

/// The minimum TLS version the API server accepts (`--tls-min-version`).
///
/// rustls implements TLS 1.2 and 1.3 only, so `VersionTLS10` and `VersionTLS11` are accepted for
/// compatibility and mean TLS 1.2: the server is never less strict than asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// Every flag. Field docs give the unit and the upstream default.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "metrics-server",
    version,
    about = "Kubernetes resource-metrics server: scrapes kubelets and serves metrics.k8s.io",
    // Upstream's `-h` is help too; `-v` is the log level, so clap's `-V` stays but `--version` is the
    // documented spelling.
    disable_help_subcommand = true
)]
pub struct Config {
    /// Path to a kubeconfig; in-cluster configuration when unset.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The interval between two scrapes of a node (Go duration; upstream default 60s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub metric_resolution: Duration,

    /// The bound on one kubelet request, connect included (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub kubelet_request_timeout: Duration,

    /// Do not verify the kubelets' serving certificates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub kubelet_insecure_tls: bool,

    /// Node address types to try, in order, when picking a kubelet's address.
    #[arg(
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
    )]
    pub kubelet_preferred_address_types: Vec<String>,

    /// Use the port in `status.daemonEndpoints.kubeletEndpoint` instead of `--kubelet-port`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub kubelet_use_node_status_port: bool,

    /// The kubelet port.
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    pub kubelet_port: u16,

    /// CA bundle (PEM) that signed the kubelets' serving certificates; the cluster CA when unset.
    #[arg(long, value_name = "PATH")]
    pub kubelet_certificate_authority: Option<PathBuf>,

    /// Client certificate (PEM) presented to kubelets.
    #[arg(long, value_name = "PATH")]
    pub kubelet_client_certificate: Option<PathBuf>,

    /// Key (PEM) of `--kubelet-client-certificate`.
    #[arg(long, value_name = "PATH")]
    pub kubelet_client_key: Option<PathBuf>,

    /// Only nodes matching this label selector are scraped and served.
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub node_selector: Option<String>,

    /// The HTTPS port of the API.
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    pub secure_port: u16,

    /// The address the API listens on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Where a self-signed serving pair is kept when `--tls-cert-file` is not given.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "apiserver.local.config/certificates"
    )]
    pub cert_dir: PathBuf,

    /// Serving certificate chain (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// Serving key (PEM).
    #[arg(long, value_name = "PATH")]
    pub tls_private_key_file: Option<PathBuf>,

    /// Minimum TLS version: VersionTLS12 or VersionTLS13 (VersionTLS10/11 mean TLS 1.2).
    #[arg(long, value_name = "VERSION", value_parser = parse_tls_version)]
    pub tls_min_version: Option<TlsVersion>,

    /// Cipher suites for TLS 1.2 and 1.3, by their IANA names; all secure suites when unset.
    #[arg(long, value_name = "SUITES", value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,

    /// Kubeconfig for TokenReview; `--kubeconfig` when unset.
    #[arg(long, value_name = "PATH")]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// Kubeconfig for SubjectAccessReview; `--kubeconfig` when unset.
    #[arg(long, value_name = "PATH")]
    pub authorization_kubeconfig: Option<PathBuf>,

    /// Do not read `kube-system/extension-apiserver-authentication`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_bool)]
    pub authentication_skip_lookup: bool,

    /// Start even if `extension-apiserver-authentication` cannot be read.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = parse_bool)]
    pub authentication_tolerate_lookup_failure: bool,

    /// CA bundle (PEM) for client certificates.
    #[arg(long, value_name = "PATH")]
    pub client_ca_file: Option<PathBuf>,

    /// CA bundle (PEM) for the front proxy's client certificate.
    #[arg(long, value_name = "PATH")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// Common names allowed for the front proxy's certificate; any when empty.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,

    /// Headers carrying the user name.
    #[arg(
        long,
        value_name = "HEADERS",
        value_delimiter = ',',
        default_value = "X-Remote-User"
    )]
    pub requestheader_username_headers: Vec<String>,

    /// Headers carrying the groups.
    #[arg(
        long,
        value_name = "HEADERS",
        value_delimiter = ',',
        default_value = "X-Remote-Group"
    )]
    pub requestheader_group_headers: Vec<String>,

    /// Prefixes of headers carrying extra user attributes.
    #[arg(
        long,
        value_name = "PREFIXES",
        value_delimiter = ',',
        default_value = "X-Remote-Extra-"
    )]
    pub requestheader_extra_headers_prefix: Vec<String>,

    /// Paths served without authorization.
    #[arg(
        long,
        value_name = "PATHS",
        value_delimiter = ',',
        default_value = "/healthz,/readyz,/livez"
    )]
    pub authorization_always_allow_paths: Vec<String>,

    /// How long TokenReview answers are cached (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,

    /// How long allowed SubjectAccessReview answers are cached (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,

    /// How long denied SubjectAccessReview answers are cached (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Bytes of rendered list answers kept between requests (HPA selections, the whole pod list),
    /// as a Kubernetes quantity (`64Mi`, `512Mi`, `1Gi`). No answer larger than a quarter of it
    /// is kept, so the default keeps the whole pod list up to ~250,000 pods. Not an upstream
    /// flag: memory for CPU on clusters that list all pods often. `0` keeps none.
    #[arg(long, value_name = "QUANTITY", default_value = "512Mi", value_parser = parse_bytes)]
    pub kept_answers_max_bytes: usize,

    /// Log verbosity, klog style: 0-1 info, 2-4 debug, 5 and above trace.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 0)]
    pub verbosity: u8,
}

// === impl Config ===

impl Config {
    /// Parses `args` (the first item is the program name) and validates the result.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, ParseError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut config = Config::try_parse_from(args).map_err(ParseError::Flags)?;
        config.normalise();
        config.validate().map_err(ParseError::Invalid)?;
        Ok(config)
    }

    /// Drops the empty items a `--list=` or a trailing comma leaves (upstream ignores them too).
    fn normalise(&mut self) {
        for list in [
            &mut self.kubelet_preferred_address_types,
            &mut self.tls_cipher_suites,
            &mut self.requestheader_allowed_names,
            &mut self.requestheader_username_headers,
            &mut self.requestheader_group_headers,
            &mut self.requestheader_extra_headers_prefix,
            &mut self.authorization_always_allow_paths,
        ] {
            list.iter_mut()
                .for_each(|item| *item = item.trim().to_owned());
            list.retain(|item| !item.is_empty());
        }
        if self
            .node_selector
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            self.node_selector = None;
        }
    }

    /// Checks the rules that span flags or values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.metric_resolution < Duration::from_secs(1) {
            return Err(ConfigError::ResolutionTooShort(self.metric_resolution));
        }
        if self.kubelet_request_timeout.is_zero() {
            return Err(ConfigError::ZeroRequestTimeout);
        }
        if self.kubelet_insecure_tls && self.kubelet_certificate_authority.is_some() {
            return Err(ConfigError::InsecureWithCertificateAuthority);
        }
        pair(
            &self.kubelet_client_certificate,
            "kubelet-client-certificate",
            &self.kubelet_client_key,
            "kubelet-client-key",
        )?;
        pair(
            &self.tls_cert_file,
            "tls-cert-file",
            &self.tls_private_key_file,
            "tls-private-key-file",
        )?;
        if self.kubelet_preferred_address_types.is_empty() {
            return Err(ConfigError::NoAddressTypes);
        }
        if let Some(unknown) = self
            .kubelet_preferred_address_types
            .iter()
            .find(|t| !ADDRESS_TYPES.contains(&t.as_str()))
        {
            return Err(ConfigError::UnknownAddressType(unknown.clone()));
        }
        if let Some(unknown) = self
            .tls_cipher_suites
            .iter()
            .find(|s| cipher_suite_support(s).is_none())
        {
            return Err(ConfigError::UnknownCipherSuite(unknown.clone()));
        }
        if self.secure_port == 0 {
            return Err(ConfigError::ZeroPort("secure-port"));
        }
        if self.kubelet_port == 0 {
            return Err(ConfigError::ZeroPort("kubelet-port"));
        }
        Ok(())
    }

    /// The kubeconfig for authentication lookups: `--authentication-kubeconfig`, else `--kubeconfig`.
    pub fn authentication_kubeconfig(&self) -> Option<&Path> {
        self.authentication_kubeconfig
            .as_deref()
            .or(self.kubeconfig.as_deref())
    }

    /// The kubeconfig for authorization checks: `--authorization-kubeconfig`, else `--kubeconfig`.
    pub fn authorization_kubeconfig(&self) -> Option<&Path> {
        self.authorization_kubeconfig
            .as_deref()
            .or(self.kubeconfig.as_deref())
    }

    /// The `tracing` level `-v` maps to.
    pub fn log_level(&self) -> tracing::Level {
        match self.verbosity {
            0..=1 => tracing::Level::INFO,
            2..=4 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    }
}

/// Why the command line could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Syntax: unknown flag, bad value, `--help` or `--version` (callers print it and exit with
    /// [`clap::Error::exit_code`]).
    #[error(transparent)]
    Flags(clap::Error),
    #[error(transparent)]
    Invalid(ConfigError),
}

fn pair(
    first: &Option<PathBuf>,
    first_name: &'static str,
    second: &Option<PathBuf>,
    second_name: &'static str,
) -> Result<(), ConfigError> {
    match (first.is_some(), second.is_some()) {
        (true, false) => Err(ConfigError::MissingPair {
            given: first_name,
            missing: second_name,
        }),
        (false, true) => Err(ConfigError::MissingPair {
            given: second_name,
            missing: first_name,
        }),
        _ => Ok(()),
    }
}

/// Whether a Go cipher-suite name is one we can serve (`Some(true)`), one Go knows but rustls does not
/// implement (`Some(false)`: skipped with a warning, as these are the legacy CBC/RSA-kx suites), or
/// unknown (`None`: an error, as in upstream).
pub fn cipher_suite_support(name: &str) -> Option<bool> {
    const SUPPORTED: [&str; 11] = [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ];
    const LEGACY: [&str; 14] = [
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "TLS_RSA_WITH_AES_256_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    ];
    if SUPPORTED.contains(&name) {
        Some(true)
    } else if LEGACY.contains(&name)
        || name == "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        || name == "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"
    {
        Some(false)
    } else {
        None
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_bool(input: &str) -> Result<bool, String> {
    match input {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?}")),
    }
}

fn parse_tls_version(input: &str) -> Result<TlsVersion, String> {
    match input {
        "VersionTLS10" | "VersionTLS11" | "VersionTLS12" => Ok(TlsVersion::Tls12),
        "VersionTLS13" => Ok(TlsVersion::Tls13),
        other => Err(ConfigError::UnknownTlsVersion(other.to_owned()).to_string()),
    }
}

/// Parses a byte count written as a Kubernetes quantity without fractions: `1048576`, `512Ki`,
/// `64Mi`, `1Gi`, or with decimal suffixes `500k`, `64M`, `1G`.
pub fn parse_bytes(input: &str) -> Result<usize, String> {
    let fail = |why: &str| format!("invalid byte count {input:?}: {why}");
    let digits = input.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = input.split_at(digits);
    let number: usize = number.parse().map_err(|_| fail("expected digits first"))?;
    let unit: usize = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(fail("the suffix is none of k, M, G, Ki, Mi, Gi")),
    };
    number.checked_mul(unit).ok_or_else(|| fail("out of range"))
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `0`). Negative durations are rejected: no flag
/// here has a meaning for them.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let fail = |why: &str| format!("invalid duration {input:?}: {why}");
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest.starts_with('-') {
        return Err(fail("negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(fail("empty"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| fail("missing unit"))?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(fail("missing unit")),
            _ => return Err(fail("unknown unit")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("missing number"));
        }
        if fraction.contains('.') {
            return Err(fail("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| fail("number out of range"))?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| fail("out of range"))?;
        // The fraction is scaled digit by digit so `1.5h` is exact; digits below a nanosecond drop.
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| fail("out of range"))?;
        rest = tail;
    }
    // Go durations are int64 nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(fail("out of range"));
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| fail("out of range"))?;
    // The remainder is below 1e9, so it fits u32.
    let subsec = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ParseError> {
        Config::try_parse_args(std::iter::once("metrics-server").chain(args.iter().copied()))
    }

    fn invalid(args: &[&str]) -> ConfigError {
        match parse(args) {
            Err(ParseError::Invalid(e)) => e,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn byte_counts_parse_as_quantities() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("64M"), Ok(64_000_000));
        for bad in [
            "",
            "Mi",
            "64MB",
            "1.5Gi",
            "-1Mi",
            "64 Mi",
            "99999999999999999999Gi",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            parse(&[]).unwrap().kept_answers_max_bytes,
            crate::api::answers::DEFAULT_BUDGET_BYTES
        );
        let config = parse(&["--kept-answers-max-bytes=64Mi"]).unwrap();
        assert_eq!(config.kept_answers_max_bytes, 64 << 20);
    }

    #[test]
    fn go_durations_parse_like_upstream() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for bad in [
            "",
            "15",
            "s",
            "1x",
            "-1s",
            "1..5s",
            "1s5",
            ".s",
            "9999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.metric_resolution, Duration::from_secs(60));
        assert_eq!(config.kubelet_request_timeout, Duration::from_secs(10));
        assert_eq!(config.kubelet_port, 10250);
        assert_eq!(config.secure_port, 10250);
        assert_eq!(
            config.kubelet_preferred_address_types,
            ADDRESS_TYPES.to_vec()
        );
        assert_eq!(
            config.authorization_always_allow_paths,
            ["/healthz", "/readyz", "/livez"]
        );
        assert_eq!(config.requestheader_username_headers, ["X-Remote-User"]);
        assert!(config.requestheader_allowed_names.is_empty());
        assert!(!config.kubelet_insecure_tls);
        assert_eq!(config.log_level(), tracing::Level::INFO);
    }

    #[test]
    fn a_typical_deployment_command_line_parses() {
        let config = parse(&[
            "--cert-dir=/tmp",
            "--secure-port=4443",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
            "--kubelet-insecure-tls",
            "--kubelet-request-timeout",
            "5s",
            "-l",
            "role=worker",
            "-v=4",
        ])
        .unwrap();
        assert_eq!(config.cert_dir, PathBuf::from("/tmp"));
        assert_eq!(config.secure_port, 4443);
        assert_eq!(
            config.kubelet_preferred_address_types,
            ["InternalIP", "ExternalIP", "Hostname"]
        );
        assert!(config.kubelet_use_node_status_port);
        assert!(config.kubelet_insecure_tls);
        assert_eq!(config.metric_resolution, Duration::from_secs(15));
        assert_eq!(config.kubelet_request_timeout, Duration::from_secs(5));
        assert_eq!(config.node_selector.as_deref(), Some("role=worker"));
        assert_eq!(config.log_level(), tracing::Level::DEBUG);
    }

    #[test]
    fn boolean_flags_take_an_explicit_value_after_equals() {
        let config = parse(&["--kubelet-insecure-tls=false", "--v=6"]).unwrap();
        assert!(!config.kubelet_insecure_tls);
        assert_eq!(config.log_level(), tracing::Level::TRACE);
        let config = parse(&["--authentication-tolerate-lookup-failure=false"]).unwrap();
        assert!(!config.authentication_tolerate_lookup_failure);
        assert!(parse(&["--kubelet-insecure-tls=maybe"]).is_err());
    }

    #[test]
    fn unknown_flags_are_an_error() {
        match parse(&["--no-such-flag=1"]) {
            Err(ParseError::Flags(e)) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument)
            }
            other => panic!("expected an unknown-flag error, got {other:?}"),
        }
    }

    #[test]
    fn every_upstream_flag_name_is_accepted() {
        let config = parse(&[
            "--kubeconfig=/k",
            "--kubelet-certificate-authority=/ca",
            "--kubelet-client-certificate=/c",
            "--kubelet-client-key=/k",
            "--node-selector=a=b",
            "--bind-address=127.0.0.1",
            "--tls-cert-file=/t",
            "--tls-private-key-file=/tk",
            "--tls-min-version=VersionTLS13",
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_GCM_SHA256",
            "--authentication-kubeconfig=/ak",
            "--authentication-skip-lookup",
            "--client-ca-file=/cca",
            "--requestheader-client-ca-file=/rca",
            "--requestheader-allowed-names=front-proxy-client,aggregator",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-always-allow-paths=/healthz",
            "--authentication-token-webhook-cache-ttl=1m",
            "--authorization-webhook-cache-authorized-ttl=20s",
            "--authorization-webhook-cache-unauthorized-ttl=5s",
        ])
        .unwrap();
        assert_eq!(config.tls_min_version, Some(TlsVersion::Tls13));
        assert_eq!(config.tls_cipher_suites.len(), 2);
        assert_eq!(
            config.requestheader_allowed_names,
            ["front-proxy-client", "aggregator"]
        );
        assert_eq!(
            config.authentication_token_webhook_cache_ttl,
            Duration::from_secs(60)
        );
        assert_eq!(config.bind_address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(config.authentication_kubeconfig(), Some(Path::new("/ak")));
        // Not given: falls back to --kubeconfig.
        assert_eq!(config.authorization_kubeconfig(), Some(Path::new("/k")));
    }

    #[test]
    fn resolution_below_one_second_is_rejected() {
        assert_eq!(
            invalid(&["--metric-resolution=500ms"]),
            ConfigError::ResolutionTooShort(Duration::from_millis(500))
        );
        assert!(parse(&["--metric-resolution=1s"]).is_ok());
    }

    #[test]
    fn insecure_tls_conflicts_with_a_kubelet_ca() {
        assert_eq!(
            invalid(&[
                "--kubelet-insecure-tls",
                "--kubelet-certificate-authority=/ca"
            ]),
            ConfigError::InsecureWithCertificateAuthority
        );
    }

    #[test]
    fn half_a_certificate_pair_is_rejected() {
        assert_eq!(
            invalid(&["--tls-cert-file=/c"]),
            ConfigError::MissingPair {
                given: "tls-cert-file",
                missing: "tls-private-key-file"
            }
        );
        assert_eq!(
            invalid(&["--kubelet-client-key=/k"]),
            ConfigError::MissingPair {
                given: "kubelet-client-key",
                missing: "kubelet-client-certificate"
            }
        );
    }

    #[test]
    fn unknown_address_types_and_cipher_suites_are_rejected() {
        assert_eq!(
            invalid(&["--kubelet-preferred-address-types=InternalIP,Bogus"]),
            ConfigError::UnknownAddressType("Bogus".into())
        );
        assert_eq!(
            invalid(&["--kubelet-preferred-address-types="]),
            ConfigError::NoAddressTypes
        );
        assert_eq!(
            invalid(&["--tls-cipher-suites=TLS_FAKE"]),
            ConfigError::UnknownCipherSuite("TLS_FAKE".into())
        );
        assert!(matches!(
            parse(&["--tls-min-version=VersionTLS99"]),
            Err(ParseError::Flags(_))
        ));
    }

    #[test]
    fn without_kubeconfig_auth_lookups_use_in_cluster_config() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.authentication_kubeconfig(), None);
        assert_eq!(config.authorization_kubeconfig(), None);
    }
}
