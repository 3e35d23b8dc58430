//! The data plane: listener, per-client connections, upstream connections, and what they share.

pub mod auth;
pub mod cluster;
pub mod connection;
pub mod cores;
pub(crate) mod gate;
pub mod listener;
pub mod mirror;
pub mod pin;
pub mod pipeline;
pub mod pool;
pub mod sentinel;
pub mod session;
pub(crate) mod tls_listener;
pub mod upstream;

use std::collections::HashMap;

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::acl::log::AclLog;
use crate::acl::{MissingDefault, Policy, UsersFileError};
use crate::command::{Class, CommandTable};
use crate::config::{AuthMode, Config, Secret};
use crate::event::EventSink;
use crate::event::SystemEvent;
use crate::proxy::mirror::Mirrors;
use crate::util::sync::{LockAnyway, RwLockAnyway};

/// What every connection shares: configuration, the record sink, and what was learned
/// about the upstream.
#[derive(Debug)]
pub struct ProxyContext {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Where per-command records go (counted into [`metrics`](Self::metrics) on the way).
    pub sink: Arc<dyn EventSink>,
    /// The Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Learned from Redis's replies: a new connection must AUTH before anything else
    /// (so Redis's tighter unauthenticated request limits apply to it).
    pub(crate) auth_required: AtomicBool,
    next_connection_id: AtomicU64,
    /// The command table in use: live from the upstream, or the embedded copy until then.
    commands: RwLock<Arc<CommandTable>>,
    /// Classes declared by scripts' shebangs, by SHA1, learned from EVAL and SCRIPT LOAD so
    /// that EVALSHA is classed too. Bounded by `proxy.limits.script_cache_entries`.
    scripts: Mutex<HashMap<[u8; 20], Option<Class>>>,
    /// Classes of functions (by name) learned from `FUNCTION LOAD`, for FCALL. Same bound.
    functions: Mutex<HashMap<Vec<u8>, Class>>,
    /// The ACL policy in force (`None` without a users file), and a counter bumped at each
    /// swap: connections watch it, so they notice without taking the lock per command and
    /// close at once when their user is deleted or disabled.
    policy: RwLock<Option<Arc<Policy>>>,
    policy_generation: tokio::sync::watch::Sender<u64>,
    /// The users file text the policy was compiled from (recompiled when the table changes).
    users_text: Mutex<Option<Vec<u8>>>,
    /// The `ACL LOG` the proxy serves.
    pub(crate) acl_log: Mutex<AclLog>,
    /// Where new upstream connections go (`upstream.address`, or the primary Sentinel names).
    pub target: Arc<upstream::Target>,
    /// The shared upstream connections (`upstream.pool = "shared"`).
    pub pool: Option<Arc<pool::Pool>>,
    /// Client slots (`proxy.max_clients`), shared by the plain and TLS listeners.
    pub(crate) client_slots: Arc<tokio::sync::Semaphore>,
    /// TLS towards Redis (`[upstream.tls]`), rebuilt on reload.
    upstream_tls: RwLock<Option<Arc<upstream::UpstreamTls>>>,
    /// The mirrored users in force (`auth.mirror_users`), once provisioned.
    mirrors: RwLock<Option<Arc<Mirrors>>>,
    /// Wakes the task that reads the command table again (MODULE LOAD, a first AUTH).
    pub(crate) table_wanted: tokio::sync::Notify,
    /// Passthrough without `upstream.table_user`: the credentials of a client Redis accepted,
    /// for reading the table once (then forgotten).
    table_login_hint: Mutex<Option<(String, Secret)>>,
}

impl ProxyContext {
    /// A context for `config`, sending records to `sink`.
    pub fn new(config: Arc<Config>, sink: Arc<dyn EventSink>) -> Self {
        let table = CommandTable::embedded();
        let policy = compile_policy(&config, &table).map(Arc::new);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let sink: Arc<dyn EventSink> =
            Arc::new(crate::metrics::MeteredSink::new(sink, Arc::clone(&metrics)));
        let target = Arc::new(upstream::Target::new(&config.upstream.address));
        let pool = (config.upstream.pool == crate::config::PoolMode::Shared).then(|| {
            pool::Pool::new(Arc::clone(&config), Arc::clone(&metrics), Arc::clone(&target))
        });
        Self {
            pool,
            metrics,
            acl_log: Mutex::new(AclLog::new(config.acl.log_max_len)),
            client_slots: Arc::new(tokio::sync::Semaphore::new(config.proxy.max_clients)),
            upstream_tls: RwLock::new(
                upstream::UpstreamTls::from_config(&config.upstream).unwrap_or_else(|error| {
                    // Configuration loading built it once already: this only fails if a file
                    // changed in between.
                    tracing::error!(%error, "upstream TLS configuration");
                    None
                }),
            ),
            policy: RwLock::new(policy),
            policy_generation: tokio::sync::watch::Sender::new(0),
            target,
            users_text: Mutex::new(config.auth.users_file.as_ref().map(|f| f.text.clone())),
            config,
            sink,
            auth_required: AtomicBool::new(false),
            next_connection_id: AtomicU64::new(1),
            commands: RwLock::new(Arc::new(table)),
            scripts: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            mirrors: RwLock::new(None),
            table_wanted: tokio::sync::Notify::new(),
            table_login_hint: Mutex::new(None),
        }
    }

    /// The command table in use.
    pub fn commands(&self) -> Arc<CommandTable> {
        Arc::clone(&self.commands.read_anyway())
    }

    /// Replaces the command table (new connections use it) and recompiles the policy
    /// against it; a users file the new table refuses leaves the old policy in force.
    pub(crate) fn set_commands(&self, table: CommandTable) {
        let text = self.users_text.lock_anyway().clone();
        if let Some(text) = text {
            match self.compile(&text, &table) {
                Ok(policy) => self.set_policy(policy),
                Err(error) => {
                    tracing::warn!(%error, "the users file does not compile against the upstream's command table; the policy compiled against the embedded table stays in force")
                }
            }
        }
        *self.commands.write_anyway() = Arc::new(table);
    }

    fn compile(&self, text: &[u8], table: &CommandTable) -> Result<Policy, UsersFileError> {
        compile(&self.config, text, table)
    }

    /// The users file text the policy in force was compiled from.
    pub fn users_text(&self) -> Option<Vec<u8>> {
        self.users_text.lock_anyway().clone()
    }

    /// The mirrored users in force, if any.
    pub(crate) fn mirrors(&self) -> Option<Arc<Mirrors>> {
        self.mirrors.read_anyway().clone()
    }

    /// Swaps in the mirrored users just provisioned (`None`: not in force), keeping those still
    /// exact under the policy in force (it may have changed while Redis was being provisioned).
    pub(crate) fn set_mirrors(&self, mirrors: Option<Mirrors>) {
        // The mirrors lock is held while the policy is read, as `set_policy` holds it while
        // the policy is swapped: the two never interleave.
        let mut in_force = self.mirrors.write_anyway();
        *in_force = match (mirrors, self.policy()) {
            (Some(mirrors), Some(policy)) => Some(Arc::new(mirrors.still_exact(&policy))),
            (mirrors, _) => mirrors.map(Arc::new),
        };
    }

    /// Asks for the command table to be read again (after MODULE LOAD / UNLOAD, on reload).
    pub(crate) fn refresh_commands(&self) {
        self.table_wanted.notify_one();
    }

    /// Passthrough: Redis accepted `user`'s credentials. While the table in use is not the
    /// live one and no `upstream.table_user` is configured, they are used once to read it.
    pub(crate) fn refresh_commands_as(&self, user: &Bytes, password: &Bytes) {
        let live = matches!(self.commands().source, crate::command::TableSource::Live(_));
        if live || self.config.upstream.table_login.is_some() {
            return;
        }
        let login = (String::from_utf8_lossy(user).into_owned(), Secret(password.to_vec()));
        *self.table_login_hint.lock_anyway() = Some(login);
        self.table_wanted.notify_one();
    }

    /// Takes the credentials a client authenticated with, if any are waiting to be used.
    pub(crate) fn take_table_login_hint(&self) -> Option<(String, Secret)> {
        self.table_login_hint.lock_anyway().take()
    }

    /// Swaps in a new policy; connections pick it up at their next command. The mirrored
    /// users in force narrow to those it keeps unchanged first: the others are provisioned
    /// again (or deleted) only after this, and no session may log in as them meanwhile.
    pub(crate) fn set_policy(&self, policy: Policy) {
        let mut mirrors = self.mirrors.write_anyway();
        if let Some(current) = mirrors.as_ref() {
            *mirrors = Some(Arc::new(current.still_exact(&policy)));
        }
        *self.policy.write_anyway() = Some(Arc::new(policy));
        drop(mirrors);
        self.policy_generation.send_modify(|generation| *generation += 1);
    }

    /// Reads the users file again and swaps the new policy in. On any error the policy in
    /// force stays. Either way a system event says what happened.
    pub fn reload_policy(&self) -> Result<Arc<str>, PolicyError> {
        let Some(file) = &self.config.auth.users_file else {
            return Err(PolicyError::NoUsersFile);
        };
        // A reload also reads Redis's command table again (it recompiles the policy too).
        self.refresh_commands();
        let previous = self.policy().map(|p| Arc::clone(&p.version));
        let path = || file.path.display().to_string();
        let result = std::fs::read(&file.path)
            .map_err(|source| PolicyError::Read { path: path(), source })
            .and_then(|text| {
                let policy = self
                    .compile(&text, &self.commands())
                    .map_err(|source| PolicyError::FileRefused { path: path(), source })?;
                Ok((text, policy))
            });
        let time = std::time::SystemTime::now();
        match result {
            Ok((text, policy)) => {
                let version = Arc::clone(&policy.version);
                let users = policy.users().len();
                *self.users_text.lock_anyway() = Some(text);
                self.set_policy(policy);
                tracing::info!(policy_version = %version, users, "users file reloaded");
                let detail = serde_json::json!({
                    "policy_version": &*version,
                    "previous_policy_version": previous.as_deref(),
                    "users": users,
                });
                self.sink.system(SystemEvent { action: "policy_reload", time, detail });
                Ok(version)
            }
            Err(error) => {
                tracing::warn!(%error, "users file reload failed: the policy in force stays");
                let detail = serde_json::json!({
                    "error": error.to_string(),
                    "policy_version": previous.as_deref(),
                });
                self.sink.system(SystemEvent { action: "policy_reload_failed", time, detail });
                Err(error)
            }
        }
    }

    /// Replaces the users with those of `text` (from `ACL SETUSER` / `ACL DELUSER`): compiled,
    /// swapped in, and recorded as a `policy_change` system event naming the command.
    pub(crate) fn change_users(&self, text: String, command: &str) -> Result<(), UsersFileError> {
        let policy = self.compile(text.as_bytes(), &self.commands())?;
        let previous = self.policy().map(|p| Arc::clone(&p.version));
        let detail = serde_json::json!({
            "policy_version": &*policy.version,
            "previous_policy_version": previous.as_deref(),
            "users": policy.users().len(),
            "command": command,
        });
        *self.users_text.lock_anyway() = Some(text.into_bytes());
        self.set_policy(policy);
        let time = std::time::SystemTime::now();
        self.sink.system(SystemEvent { action: "policy_change", time, detail });
        Ok(())
    }

    /// `ACL SAVE`: writes the users in force to the users file, atomically (a temporary file
    /// in the same directory, synced, then renamed over it).
    pub(crate) fn save_users(&self) -> Result<(), PolicyError> {
        let (Some(file), Some(policy)) = (&self.config.auth.users_file, self.policy()) else {
            return Err(PolicyError::NoUsersFile);
        };
        let text = policy.users_file_text();
        let path = &file.path;
        let random = crate::util::id::random_bytes::<8>().unwrap_or_default();
        let suffix = crate::util::hex::hex(&random);
        let temporary = path.with_extension(format!("tmp-{}-{suffix}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // New (never an existing file or a symlink planted there), readable by the
            // proxy's user only: it holds password hashes.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(file = %path.display(), error = %source, "ACL SAVE failed");
            PolicyError::Write { path: path.display().to_string(), source }
        })
    }

    /// The proxy's answer to `ACL LOG [count|RESET]` (`args` from `ACL` on), with the fields
    /// of the Redis behind it.
    pub(crate) fn acl_log_reply(&self, args: &[Bytes], resp3: bool) -> Bytes {
        let shape = crate::acl::log::Shape::of_version(&self.commands().version);
        let mut log = self.acl_log.lock_anyway();
        log.command(args, resp3, crate::util::unix_millis(), shape)
    }

    /// Entries in the proxy's ACL LOG.
    pub(crate) fn acl_log_len(&self) -> usize {
        self.acl_log.lock_anyway().len()
    }

    /// TLS towards Redis, if configured.
    pub(crate) fn upstream_tls(&self) -> Option<Arc<upstream::UpstreamTls>> {
        self.upstream_tls.read_anyway().clone()
    }

    /// Rebuilds the upstream TLS configuration from its files (SIGHUP): new connections use
    /// it; on an error the one in force stays, and the error is returned.
    pub(crate) fn reload_upstream_tls(&self) -> Result<(), crate::tls::TlsError> {
        let tls = upstream::UpstreamTls::from_config(&self.config.upstream)?;
        *self.upstream_tls.write_anyway() = tls;
        Ok(())
    }

    /// Watches the policy generation.
    pub(crate) fn watch_policy(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_generation.subscribe()
    }

    /// The policy in force, if a users file is configured.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy.read_anyway().clone()
    }

    /// Remembers the class a script body declares, under its SHA1.
    pub(crate) fn learn_script(&self, body: &[u8]) -> Option<Class> {
        let class = Class::of_script(body);
        let sha = sha1_smol::Sha1::from(body).digest().bytes();
        let limit = self.config.proxy.limits.script_cache_entries;
        let mut scripts = self.scripts.lock_anyway();
        if scripts.len() >= limit && !scripts.contains_key(&sha) {
            // Bounded, not clever: start over rather than grow.
            scripts.clear();
        }
        scripts.insert(sha, class);
        class
    }

    /// Remembers the functions a `FUNCTION LOAD` library registers.
    pub(crate) fn learn_library(&self, code: &[u8]) {
        let limit = self.config.proxy.limits.script_cache_entries;
        let mut functions = self.functions.lock_anyway();
        for (name, class) in crate::command::class::functions_of_library(code) {
            if functions.len() >= limit && !functions.contains_key(&name) {
                functions.clear();
            }
            functions.insert(name, class);
        }
    }

    /// The class of an FCALL of `name`, if its library was loaded through the proxy.
    pub(crate) fn function_class(&self, name: &[u8]) -> Option<Class> {
        self.functions.lock_anyway().get(name).copied()
    }

    /// The class declared by the script with this SHA1 (40 hex digits, any case), if known.
    pub(crate) fn script_class(&self, sha_hex: &[u8]) -> Option<Class> {
        let sha = parse_sha1_hex(sha_hex)?;
        let scripts = self.scripts.lock_anyway();
        scripts.get(&sha).copied().flatten()
    }

    /// A new connection id, unique within the process.
    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a new connection starts unauthenticated.
    pub(crate) fn auth_required(&self) -> bool {
        self.auth_required.load(Ordering::Relaxed)
    }

    /// Records what a reply proved about the default user.
    pub(crate) fn set_auth_required(&self, required: bool) {
        if self.auth_required() != required {
            self.auth_required.store(required, Ordering::Relaxed);
        }
    }
}

/// The configured users file compiled against `table`; `None` without one, or when it does not
/// compile (the error is logged; configuration loading already refused such a file).
/// Why the users file could not be reloaded or saved; the policy in force stays.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// `auth.users_file` is not set.
    #[error("no users file is configured (auth.users_file)")]
    NoUsersFile,
    /// The users file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The users file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The users file does not compile.
    #[error("{path}: {source}")]
    FileRefused {
        /// The users file.
        path: String,
        /// The line and rule refused.
        source: UsersFileError,
    },
    /// `ACL SAVE` could not write it.
    #[error("{path}: {source}")]
    Write {
        /// The users file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn compile_policy(config: &Config, table: &CommandTable) -> Option<Policy> {
    let file = config.auth.users_file.as_ref()?;
    match compile(config, &file.text, table) {
        Ok(policy) => Some(policy),
        Err(error) => {
            tracing::warn!(file = %file.path.display(), %error, "users file refused");
            None
        }
    }
}

/// Compiles a users file as the configuration says: in proxy auth mode a file without
/// `default` leaves `default` off (fail closed), as a missing user may run nothing.
pub fn compile(
    config: &Config,
    text: &[u8],
    table: &CommandTable,
) -> Result<Policy, UsersFileError> {
    let acl = &config.acl;
    let missing = match config.auth.mode {
        AuthMode::Proxy => MissingDefault::Off,
        AuthMode::Passthrough => MissingDefault::Open,
    };
    Policy::compile_with(text, table, acl.mode, &acl.observe_users, missing)
}

fn parse_sha1_hex(hex: &[u8]) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}
