//! `upstream.sentinels` / `upstream.master_name`: Redis Sentinel names the primary the proxy
//! connects to (validated; the keys are written in `[upstream]`).

use std::time::Duration;

use super::auth::Secret;
use super::cluster::split_host_port;
use super::error::{Invalid, Problem};

/// The Sentinel settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `upstream.sentinels`: `host:port` of each sentinel, asked in this order.
    pub sentinels: Vec<String>,
    /// `upstream.master_name`: the name the sentinels monitor the primary under.
    pub(crate) master_name: String,
    /// `upstream.sentinel_user` / `sentinel_password`: the sentinels' own login, if they ask
    /// for one (`requirepass` or ACL users on the sentinels).
    pub login: Option<(String, Secret)>,
    /// `upstream.sentinel_check_interval_ms`: how often the primary is asked for again, besides
    /// following `+switch-master` (a sentinel cut off from the others misses a failover).
    pub(crate) check_interval: Duration,
    /// `upstream.connect_timeout_ms`: the longest connection attempt to a sentinel.
    pub(crate) connect_timeout: Duration,
}

/// Checks the Sentinel keys: `None` when `sentinels` is empty (a fixed `upstream.address`).
pub(super) fn validate(
    sentinels: &[String],
    master_name: &str,
    login: Option<(String, Secret)>,
    check_interval_ms: u64,
    connect_timeout: Duration,
) -> Result<Option<SentinelConfig>, Invalid> {
    if sentinels.is_empty() {
        if !master_name.is_empty() {
            let problem = Problem::NeededWith("upstream.sentinels");
            return Err(Invalid::new("upstream.master_name", problem));
        }
        return Ok(None);
    }
    for address in sentinels {
        if split_host_port(address).is_none() {
            let problem = Problem::NotHostPort(address.clone());
            return Err(Invalid::new("upstream.sentinels", problem));
        }
    }
    if master_name.is_empty() || master_name.contains(char::is_whitespace) {
        let message = "must name the primary the sentinels monitor (no spaces)";
        return Err(Invalid::other("upstream.master_name", message));
    }
    let check_interval_ms =
        super::error::positive("upstream.sentinel_check_interval_ms", check_interval_ms)?;
    Ok(Some(SentinelConfig {
        sentinels: sentinels.to_vec(),
        master_name: master_name.to_owned(),
        login,
        check_interval: Duration::from_millis(check_interval_ms),
        connect_timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sentinels: &[&str], master: &str) -> Result<Option<SentinelConfig>, String> {
        let sentinels: Vec<String> = sentinels.iter().map(|s| (*s).to_owned()).collect();
        validate(&sentinels, master, None, 5000, Duration::from_secs(2)).map_err(|e| e.to_string())
    }

    #[test]
    fn sentinels_need_a_master_name_and_addresses() {
        assert_eq!(check(&[], ""), Ok(None));
        let config = check(&["10.0.0.5:26379", "[::1]:26379"], "mymaster").unwrap().unwrap();
        assert_eq!(config.master_name, "mymaster");
        assert!(check(&[], "mymaster").unwrap_err().contains("upstream.master_name"));
        assert!(check(&["10.0.0.5"], "mymaster").unwrap_err().contains("upstream.sentinels"));
        assert!(check(&["10.0.0.5:26379"], "").unwrap_err().contains("upstream.master_name"));
        assert!(check(&["10.0.0.5:26379"], "my master").is_err());
    }
}
