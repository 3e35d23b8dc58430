//! The `redis-audit-proxy` binary: parse the command line, load the configuration (exit 64 on
//! a bad one), set up logging, run the proxy until SIGTERM/SIGINT, drain, exit 0; or run a
//! subcommand (`check-config`, `explain`, `audit verify`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use redis_audit_proxy::app::App;
use redis_audit_proxy::audit::verify::{verify_dir_with_key, verify_export};
use redis_audit_proxy::audit::AuditSink;
use redis_audit_proxy::cli::{AuditCommand, Cli, Command, LogFormat};
use redis_audit_proxy::command::table::EMBEDDED_VERSION;
use redis_audit_proxy::command::CommandTable;
use redis_audit_proxy::config::{read_key_file, Config, OnError, Overrides};
use redis_audit_proxy::event::{EventSink, LogSink};
use redis_audit_proxy::proxy::upstream::fetch_command_table;
use redis_audit_proxy::EXIT_USAGE;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match &cli.command {
        None => run(&cli),
        Some(Command::CheckConfig { config }) => {
            match Config::load(Some(config), &Overrides::default()) {
                Ok(_) => {
                    eprintln!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("redis-audit-proxy: {error}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Some(Command::Explain { config, upstream, users, user, json, command }) => {
            let overrides = Overrides {
                upstream: upstream.clone(),
                users: users.clone(),
                ..Overrides::default()
            };
            match Config::load(config.as_deref(), &overrides) {
                Ok(config) => explain(&config, user.as_deref(), *json, command),
                Err(error) => {
                    eprintln!("redis-audit-proxy: {error}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Some(Command::Audit {
            command: AuditCommand::Verify { dir, syslog_export, checkpoint_key_file },
        }) => match (syslog_export, dir) {
            (Some(export), dir) => audit_verify_export(export, dir.as_deref()),
            (None, Some(dir)) => audit_verify(dir, checkpoint_key_file.as_deref()),
            (None, None) => ExitCode::from(EXIT_USAGE),
        },
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Audit {
            command: AuditCommand::SuggestAcl { dir, user, since, until, users },
        }) => audit_suggest(
            dir,
            user.as_deref(),
            since.as_deref(),
            until.as_deref(),
            users.as_deref(),
        ),
        Some(Command::Audit { command: AuditCommand::Report { dir, start, end, users, json } }) => {
            audit_report(dir, start.as_deref(), end.as_deref(), users.as_deref(), *json)
        }
        Some(Command::Audit {
            command:
                AuditCommand::Query {
                    dir,
                    start,
                    end,
                    user,
                    host,
                    db,
                    keyword,
                    class,
                    status,
                    page_size,
                    page,
                    json,
                },
        }) => {
            let db = db.map(|db| db.to_string());
            let page_size = page_size.map(|n| n.to_string());
            let page = page.map(|n| n.to_string());
            let query = redis_audit_proxy::query::AuditQuery::new(
                start.as_deref(),
                end.as_deref(),
                user.as_deref(),
                host.as_deref(),
                db.as_deref(),
                keyword.as_deref(),
                class.as_deref(),
                None,
                page_size.as_deref(),
                page.as_deref(),
                false,
            )
            .and_then(|query| query.with_status(status.as_deref()));
            match query {
                Ok(query) => audit_query(dir, &query, *json),
                Err(error) => {
                    eprintln!("redis-audit-proxy: {error}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
    }
}

/// The time range of `audit report` / `suggest-acl` and the users file they were given; the
/// exit code of a usage error, said on stderr.
fn range_and_users(
    start: Option<&str>,
    end: Option<&str>,
    users: Option<&Path>,
) -> Result<(redis_audit_proxy::query::AuditQuery, Option<Vec<u8>>), ExitCode> {
    let usage = |what: String| {
        eprintln!("redis-audit-proxy: {what}");
        ExitCode::from(EXIT_USAGE)
    };
    let range = redis_audit_proxy::query::AuditQuery::range(start, end)
        .map_err(|error| usage(error.to_string()))?;
    let users_file =
        users.map(std::fs::read).transpose().map_err(|error| usage(format!("--users: {error}")))?;
    Ok((range, users_file))
}

/// `audit report`: the observe-mode denials grouped, and what each user ran, as text or JSON.
fn audit_report(
    dir: &Path,
    start: Option<&str>,
    end: Option<&str>,
    users: Option<&Path>,
    json: bool,
) -> ExitCode {
    let (range, users_file) = match range_and_users(start, end, users) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let report = match redis_audit_proxy::query::report::build(dir, &range, users_file.as_deref()) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("redis-audit-proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{}", serde_json::to_string(&report).unwrap_or_default())
    } else {
        write!(out, "{}", report.to_text())
    };
    ExitCode::SUCCESS
}

/// `audit suggest-acl`: the suggested users file on stdout, checked to compile against the
/// embedded command table first.
fn audit_suggest(
    dir: &Path,
    user: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    users: Option<&Path>,
) -> ExitCode {
    let (range, users_file) = match range_and_users(since, until, users) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let table = redis_audit_proxy::command::CommandTable::embedded();
    let suggested = match redis_audit_proxy::query::suggest::suggest(
        dir,
        &range,
        user,
        users_file.as_deref(),
        &table,
    ) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("redis-audit-proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ids = redis_audit_proxy::acl::command_ids::CommandIds::new(&table);
    if let Err(error) = redis_audit_proxy::acl::users::Users::parse(suggested.as_bytes(), &ids) {
        eprintln!(
            "redis-audit-proxy: the suggested users file does not load ({error}):\n{suggested}"
        );
        return ExitCode::FAILURE;
    }
    use std::io::Write as _;
    let _ = write!(std::io::stdout().lock(), "{suggested}");
    ExitCode::SUCCESS
}

/// `audit query`: one page of matching command records, newest first, as a table or as the
/// `DescribeAuditRecords` JSON the admin API returns.
fn audit_query(dir: &Path, query: &redis_audit_proxy::query::AuditQuery, json: bool) -> ExitCode {
    let page = match redis_audit_proxy::query::run(dir, query) {
        Ok(page) => page,
        Err(error) => {
            eprintln!("redis-audit-proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let response = page.to_tair(query, "cli");
    // Written through a lock and errors ignored: `| head` closing the pipe is not a failure.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{response}");
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<20}  {:<15}  {:<10}  {:>2}  {:<14}  {:>8}  SQLText",
        "ExecuteTime", "HostAddress", "Account", "DB", "SQLType", "µs"
    );
    for item in response["Items"]["SQL"].as_array().into_iter().flatten() {
        let field = |name: &str| item[name].as_str().unwrap_or("").to_owned();
        let _ = writeln!(
            out,
            "{:<20}  {:<15}  {:<10}  {:>2}  {:<14}  {:>8}  {}",
            field("ExecuteTime"),
            field("HostAddress"),
            field("AccountName"),
            field("DatabaseName"),
            field("SQLType"),
            field("TotalExecutionTimes"),
            field("SQLText")
        );
    }
    let _ = writeln!(
        out,
        "page {} of {} records ({} per page)",
        query.page_number, page.total, query.page_size
    );
    ExitCode::SUCCESS
}

/// `hash-password`: reads one password on stdin (a trailing newline is not part of it) and
/// prints the SHA-256 hex a users file takes after `#`.
#[allow(clippy::print_stdout)]
fn hash_password() -> ExitCode {
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().take(64 * 1024).read_to_end(&mut input) {
        eprintln!("redis-audit-proxy: cannot read the password from stdin: {error}");
        return ExitCode::FAILURE;
    }
    let password = input.strip_suffix(b"\n").unwrap_or(&input);
    let password = password.strip_suffix(b"\r").unwrap_or(password);
    println!("{}", redis_audit_proxy::acl::user::hash_password(password));
    ExitCode::SUCCESS
}

/// `audit verify`: a one-line summary on stdout and exit 0 when the directory is intact, else
/// one line naming the first broken place on stderr and exit 1.
#[allow(clippy::print_stdout)]
fn audit_verify(dir: &Path, checkpoint_key_file: Option<&str>) -> ExitCode {
    let key = match checkpoint_key_file.map(|path| read_key_file("--checkpoint-key-file", path)) {
        Some(Ok(key)) => Some(key),
        Some(Err(error)) => {
            eprintln!("redis-audit-proxy: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
        None => None,
    };
    match verify_dir_with_key(dir, key.as_deref()) {
        Ok(report) => {
            println!("{}: {report}", dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("redis-audit-proxy: {}", error.display_in(dir));
            ExitCode::FAILURE
        }
    }
}

/// `audit verify --syslog-export FILE [--dir DIR]`: as [`audit_verify`], for a sink's copy.
#[allow(clippy::print_stdout)]
fn audit_verify_export(export: &Path, dir: Option<&Path>) -> ExitCode {
    match verify_export(export, dir) {
        Ok(report) => {
            println!("{}: {report}", export.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("redis-audit-proxy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `explain`: the live command table when the upstream answers, else the embedded one.
#[allow(clippy::print_stdout)]
fn explain(config: &Config, user: Option<&str>, json: bool, words: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("redis-audit-proxy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let fetch =
        fetch_command_table(&config.upstream.address, &config.upstream, config.table_login());
    let table = match runtime.block_on(fetch) {
        Ok(table) => table,
        Err(error) => {
            eprintln!(
                "redis-audit-proxy: {error}; using the command table embedded in the binary \
                 (Redis {})",
                EMBEDDED_VERSION.trim()
            );
            CommandTable::embedded()
        }
    };
    let args: Vec<bytes::Bytes> = words.iter().map(|w| bytes::Bytes::from(w.clone())).collect();
    let found = redis_audit_proxy::explain::explain(&table, &args);
    let decision = match (&config.auth.users_file, user) {
        (Some(file), _) => {
            let acl = &config.acl;
            match redis_audit_proxy::acl::Policy::compile(
                &file.text,
                &table,
                acl.mode,
                &acl.observe_users,
            ) {
                Ok(policy) => Some(redis_audit_proxy::explain::decide(
                    &policy,
                    &table,
                    user.unwrap_or("default"),
                    &args,
                )),
                Err(error) => {
                    eprintln!("redis-audit-proxy: {}: {error}", file.path.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        (None, Some(_)) => {
            eprintln!("redis-audit-proxy: --user needs a users file (--users or auth.users_file)");
            return ExitCode::from(EXIT_USAGE);
        }
        (None, None) => None,
    };
    if json {
        let mut value = found.to_json(&table);
        value["decision"] = decision.map_or(serde_json::Value::Null, |d| d.to_json());
        println!("{value}");
    } else {
        print!("{}", found.to_text(&table));
        if let Some(decision) = decision {
            print!("{}", decision.to_text());
        }
    }
    ExitCode::SUCCESS
}

fn run(cli: &Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("redis-audit-proxy: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!(
                "redis-audit-proxy: --log-level: \"{}\" is not a valid filter: {error}",
                cli.log_level
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Logs go to stderr (stdout may carry the audit trail: `type = "stdout"` sinks), with
    // colour codes only when a person reads them on a terminal.
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
        }
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    // With `proxy.runtime = "per_core"` this runtime keeps the admin plane, the TLS listener
    // and the signals; `App::start` starts the per-core threads serving plain-TCP clients.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.proxy.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.proxy.listen;
        let on_error = config.audit.on_error;
        let audit = if config.audit.enabled {
            let dir = config.audit.dir.display().to_string();
            let sink =
                AuditSink::open(&config.audit, &config.upstream.address, config.proxy.listen)
                    .with_context(|| format!("cannot open the audit directory {dir}"))?;
            tracing::info!(dir, instance_id = %sink.envelope.instance_id, "audit trail open");
            Some(sink)
        } else {
            tracing::warn!("audit.enabled = false: commands are not recorded");
            None
        };
        let sink: Arc<dyn EventSink> = match &audit {
            Some(audit) => audit.clone(),
            None => Arc::new(LogSink),
        };
        // Watched before clients are accepted: a SIGHUP must never meet the default action.
        let signals = Signals::watch()?;
        let app = App::start(config, sink)
            .await
            .with_context(|| format!("cannot start (proxy.listen {listen})"))?;
        let audit_failed = wait_for_stop_signal(signals, &app, audit.as_deref(), on_error).await?;
        tracing::info!("stop requested: draining connections");
        app.shutdown().await;
        if audit_failed {
            anyhow::bail!(
                "stopped because writing the audit trail failed (audit.on_error = \"shutdown\")"
            );
        }
        Ok(())
    })
}

/// SIGTERM and SIGHUP, watched from start-up on.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn watch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }
}

/// Waits for SIGTERM or SIGINT; on SIGHUP, rotates the audit trail, reloads the users file
/// and goes on waiting. With
/// `audit.on_error = "shutdown"`, a failure to write the trail also stops the proxy (returns
/// true then).
async fn wait_for_stop_signal(
    signals: Signals,
    app: &App,
    audit: Option<&AuditSink>,
    on_error: OnError,
) -> anyhow::Result<bool> {
    let Signals { mut terminate, mut hangup } = signals;
    let audit_failed = async {
        match audit {
            Some(audit) if on_error == OnError::Shutdown => audit.failed().await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(audit_failed);
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result.context("cannot watch SIGINT")?;
                return Ok(false);
            }
            _ = terminate.recv() => return Ok(false),
            () = &mut audit_failed => {
                tracing::error!("writing the audit trail failed and audit.on_error = \"shutdown\": stopping");
                return Ok(true);
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: rotating the audit trail, reloading the users file");
                if let Some(audit) = audit {
                    audit.reopen();
                }
                // Outcomes are logged and recorded as system events either way.
                if app.policy_version().is_some() {
                    let _ = app.reload_policy();
                }
                let _ = app.reload_tls();
            }
        }
    }
}
