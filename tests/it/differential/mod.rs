//! Differential transparency: every script of [`crate::corpus`] is played against one real
//! redis-server twice, first directly, then through the proxy, and each connection must receive
//! the same bytes both times.
//!
//! Only values that legitimately differ between two connections are normalised before the
//! comparison: client ids (the `CLIENT ID` replies the runner asked for, `id` in HELLO,
//! `id=` in CLIENT INFO/LIST), addresses, file descriptors, ages and buffer sizes in CLIENT
//! INFO/LIST, and MONITOR timestamps and client addresses. Before each run the admin
//! connection (direct to Redis) waits until every connection of the previous run is gone and
//! flushes everything, so both runs start from the same state.
//!
//! Every group also runs over TLS on both sides (the `_over_tls` tests): "directly" is then
//! Redis's TLS port reached with a TLS client, "through the proxy" is the proxy's TLS
//! listener with the proxy speaking TLS to that same port. TLS carries the same byte stream,
//! so the scripts, the normalisation and the comparison are the same; the admin connection
//! stays plain, on Redis's plain port.
//!
//! Every group also runs with `[upstream] pool = "shared"` (in [`crate::differential_shared`]):
//! the script connections then share two upstream connections per state and are pinned to one
//! of their own when they need it, and every byte must still be the same. Three things change in
//! the harness, nothing in the scripts: the admin's reset waits until the connections Redis
//! lists, its own aside, are no more than the pool's own (shared and spare connections stay
//! open between runs; the proxy's `/metrics` counts them, as pinned connections must be none,
//! and `CLIENT LIST` cannot tell them all apart: a shared connection that Redis refused its
//! `CLIENT SETNAME` before any login, and a spare, have no name); and the proxied stream loses
//! the CLIENT LIST lines of the connections named `redis-audit-proxy-shared`, and the MONITOR
//! line of the `CLIENT SETNAME` a shared connection opened during MONITOR names itself with (any
//! client of a pooling proxy sees them; they are the proxy's, not another client's).
//!
//! `DIFFERENTIAL_SHOW=1 cargo test --test it differential -- --nocapture` prints what every
//! script received directly (normalised), to review what a script really exercises.

mod normalise;
mod runner;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::corpus::{self, Script};
use crate::support::certs::{self, Authority};
use crate::support::redis::Server;
use crate::support::{RedisServer, Scratch, TestProxy};

pub(crate) use normalise::normalise;
use runner::{differ, Admin};

/// One differential test per corpus group: `name => group` plays every script of
/// `corpus::group()` `over` plain TCP or TLS, with the proxy's upstream connections as `pool`
/// says, against a `server` (Debian's when none is named), through [`check_with`];
/// `name => group requirepass` starts Redis with [`corpus::PASSWORD`] required and gives it to
/// the admin.
macro_rules! differential_tests {
    ($over:expr, $pool:expr; $($name:ident => $group:ident $($auth:ident)?,)*) => {
        $crate::differential::differential_tests! {
            $over, $pool, $crate::support::redis::Server::Debian;
            $($name => $group $($auth)?,)*
        }
    };
    ($over:expr, $pool:expr, $server:expr; $($name:ident => $group:ident $($auth:ident)?,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (extra, password) = differential_tests!(@auth $($auth)?);
                $crate::differential::check_with(
                    $crate::corpus::$group(),
                    $over,
                    $pool,
                    $server,
                    extra,
                    password,
                )
                .await;
            }
        )*
    };
    (@auth) => {
        (&[] as &[&str], None)
    };
    (@auth requirepass) => {
        (
            &["--requirepass", $crate::corpus::PASSWORD] as &[&str],
            Some($crate::corpus::PASSWORD),
        )
    };
}
pub(crate) use differential_tests;

differential_tests! { Over::Plain, Pool::Dedicated;
    inline_commands => inline,
    protocol_errors => protocol_errors,
    pipelines => pipelines,
    binary_keys_and_values => binary,
    large_values => large_values,
    resp3 => resp3,
    pubsub => pubsub,
    transactions => transactions,
    blocking_commands => blocking,
    monitor => monitor,
    client_reply => client_reply,
    connection_state => connection_state,
    unauthenticated => unauthenticated requirepass,
}

differential_tests! { Over::Tls, Pool::Dedicated;
    inline_commands_over_tls => inline,
    protocol_errors_over_tls => protocol_errors,
    pipelines_over_tls => pipelines,
    binary_keys_and_values_over_tls => binary,
    large_values_over_tls => large_values,
    resp3_over_tls => resp3,
    pubsub_over_tls => pubsub,
    transactions_over_tls => transactions,
    blocking_commands_over_tls => blocking,
    monitor_over_tls => monitor,
    client_reply_over_tls => client_reply,
    connection_state_over_tls => connection_state,
    unauthenticated_over_tls => unauthenticated requirepass,
}

#[test]
fn corpus_is_large_and_names_are_unique() {
    let groups = [
        corpus::inline(),
        corpus::protocol_errors(),
        corpus::pipelines(),
        corpus::binary(),
        corpus::resp3(),
        corpus::pubsub(),
        corpus::transactions(),
        corpus::blocking(),
        corpus::monitor(),
        corpus::client_reply(),
        corpus::connection_state(),
        corpus::unauthenticated(),
    ];
    // `large_values` is left out here: building its 64 MiB value is the slow part.
    let mut names: Vec<&str> = groups.iter().flatten().map(|s| s.name).collect();
    names.extend(["large_value_64mib_set_get_strlen", "large_values_1mib_pipeline_cut"]);
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "script names are unique");
    assert!(total >= 60, "the corpus has {total} scripts");
}

/// Plain TCP everywhere, or TLS on both sides of the proxy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Over {
    Plain,
    /// TLS from the client to Redis's TLS port or to the proxy's TLS listener, and from the
    /// proxy to Redis's TLS port.
    Tls,
}

/// How the proxy holds its upstream connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Pool {
    /// One upstream connection per client (the default).
    Dedicated,
    /// `pool = "shared"` with two shared connections per (login, db, protocol) state: the scripts
    /// with several connections then share one more often than not.
    Shared,
}

/// The name the shared pool gives its own upstream connections (`CLIENT SETNAME`).
pub(crate) const POOL_NAME: &str = "redis-audit-proxy-shared";

impl Pool {
    /// The proxy's configuration for this mode.
    fn toml(self) -> &'static str {
        match self {
            Self::Dedicated => "",
            Self::Shared => "[upstream]\npool = \"shared\"\npool_size = 2\n",
        }
    }
}

/// How a script connection is opened.
#[derive(Clone)]
enum Transport {
    Plain,
    /// TLS with this client configuration (trusting the test CA, SNI `localhost`).
    Tls(Arc<rustls::ClientConfig>),
}

/// A redis-server and the proxy in front of it, as `over` asks.
struct Setup {
    pool: Pool,
    redis: RedisServer,
    proxy: TestProxy,
    /// Where the script connections go directly (Redis's plain or TLS port)...
    direct: SocketAddr,
    /// ...and through the proxy (its plain or TLS listener).
    proxied: SocketAddr,
    transport: Transport,
    /// The certificates of a TLS setup, removed on drop.
    _scratch: Option<Scratch>,
}

impl Setup {
    /// Starts `server` (debug commands enabled, plus `extra` arguments) and the proxy.
    async fn start(over: Over, pool: Pool, server: Server, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["--enable-debug-command".into(), "yes".into()];
        args.extend(extra.iter().map(|&arg| arg.to_owned()));
        if over == Over::Plain {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let redis = RedisServer::start_server(server, &args);
            let proxy = TestProxy::start_with(redis.addr, pool.toml()).await;
            let (direct, proxied) = (redis.addr, proxy.addr);
            return Self {
                pool,
                redis,
                proxy,
                direct,
                proxied,
                transport: Transport::Plain,
                _scratch: None,
            };
        }
        let scratch = Scratch::new("differential-tls");
        let dir = scratch.path();
        let ca = Authority::new(dir, "differential");
        let issued = ca.server(dir, "server");
        let tls_port = crate::support::redis::free_port();
        // Client certificates are not asked for: the plain corpus has no notion of them.
        args.extend([
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            issued.cert_file.display().to_string(),
            "--tls-key-file".to_owned(),
            issued.key_file.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            ca.ca_file.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let redis = RedisServer::start_server(server, &args);
        let redis_tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
        // The proxy's TLS listener with the same certificate, and TLS to Redis's TLS port.
        let toml = format!(
            r#"{pool}
[tls]
listen = "127.0.0.1:0"
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{ca}"
client_auth = "none"

[upstream.tls]
ca_file = "{ca}"
server_name = "localhost"
"#,
            cert = issued.cert_file.display(),
            key = issued.key_file.display(),
            ca = ca.ca_file.display(),
            pool = pool.toml(),
        );
        let proxy = TestProxy::start_with(redis_tls, &toml).await;
        let proxied = proxy.tls_addr();
        let transport = Transport::Tls(certs::client_config(&ca.ca_file, None));
        Self { pool, redis, proxy, direct: redis_tls, proxied, transport, _scratch: Some(scratch) }
    }
}

/// Plays every script directly and through the proxy, and fails with every difference: `over`
/// plain or TLS, the proxy's upstream connections as `pool` says, against a `server` started
/// with `extra` arguments; `password` is for the admin.
pub(crate) async fn check_with(
    scripts: Vec<Script>,
    over: Over,
    pool: Pool,
    server: Server,
    extra: &[&str],
    password: Option<&str>,
) {
    crate::require_server!(server);
    let started = Instant::now();
    let setup = Setup::start(over, pool, server, extra).await;
    let mut admin =
        Admin::connect(setup.redis.addr, password, &setup).await.expect("admin connection");
    let mut failures = Vec::new();
    for script in &scripts {
        // Boxed: the futures of a script run are large in debug builds.
        let outcome = Box::pin(differ(script, &setup, &mut admin)).await;
        if let Err(failure) = outcome {
            failures.push(format!("script `{}`: {failure}", script.name));
        }
    }
    setup.proxy.shutdown().await;
    eprintln!(
        "{} scripts over {over:?}, {pool:?}, on {server:?}, in {:?}",
        scripts.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} scripts differ:\n\n{}",
        failures.len(),
        scripts.len(),
        failures.join("\n\n")
    );
}
