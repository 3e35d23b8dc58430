//! The command-line contract (see ARCHITECTURE.md): global flags that override the config
//! file, and the subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{AclMode, Overrides};

/// redis-audit-proxy: a transparent Redis proxy that audits every command.
#[derive(Debug, Parser)]
#[command(name = "redis-audit-proxy", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Configuration file (TOML); built-in defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Client listener address (proxy.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Redis address, HOST:PORT (upstream.address).
    #[arg(long, value_name = "ADDR")]
    pub upstream: Option<String>,
    /// Admin HTTP address (admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Audit directory (audit.dir).
    #[arg(long, value_name = "DIR")]
    pub audit_dir: Option<String>,
    /// Users file in Redis ACL syntax (auth.users_file).
    #[arg(long, value_name = "FILE")]
    pub users: Option<String>,
    /// ACL mode (acl.mode).
    #[arg(long, value_enum)]
    pub mode: Option<AclMode>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json` (one object a line,
    /// for log agents).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do; without one, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The flags that override keys of the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            admin: self.admin.clone(),
            audit_dir: self.audit_dir.clone(),
            users: self.users.clone(),
            mode: self.mode,
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file and exit (0 when valid, 64 when not).
    CheckConfig {
        /// The file to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show how a command is classified and whether a user may run it.
    Explain {
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Redis address to read the command table from.
        #[arg(long, value_name = "ADDR")]
        upstream: Option<String>,
        /// Users file.
        #[arg(long, value_name = "FILE")]
        users: Option<String>,
        /// User to evaluate the command for.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Query or verify audit files.
    Audit {
        /// What to do with them.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read a password on stdin and print its SHA-256 hex, for users files.
    HashPassword,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Filter and page through audit records.
    Query {
        /// Audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Start time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        start: Option<String>,
        /// End time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        end: Option<String>,
        /// User.
        #[arg(long, value_name = "U")]
        user: Option<String>,
        /// Client IP.
        #[arg(long, value_name = "IP")]
        host: Option<String>,
        /// Database.
        #[arg(long, value_name = "N")]
        db: Option<u32>,
        /// Command keyword.
        #[arg(long, value_name = "CMD")]
        keyword: Option<String>,
        /// read, write or non_read_write.
        #[arg(long, value_name = "CLASS")]
        class: Option<String>,
        /// ok, error, queued, skipped or unanswered.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Records per page.
        #[arg(long, value_name = "N")]
        page_size: Option<u32>,
        /// Page number, from 1.
        #[arg(long, value_name = "N")]
        page: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What enforcing would refuse (the observe-mode denials, grouped) and what each user ran.
    Report {
        /// Audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Start time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        start: Option<String>,
        /// End time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        end: Option<String>,
        /// The users file, to show the line defining each denied user (passwords masked).
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A users file granting each user in the trail what it ran and nothing else.
    SuggestAcl {
        /// Audit directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Only this user.
        #[arg(long, value_name = "U")]
        user: Option<String>,
        /// Start time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// End time (yyyy-MM-ddTHH:mm:ssZ).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// The users file in force, whose password rules are carried over (cleartext as its
        /// SHA-256).
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
    },
    /// Check the audit files for gaps, torn lines and tampering.
    Verify {
        /// Audit directory (with --syslog-export: the trail to compare the copy with).
        #[arg(long, value_name = "DIR", required_unless_present = "syslog_export")]
        dir: Option<PathBuf>,
        /// Check a collector's export of a sink's copy instead (RFC 5424 or JSON lines).
        #[arg(long, value_name = "FILE")]
        syslog_export: Option<PathBuf>,
        /// Also check the HMAC checkpoints with this key file.
        #[arg(long, value_name = "FILE", conflicts_with = "syslog_export")]
        checkpoint_key_file: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_parses() {
        let cli = Cli::try_parse_from([
            "redis-audit-proxy",
            "--config",
            "p.toml",
            "--listen",
            "127.0.0.1:1",
            "--upstream",
            "r:6379",
            "--admin",
            "127.0.0.1:2",
            "--audit-dir",
            "d",
            "--users",
            "u.acl",
            "--mode",
            "observe",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.overrides().mode, Some(AclMode::Observe));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.overrides().upstream.as_deref(), Some("r:6379"));
        let cli = Cli::try_parse_from([
            "redis-audit-proxy",
            "explain",
            "--json",
            "--user",
            "bob",
            "--",
            "SET",
            "k",
            "v",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Explain { .. })));
        for line in [
            &["redis-audit-proxy", "check-config", "--config", "p.toml"][..],
            &["redis-audit-proxy", "audit", "verify", "--dir", "d"],
            &["redis-audit-proxy", "audit", "query", "--dir", "d", "--class", "read", "--json"],
            &["redis-audit-proxy", "hash-password"],
        ] {
            Cli::try_parse_from(line).unwrap();
        }
        assert!(Cli::try_parse_from(["redis-audit-proxy", "--mode", "loud"]).is_err());
    }
}
