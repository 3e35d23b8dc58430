//! Who may use the admin plane: the `Host` check (against DNS rebinding), the `Origin` check
//! of state-changing requests (against CSRF), and the API keys.
//!
//! Without API keys the plane trusts whatever can connect to it, which includes every web
//! page a browser on the host opens. A page can reach it two ways, and each check closes one:
//! - DNS rebinding: a name of the attacker's that resolves to 127.0.0.1 makes the plane the
//!   page's own origin, so the page can read every answer. The browser still sends that name
//!   as `Host`, so a `Host` that is not an IP address, `localhost` or an `allowed_hosts` name
//!   is refused. IP addresses are always accepted: a page cannot rebind an address, and
//!   Prometheus scrapes by address.
//! - CSRF: any page may send a POST (a form) to another origin without reading the answer,
//!   enough to run `POST /api/v1/reload`. Browsers send `Origin` with every cross-origin POST
//!   (and `Sec-Fetch-Site`), so a POST from another origin is refused, as Go's
//!   `net/http.CrossOriginProtection` does. Clients that are not browsers send neither header
//!   and are not affected.

use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::header::{HOST, ORIGIN};
use hyper::{Method, Request};

use crate::config::{AdminConfig, ApiKey};

/// What a caller's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Every endpoint.
    Full,
    /// Metrics and health only.
    Metrics,
}

/// Refuses a request whose `Host` (or absolute-form target) names this plane by a name that
/// is not allowed; a request without `Host` (HTTP/1.0, no browser) passes.
pub(super) fn check_host<B>(
    config: &AdminConfig,
    request: &Request<B>,
) -> Result<(), &'static str> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if let Some(header) = header {
        let host = header.to_str().map_err(|_| "Host is not text")?;
        if !host_allowed(config, host) {
            return Err("this Host is not accepted: use an IP address, localhost, or a name \
                        listed in admin.allowed_hosts");
        }
    }
    if let Some(authority) = request.uri().authority() {
        if !host_allowed(config, authority.as_str()) {
            return Err("this request target's host is not accepted");
        }
    }
    Ok(())
}

/// Refuses a state-changing request sent by a browser from another origin: its `Origin`
/// must be this plane's own (`http://` and the `Host` it was sent to) or name a host of
/// `allowed_hosts`; without `Origin`, `Sec-Fetch-Site` (when sent) must say same-origin or
/// none (typed by the user).
pub(super) fn check_origin<B>(
    config: &AdminConfig,
    request: &Request<B>,
) -> Result<(), &'static str> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = "cross-origin request refused: a state-changing request from a browser must \
                   come from the admin address itself or a host in admin.allowed_hosts";
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = request.headers().get(ORIGIN) {
        let origin = origin.to_str().map_err(|_| refused)?;
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        let Some(authority) = authority.filter(|a| !a.is_empty() && !a.contains('/')) else {
            return Err(refused); // `null` (sandboxed pages, redirects) or malformed
        };
        let same_origin = origin.starts_with("http://")
            && header("host").is_some_and(|host| host.eq_ignore_ascii_case(authority));
        let (name, _) = split_port(authority).ok_or(refused)?;
        let trusted = config.allowed_hosts.iter().any(|allowed| name.eq_ignore_ascii_case(allowed));
        return if same_origin || trusted { Ok(()) } else { Err(refused) };
    }
    match header("sec-fetch-site") {
        None | Some("same-origin" | "none") => Ok(()),
        Some(_) => Err(refused),
    }
}

/// True when `host` (`name`, `name:port`, `IPv4[:port]`, `[IPv6][:port]`) is an IP address,
/// `localhost` or a name of `allowed_hosts`.
fn host_allowed(config: &AdminConfig, host: &str) -> bool {
    let Some((name, bracketed)) = split_port(host) else { return false };
    if bracketed {
        return name.parse::<Ipv6Addr>().is_ok();
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // A fully qualified `localhost.` is the same name.
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || config.allowed_hosts.iter().any(|allowed| name.eq_ignore_ascii_case(allowed))
}

/// `host[:port]` as the host and whether it was in brackets (IPv6); `None` when malformed
/// (an empty host, a port that is not a number, an unbracketed second colon).
fn split_port(authority: &str) -> Option<(&str, bool)> {
    let port_ok = |port: &str| port.parse::<u16>().is_ok();
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_fine = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return port_fine.then_some((inside, true));
    }
    let (name, port) = match authority.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (authority, None),
    };
    if name.is_empty() || port.is_some_and(|port| !port_ok(port)) {
        return None;
    }
    Some((name, false))
}

/// Checks `x-api-key` / `x-api-secret-key` against the configured keys: the digest of what
/// was sent against each key's digest, every one of them, in constant time. Without keys
/// configured, everything is allowed.
pub(super) fn authorize<B>(
    config: &AdminConfig,
    request: &Request<B>,
) -> Result<Access, &'static str> {
    if config.keys.is_empty() {
        return Ok(Access::Full);
    }
    let header = |name: &str| request.headers().get(name).map(|v| v.as_bytes());
    let (Some(key), Some(secret)) = (header("x-api-key"), header("x-api-secret-key")) else {
        return Err("missing x-api-key / x-api-secret-key");
    };
    let sent = ApiKey::digest(key, secret);
    let mut granted = None;
    for configured in &config.keys {
        // Compare every key fully, whatever matched before.
        if digests_equal(&configured.digest, &sent) && granted.is_none() {
            granted = Some(if configured.full { Access::Full } else { Access::Metrics });
        }
    }
    granted.ok_or("wrong API key or secret")
}

/// Equality of two digests in a time that does not depend on where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str]) -> AdminConfig {
        let mut config = crate::config::Config::from_toml_str("", "test").unwrap().admin;
        config.allowed_hosts = allowed.iter().map(|h| (*h).to_owned()).collect();
        config
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        let config = config(&["metrics.internal"]);
        for host in [
            "127.0.0.1:9379",
            "10.1.2.3",
            "[::1]:9379",
            "[fe80::1]",
            "localhost:9379",
            "LOCALHOST",
            "localhost.",
            "metrics.internal:80",
            "Metrics.Internal",
        ] {
            assert!(host_allowed(&config, host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9379",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "127.1",
            "[::1",
            "[evil]:80",
            "::1",
            "localhost:x",
            ":9379",
            "",
        ] {
            assert!(!host_allowed(&config, host), "{host}");
        }
        let twice = request("GET", "/", &[("host", "127.0.0.1"), ("host", "evil.example")]);
        assert!(check_host(&config, &twice).is_err());
        let absolute = request("GET", "http://evil.example/metrics", &[("host", "127.0.0.1:9379")]);
        assert!(check_host(&config, &absolute).is_err());
        assert!(check_host(&config, &request("GET", "/", &[])).is_ok(), "no Host: no browser");
    }

    #[test]
    fn keys_are_compared_as_digests_of_the_pair() {
        let text = "[admin]\napi_key = \"ops\"\napi_secret = \"s3cret\"\n\
                    metrics_api_key = \"scraper\"\nmetrics_api_secret = \"m\"\n";
        let config = crate::config::Config::from_toml_str(text, "test").unwrap().admin;
        let with = |key: &str, secret: &str| {
            authorize(
                &config,
                &request("GET", "/", &[("x-api-key", key), ("x-api-secret-key", secret)]),
            )
        };
        assert_eq!(with("ops", "s3cret"), Ok(Access::Full));
        assert_eq!(with("scraper", "m"), Ok(Access::Metrics));
        for (key, secret) in [
            ("ops", "s3cre"),
            ("ops", "s3crett"),
            ("op", "ss3cret"),
            ("ops", ""),
            ("scraper", "s3cret"),
        ] {
            assert!(with(key, secret).is_err(), "{key} / {secret}");
        }
        assert!(authorize(&config, &request("GET", "/", &[("x-api-key", "ops")])).is_err());
    }

    #[test]
    fn posts_from_other_origins_are_refused() {
        let config = config(&["dash.internal"]);
        let post = |headers: &[(&str, &str)]| {
            let mut all = vec![("host", "127.0.0.1:9379")];
            all.extend_from_slice(headers);
            check_origin(&config, &request("POST", "/api/v1/reload", &all)).is_ok()
        };
        assert!(post(&[]), "curl and scripts send no Origin");
        assert!(post(&[("origin", "http://127.0.0.1:9379")]), "the plane's own origin");
        assert!(post(&[("origin", "https://dash.internal")]), "a listed host");
        assert!(post(&[("sec-fetch-site", "same-origin")]));
        assert!(post(&[("sec-fetch-site", "none")]));
        for refused in [
            ("origin", "http://evil.example"),
            ("origin", "http://127.0.0.1:3000"),
            ("origin", "http://localhost:9379"),
            ("origin", "https://127.0.0.1:9379"),
            ("origin", "null"),
            ("origin", "http://dash.internal.evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert!(!post(&[refused]), "{refused:?}");
        }
        let get = request("GET", "/metrics", &[("origin", "http://evil.example")]);
        assert!(check_origin(&config, &get).is_ok(), "reads are not state changes");
    }
}
