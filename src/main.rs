//! The `redis-audit-proxy` binary: parse the command line, load the configuration (exit 64 on
//! a bad one), set up logging, run the proxy until SIGTERM/SIGINT, drain, exit 0.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use redis_audit_proxy::app::App;
use redis_audit_proxy::cli::{Cli, Command};
use redis_audit_proxy::config::{Config, Overrides};
use redis_audit_proxy::record::LogSink;
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
        Some(other) => {
            eprintln!("redis-audit-proxy: `{}` is not yet available in this build", other.name());
            ExitCode::from(2)
        }
    }
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.proxy.listen;
        tracing::info!(
            "admin plane, audit files and ACL checks are not in this build yet: \
             admin.listen, audit.dir, auth.users_file and acl.mode are validated but unused"
        );
        let app = App::start(config, Arc::new(LogSink))
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        wait_for_stop_signal().await?;
        tracing::info!("stop requested: draining connections");
        app.shutdown().await;
        Ok(())
    })
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot watch SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
