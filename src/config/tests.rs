//! The configuration as a whole: defaults, the example file, errors naming file, line and key.

use std::path::PathBuf;

use super::*;
use crate::resp::request::RequestLimits;

#[test]
fn defaults_match_the_contract() {
    let config = Config::from_toml_str("", "proxy.toml").unwrap();
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(config.upstream.address, "127.0.0.1:6379");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9379");
    assert_eq!(config.audit.dir, PathBuf::from("./data/audit"));
    assert_eq!(config.proxy.limits.request, RequestLimits::default());
    assert_eq!(config.acl.mode, AclMode::Enforce);
}

#[test]
fn errors_name_file_line_key_and_problem() {
    let error = Config::from_toml_str("[proxy]\nlisten = \"x\"\n", "p.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "p.toml: proxy.listen: \"x\" is not an address of the form IP:PORT"
    );
    let error = Config::from_toml_str("[proxy]\nlisen = 1\n", "p.toml").unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("p.toml:2: proxy.lisen: unknown field `lisen`"), "{text}");
    let error = Config::from_toml_str("[proxy.limits]\nbulk_max_bytes = \"big\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("p.toml:2: proxy.limits.bulk_max_bytes: invalid type"), "{error}");
    assert!(!error.contains('\n'));
    for (text, key) in [
        ("[auth]\nupstream_password = 12345678\n", "auth.upstream_password"),
        ("[upstream]\ntable_password = [98765]\n", "upstream.table_password"),
        ("[admin]\napi_secret = 4242424242\n", "admin.api_secret"),
    ] {
        let error = Config::from_toml_str(text, "p.toml").unwrap_err().to_string();
        assert!(error.starts_with(&format!("p.toml:2: {key}: invalid value")), "{error}");
        for secret in ["12345678", "98765", "4242424242"] {
            assert!(!error.contains(secret), "a secret in {error}");
        }
    }
    let error = Config::from_toml_str("[proxy]\nmax_clients = 0\n", "p.toml").unwrap_err();
    assert_eq!(error.to_string(), "p.toml: proxy.max_clients: must be at least 1");
    let error = Config::from_toml_str("[audit]\ndurability = \"sync\"\n", "p.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "p.toml:2: audit.durability: \"sync\" is not one of \"async\", \"write\", \"fsync\""
    );
    let error = Config::from_toml_str("[audit]\nchain_alg = \"md5\"\n", "p.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "p.toml:2: audit.chain_alg: \"md5\" is not one of \"blake3\", \"sha256\""
    );
    let error = Config::from_toml_str("[audit]\nseal_records = 0\n", "p.toml").unwrap_err();
    assert_eq!(error.to_string(), "p.toml: audit.seal_records: must be at least 1");
    let config = Config::from_toml_str("[audit]\nchain_alg = \"sha256\"\n", "p.toml").unwrap();
    assert_eq!(config.audit.chain_alg, crate::audit::chain::ChainAlg::Sha256);
}

#[test]
fn admin_request_heads_of_less_than_8192_bytes_are_refused() {
    let error = Config::from_toml_str("[admin]\nmax_request_bytes = 8191\n", "p.toml");
    assert_eq!(
        error.unwrap_err().to_string(),
        "p.toml: admin.max_request_bytes: 8191 is below 8192, the smallest request buffer \
         the HTTP server can work with"
    );
    let config = Config::from_toml_str("[admin]\nmax_request_bytes = 8192\n", "p.toml");
    assert_eq!(config.unwrap().admin.max_request_bytes, 8192);
}

#[test]
fn admin_allowed_hosts_are_bare_names() {
    let text = "[admin]\nallowed_hosts = [\"Metrics.Internal.\", \"proxy-1\"]\n";
    let config = Config::from_toml_str(text, "p.toml").unwrap();
    assert_eq!(config.admin.allowed_hosts, ["metrics.internal", "proxy-1"]);
    for bad in ["http://x", "x:9379", "", "a b", "x/y"] {
        let text = format!("[admin]\nallowed_hosts = [\"{bad}\"]\n");
        let error = Config::from_toml_str(&text, "p.toml").unwrap_err().to_string();
        assert!(error.starts_with("p.toml: admin.allowed_hosts: "), "{bad}: {error}");
    }
}

#[test]
fn filters_are_checked() {
    let error =
        Config::from_toml_str("[audit.filters]\nkinds = [\"system\"]\n", "p.toml").unwrap_err();
    assert_eq!(error.to_string(), "p.toml:2: audit.filters.kinds: system events are always kept");
    let error =
        Config::from_toml_str("[audit.filters]\nexclude_networks = [\"10.0.0.0/99\"]\n", "p.toml")
            .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "p.toml:2: audit.filters.exclude_networks: \"10.0.0.0/99\" is not a network"
        ),
        "{error}"
    );
    let config = Config::from_toml_str(
        "[audit.filters]\nkinds = [\"command\"]\nexclude_commands = [\"CONFIG\"]\n",
        "p.toml",
    )
    .unwrap();
    assert!(!config.audit.filters.kinds.sessions && config.audit.filters.kinds.commands);
    assert_eq!(config.audit.filters.exclude_commands, ["config"]);
}

#[test]
fn hmac_keys_need_a_key_file() {
    let error = Config::from_toml_str("[audit]\nkeys = \"hmac\"\n", "p.toml").unwrap_err();
    assert_eq!(error.to_string(), "p.toml: audit.hmac_key_file: is required with keys = \"hmac\"");
    let dir = std::env::temp_dir().join(format!("rap-hmac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    let text = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", short.display());
    let error = Config::from_toml_str(&text, "p.toml").unwrap_err().to_string();
    assert!(error.contains("holds 4 bytes"), "{error}");
    let good = dir.join("good");
    std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
    let text = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", good.display());
    let config = Config::from_toml_str(&text, "p.toml").unwrap();
    assert_eq!(config.audit.keys, KeyNames::Hmac(b"0123456789abcdef0123".to_vec()));
    assert!(!format!("{config:?}").contains("0123456789abcdef"), "the key is never shown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flags_override_the_file_and_are_named_when_wrong() {
    let overrides = Overrides { upstream: Some("redis:6390".into()), ..Overrides::default() };
    let raw: RawConfig = toml::from_str("[upstream]\naddress = \"a:1\"\n").unwrap();
    let config = Config::validate(raw.clone(), "p.toml", &overrides).unwrap();
    assert_eq!(config.upstream.address, "redis:6390");
    let overrides = Overrides { upstream: Some("nope".into()), ..Overrides::default() };
    let error = Config::validate(raw, "p.toml", &overrides).unwrap_err();
    assert_eq!(
        error.to_string(),
        "command line --upstream: upstream.address: \"nope\" is not an address of the form HOST:PORT"
    );
}

#[test]
fn runtime_and_threads() {
    let config = Config::from_toml_str("", "p.toml").unwrap();
    assert_eq!(config.proxy.runtime, Runtime::MultiThread);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(config.proxy.threads, cpus.saturating_sub(1).max(1), "0 = one per CPU less one");
    let defaults: Vec<usize> =
        [1, 2, 3, 8].into_iter().map(super::proxy::default_threads).collect();
    assert_eq!(defaults, [1, 1, 2, 7]);
    let text = "[proxy]\nruntime = \"per_core\"\nthreads = 3\n";
    let config = Config::from_toml_str(text, "p.toml").unwrap();
    assert_eq!((config.proxy.runtime, config.proxy.threads), (Runtime::PerCore, 3));
    let error = Config::from_toml_str("[proxy]\nruntime = \"per_thread\"\n", "p.toml");
    let error = error.unwrap_err().to_string();
    assert!(error.contains("proxy.runtime") && error.contains("per_core"), "{error}");
    let error = Config::from_toml_str("[proxy]\nthreads = 5000\n", "p.toml").unwrap_err();
    assert_eq!(error.to_string(), "p.toml: proxy.threads: 5000 is above 1024");
}

#[test]
fn the_example_file_is_valid_and_complete() {
    let text = include_str!("../../proxy.toml.example");
    Config::from_toml_str(text, "proxy.toml.example").unwrap();
    // Every key of the schema appears, uncommented and with its default, in the example.
    let example: toml::Table = toml::from_str(text).unwrap();
    let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
    assert_eq!(example, defaults);
}

#[test]
fn the_example_sink_lists_every_key_with_its_default() {
    // `[[audit.sinks]]` is an array (empty by default), so the example shows one table
    // commented out: uncommented, it must hold every key of a sink with its default, apart
    // from the TLS files, whose default is none.
    let text = include_str!("../../proxy.toml.example");
    let start = text.find("# [[audit.sinks]]\n").expect("the example shows a sink");
    let table: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("# "))
        .filter(|line| !line.starts_with("#  "))
        .map(|line| format!("{}\n", &line[2..]))
        .collect();
    let mut example: toml::Table = toml::from_str(&table).unwrap();
    for optional in ["ca_file", "cert_file", "key_file", "server_name"] {
        assert!(example.remove(optional).is_some(), "{optional} is shown");
    }
    let defaults = toml::Table::try_from(sinks::RawSink::default()).unwrap();
    assert_eq!(example, defaults);
}

#[test]
fn values_outside_a_closed_set_name_line_key_and_the_accepted_values() {
    for (text, expected) in [
        (
            "[audit.filters]\nclasses = [\"read\", \"admin\"]\n",
            "p.toml:2: audit.filters.classes: \"admin\" is not one of \"read\", \"write\", \
             \"non_read_write\", \"unknown\"",
        ),
        (
            "[audit.filters]\nkinds = [\"event\"]\n",
            "p.toml:2: audit.filters.kinds: \"event\" is not one of \"command\", \"session\", \
             \"system\"",
        ),
        (
            "[acl]\nmode = \"audit\"\n",
            "p.toml:2: acl.mode: \"audit\" is not one of \"enforce\", \"observe\"",
        ),
        (
            "[auth]\nmirror_users = \"yes\"\n",
            "p.toml:2: auth.mirror_users: \"yes\" is not one of \"auto\", \"on\", \"off\"",
        ),
        (
            "[tls]\nclient_auth = \"maybe\"\n",
            "p.toml:2: tls.client_auth: \"maybe\" is not one of \"none\", \"optional\", \
             \"required\"",
        ),
        (
            "[audit]\n\n[[audit.sinks]]\ntransport = \"beep\"\n",
            "p.toml:4: audit.sinks.transport: \"beep\" is not one of \"tcp\", \"tls\", \"udp\", \"relp\", \"relp_tls\"",
        ),
    ] {
        let error = Config::from_toml_str(text, "p.toml").unwrap_err().to_string();
        assert_eq!(error, expected, "{text}");
    }
}

#[test]
fn the_filter_classes_are_a_set() {
    let text = "[audit.filters]\nclasses = [\"write\", \"unknown\", \"write\"]\n";
    let classes = Config::from_toml_str(text, "p.toml").unwrap().audit.filters.classes;
    assert!(classes.contains(None) && classes.contains(Some(crate::command::Class::Write)));
    assert!(!classes.contains(Some(crate::command::Class::Read)));
    let none = Config::from_toml_str("[audit.filters]\nclasses = []\n", "p.toml").unwrap();
    assert_eq!(none.audit.filters.classes, crate::command::ClassSet::EMPTY);
}

/// Every closed set's `as_str` is the name serde reads and writes.
#[test]
fn each_name_is_the_one_serde_uses() {
    fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        values: &[T],
        as_str: fn(&T) -> &'static str,
    ) {
        for value in values {
            let name = serde_json::to_value(value).unwrap();
            assert_eq!(name, as_str(value), "{value:?}");
            assert_eq!(&serde_json::from_value::<T>(name).unwrap(), value);
        }
    }
    check(&[Runtime::MultiThread, Runtime::PerCore], |v| v.as_str());
    check(&[PoolMode::Dedicated, PoolMode::Shared], |v| v.as_str());
    check(&[AuthMode::Passthrough, AuthMode::Proxy], |v| v.as_str());
    check(&[MirrorUsers::Auto, MirrorUsers::On, MirrorUsers::Off], |v| v.as_str());
    check(&[AclMode::Enforce, AclMode::Observe], |v| v.as_str());
    check(&[LogSource::Proxy, LogSource::Upstream], |v| v.as_str());
    check(&[Durability::Async, Durability::Write, Durability::Fsync], |v| v.as_str());
    check(&[OnFull::Drop, OnFull::Block, OnFull::Reject], |v| v.as_str());
    check(&[OnError::Continue, OnError::Reject, OnError::Shutdown], |v| v.as_str());
    check(&[KeyMode::Clear, KeyMode::Hmac, KeyMode::Off], |v| v.as_str());
    check(&[ClientAuth::None, ClientAuth::Optional, ClientAuth::Required], |v| v.as_str());
    check(&[UserFrom::None, UserFrom::Cn, UserFrom::San], |v| v.as_str());
    check(&crate::command::Class::ALL, |v| v.as_str());
    check(&[crate::audit::chain::ChainAlg::Blake3, crate::audit::chain::ChainAlg::Sha256], |v| {
        v.as_str()
    });
    check(&[cluster::ClusterMode::Off, cluster::ClusterMode::Sidecar], |v| v.as_str());
    use crate::audit::filter::FilterKind;
    check(&[FilterKind::Command, FilterKind::Session, FilterKind::System], |v| v.as_str());
    use sinks::{SinkOnFull, SinkType, SyslogTransport};
    check(&[SinkType::Syslog, SinkType::Stdout], |v| v.as_str());
    check(&[SinkOnFull::Drop, SinkOnFull::Block], |v| v.as_str());
    check(&[SyslogTransport::Tcp, SyslogTransport::Tls, SyslogTransport::Udp], |v| v.as_str());
}
