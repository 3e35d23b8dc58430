//! Prometheus metrics: one registry, fed by a sink that wraps the audit sink (so every
//! command, session, security and system event is counted where it is recorded) and by the
//! audit writer's counters, read at each scrape. Label values come only from closed sets:
//! classes, outcomes, reasons, modes, and command names from the command table.

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use rustc_hash::FxHashMap;

use crate::command::Class;
use crate::event::{
    CommandRecord, CommandTally, EventSink, ReplyStatus, SecurityAction, SecurityEvent,
    SessionAction, SessionEvent, SinkStats, SystemEvent,
};
use crate::util::sync::{LockAnyway, RwLockAnyway};

/// The class label values, by [`Class::index_of`].
const CLASSES: [Option<Class>; 4] = Class::ALL_OR_UNKNOWN;
const OUTCOMES: [&str; 5] = ["ok", "error", "queued", "skipped", "unanswered"];
const PREFIX: &str = "redis_audit_proxy";

fn outcome_index(status: ReplyStatus) -> usize {
    match status {
        ReplyStatus::Ok => 0,
        ReplyStatus::Error => 1,
        ReplyStatus::Queued => 2,
        ReplyStatus::Skipped => 3,
        ReplyStatus::Unanswered => 4,
    }
}

/// Counters by (class, outcome) for one command name.
type CommandCounters = [[Option<IntCounter>; OUTCOMES.len()]; CLASSES.len()];

/// The same, resolved once each and then read without a lock.
type ResolvedCounters = [[OnceLock<IntCounter>; OUTCOMES.len()]; CLASSES.len()];

/// Commands whose counters are found by [`CommandInfo::stat_id`](crate::command::CommandInfo)
/// in an array (Redis 7.2 has about 400 commands and subcommands; modules add theirs). Others,
/// and unknown commands, by name in a map.
const RESOLVED_COMMANDS: usize = 2048;

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    commands: IntCounterVec,
    /// Label handles by command id, made at a command's first use: the hot path indexes an
    /// array instead of hashing labels.
    resolved: Box<[OnceLock<Box<ResolvedCounters>>]>,
    /// Label handles of the commands past [`RESOLVED_COMMANDS`] and of unknown commands.
    command_handles: RwLock<FxHashMap<Box<str>, CommandCounters>>,
    latency: Vec<prometheus::Histogram>,
    denials: IntCounterVec,
    auth: IntCounterVec,
    tls_rejected: IntCounterVec,
    connections_open: IntGauge,
    connections_total: IntCounter,
    upstream_connect_errors: IntCounter,
    upstream_connections: IntGaugeVec,
    upstream_pins: IntCounterVec,
    upstream_relieved: IntCounter,
    upstream_writes: IntCounter,
    upstream_write_commands: IntCounter,
    policy_reloads: IntCounterVec,
    policy_info: IntGaugeVec,
    acl_log_entries: IntGauge,
    audit_written: IntCounter,
    audit_dropped: IntCounterVec,
    audit_filtered: IntCounterVec,
    audit_queue_bytes: IntGauge,
    audit_bytes_written: IntCounter,
    audit_rotations: IntCounter,
    audit_write_errors: IntCounter,
    audit_deletions: IntCounter,
    audit_fsyncs: IntCounter,
    audit_fsync_seconds: prometheus::Counter,
    /// `[[audit.sinks]]`, by `sink` (its configured name; never an error's text).
    sink_sent: IntCounterVec,
    sink_dropped: IntCounterVec,
    sink_queue_bytes: IntGaugeVec,
    sink_reconnects: IntCounterVec,
    sink_errors: IntCounterVec,
    sink_last_error: IntGaugeVec,
    sink_truncated: IntCounterVec,
    sink_resent: IntCounterVec,
    /// The audit counters as of the last scrape (the registry's counters grow by the delta).
    last_stats: Mutex<SinkStats>,
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}_{suffix}")
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |suffix: &str, help: &str| {
            let metric = IntCounter::new(name(suffix), help).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let counter_vec = |suffix: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name(suffix), help), labels).expect("valid");
            registry.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let gauge = |suffix: &str, help: &str| {
            let metric = IntGauge::new(name(suffix), help).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let gauge_vec = |suffix: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name(suffix), help), labels).expect("valid");
            registry.register(Box::new(metric.clone())).expect("unique metric");
            metric
        };
        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                name("command_duration_seconds"),
                "Command latency through the proxy (request read to reply written), by class",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["class"],
        )
        .expect("valid histogram");
        registry.register(Box::new(latency_vec.clone())).expect("unique metric");
        let build = gauge_vec("build_info", "The proxy's version", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Self {
            commands: counter_vec("commands_total", "Commands, by class, command (as the command table names it; unknown otherwise) and outcome", &["class", "command", "outcome"]),
            resolved: (0..RESOLVED_COMMANDS).map(|_| OnceLock::new()).collect(),
            command_handles: RwLock::new(FxHashMap::default()),
            latency: CLASSES.iter().map(|class| latency_vec.with_label_values(&[Class::name_of(*class)])).collect(),
            denials: counter_vec("acl_denials_total", "ACL denials, by reason (command, key, channel), mode (enforce, observe, none) and source (proxy, redis)", &["reason", "mode", "source"]),
            auth: counter_vec("auth_total", "Authentications, by result (success, failure), reason (auth, tls-cert) and source (proxy, redis)", &["result", "reason", "source"]),
            tls_rejected: counter_vec("tls_rejected_total", "TLS clients turned away, by reason (tls-handshake, tls-cert)", &["reason"]),
            connections_open: gauge("connections_open", "Client connections open"),
            connections_total: counter("connections_total", "Client connections accepted"),
            upstream_connect_errors: counter("upstream_connect_errors_total", "Failed connections to the upstream Redis"),
            upstream_connections: gauge_vec("upstream_connections", "Upstream connections open, by state: dedicated (upstream.pool = dedicated), shared, pinned (to one client), spare (kept for the next pin)", &["state"]),
            upstream_pins: counter_vec("upstream_pins_total", "Clients pinned to an upstream connection of their own (upstream.pool = shared), by reason", &["reason"]),
            upstream_relieved: counter("upstream_relieved_total", "Clients moved, between replies, off a busy shared upstream connection: owing other clients more than upstream.pool_busy_replies replies, or silent for upstream.pool_stall_ms while owing some"),
            upstream_writes: counter("upstream_writes_total", "Batches of commands written to shared upstream connections"),
            upstream_write_commands: counter("upstream_write_commands_total", "Commands written to shared upstream connections (divide by upstream_writes_total for commands per write)"),
            policy_reloads: counter_vec("policy_reloads_total", "Users file loads and changes, by result", &["result"]),
            policy_info: gauge_vec("policy_info", "The users file version in force (1 for the current one)", &["version"]),
            acl_log_entries: gauge("acl_log_entries", "Entries in the proxy's ACL LOG"),
            audit_written: counter("audit_events_written_total", "Audit events written to files"),
            audit_dropped: counter_vec("audit_events_dropped_total", "Audit events dropped, by reason", &["reason"]),
            audit_filtered: counter_vec("audit_events_filtered_total", "Audit events left out by filters, by reason", &["reason"]),
            audit_queue_bytes: gauge("audit_queue_bytes", "Bytes of audit events queued, not yet written"),
            audit_bytes_written: counter("audit_bytes_written_total", "Bytes written to audit files"),
            audit_rotations: counter("audit_rotations_total", "Audit files rotated"),
            audit_write_errors: counter("audit_write_errors_total", "Failed audit writes (retried)"),
            audit_deletions: counter("audit_files_deleted_total", "Rotated audit files deleted by retention"),
            audit_fsyncs: counter("audit_fsyncs_total", "Audit batches written and fsynced (durability = fsync)"),
            audit_fsync_seconds: {
                let metric = prometheus::Counter::new(
                    name("audit_fsync_seconds_total"),
                    "Time spent writing and fsyncing audit batches (durability = fsync); divide by audit_fsyncs_total for the mean latency",
                )
                .expect("valid metric");
                registry.register(Box::new(metric.clone())).expect("unique metric");
                metric
            },
            sink_sent: counter_vec("audit_sink_sent_total", "Audit lines a sink delivered to its destination", &["sink"]),
            sink_dropped: counter_vec("audit_sink_dropped_total", "Audit lines a sink missed (queue full, or in flight on a broken connection), each declared by a loss record", &["sink"]),
            sink_queue_bytes: gauge_vec("audit_sink_queue_bytes", "Bytes of audit lines held for a sink, not yet sent", &["sink"]),
            sink_reconnects: counter_vec("audit_sink_reconnects_total", "Connections a sink made after its first", &["sink"]),
            sink_errors: counter_vec("audit_sink_errors_total", "Failed connection attempts and writes of a sink", &["sink"]),
            sink_last_error: gauge_vec("audit_sink_last_error_timestamp_seconds", "When a sink last failed (Unix time; 0: never); the error itself is in the log", &["sink"]),
            sink_truncated: counter_vec("audit_sink_truncated_total", "Records a sink cut to fit max_message_bytes", &["sink"]),
            sink_resent: counter_vec("audit_sink_resent_total", "RELP messages sent again after a session broke before they were acknowledged", &["sink"]),
            last_stats: Mutex::new(SinkStats::default()),
            registry,
        }
    }

    /// Counts one command in its (command, class, outcome) series: under the read lock when
    /// the series was seen before, which is every time but the first.
    fn count_command(&self, command: &str, class: usize, outcome: usize, count: u64) {
        let handles = self.command_handles.read_anyway();
        if let Some(counter) = handles.get(command).and_then(|h| h[class][outcome].as_ref()) {
            counter.inc_by(count);
            return;
        }
        drop(handles);
        let counter = self.commands.with_label_values(&[
            Class::name_of(CLASSES[class]),
            command,
            OUTCOMES[outcome],
        ]);
        counter.inc_by(count);
        let mut handles = self.command_handles.write_anyway();
        handles.entry(command.into()).or_default()[class][outcome] = Some(counter);
    }

    /// Counts the command(s) a record stands for (a grouped refusal counts its repeats).
    pub fn command(&self, record: CommandTally<'_>) {
        let class = Class::index_of(record.class);
        let outcome = outcome_index(record.status);
        match record.command {
            Some(info) if info.stat_id < RESOLVED_COMMANDS => {
                let counters = self.resolved[info.stat_id].get_or_init(Box::default);
                counters[class][outcome]
                    .get_or_init(|| {
                        let labels =
                            [Class::name_of(CLASSES[class]), info.name.as_str(), OUTCOMES[outcome]];
                        self.commands.with_label_values(&labels)
                    })
                    .inc_by(record.count);
            }
            Some(info) => self.count_command(&info.name, class, outcome, record.count),
            None => self.count_command("unknown", class, outcome, record.count),
        }
        self.latency[class].observe(record.latency.as_secs_f64());
    }

    /// Counts a failed connection to the upstream.
    pub(crate) fn upstream_connect_error(&self) {
        self.upstream_connect_errors.inc();
    }

    /// The gauge of upstream connections in `state`.
    pub(crate) fn upstream_connections(&self, state: &str) -> IntGauge {
        self.upstream_connections.with_label_values(&[state])
    }

    /// Counts a client pinned for `reason`.
    pub(crate) fn upstream_pin(&self, reason: &str) {
        self.upstream_pins.with_label_values(&[reason]).inc();
    }

    /// Counts a client moved off a busy shared connection.
    pub(crate) fn upstream_relieved(&self) {
        self.upstream_relieved.inc();
    }

    /// Counts one batch of `commands` written to a shared upstream connection.
    pub(crate) fn upstream_write(&self, commands: u64) {
        self.upstream_writes.inc();
        self.upstream_write_commands.inc_by(commands);
    }

    /// Sets the ACL LOG size (read at each scrape).
    pub(crate) fn set_acl_log_entries(&self, entries: usize) {
        self.acl_log_entries.set(entries as i64);
    }

    /// Brings the audit counters up to `stats` (read at each scrape).
    pub(crate) fn update_audit(&self, stats: &SinkStats) {
        let mut last = self.last_stats.lock_anyway();
        let grow = |counter: &IntCounter, now: u64, before: u64| {
            counter.inc_by(now.saturating_sub(before))
        };
        grow(&self.audit_written, stats.written, last.written);
        grow(
            &self.audit_dropped.with_label_values(&["queue_full"]),
            stats.dropped_queue_full,
            last.dropped_queue_full,
        );
        for (reason, count) in &stats.filtered {
            let before = last.filtered.iter().find(|(r, _)| r == reason).map_or(0, |(_, c)| *c);
            grow(&self.audit_filtered.with_label_values(&[reason]), *count, before);
        }
        grow(&self.audit_bytes_written, stats.bytes_written, last.bytes_written);
        grow(&self.audit_rotations, stats.rotations, last.rotations);
        grow(&self.audit_write_errors, stats.write_errors, last.write_errors);
        grow(&self.audit_deletions, stats.deletions, last.deletions);
        grow(&self.audit_fsyncs, stats.fsyncs, last.fsyncs);
        let seconds = stats.fsync_micros.saturating_sub(last.fsync_micros) as f64 / 1e6;
        self.audit_fsync_seconds.inc_by(seconds);
        self.audit_queue_bytes.set(stats.queue_bytes as i64);
        for sink in &stats.sinks {
            let before =
                last.sinks.iter().find(|s| s.name == sink.name).cloned().unwrap_or_default();
            let label = [sink.name.as_str()];
            grow(&self.sink_sent.with_label_values(&label), sink.sent, before.sent);
            grow(&self.sink_dropped.with_label_values(&label), sink.dropped, before.dropped);
            grow(
                &self.sink_reconnects.with_label_values(&label),
                sink.reconnects,
                before.reconnects,
            );
            grow(&self.sink_errors.with_label_values(&label), sink.errors, before.errors);
            grow(&self.sink_truncated.with_label_values(&label), sink.truncated, before.truncated);
            grow(&self.sink_resent.with_label_values(&label), sink.resent, before.resent);
            self.sink_queue_bytes.with_label_values(&label).set(sink.queue_bytes as i64);
            self.sink_last_error.with_label_values(&label).set(sink.last_error_unix as i64);
        }
        *last = stats.clone();
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    fn security(&self, event: &SecurityEvent) {
        match event.action {
            SecurityAction::AclDenied => {
                let mode = event.mode.unwrap_or("none");
                self.denials.with_label_values(&[event.reason, mode, event.source]).inc();
            }
            SecurityAction::AuthSuccess | SecurityAction::AuthFailure => {
                let result =
                    if event.action == SecurityAction::AuthSuccess { "success" } else { "failure" };
                self.auth.with_label_values(&[result, event.reason, event.source]).inc();
            }
            SecurityAction::TlsRejected => {
                self.tls_rejected.with_label_values(&[event.reason]).inc()
            }
            SecurityAction::Replication | SecurityAction::ClusterBypass => {}
        }
    }

    fn system(&self, event: &SystemEvent) {
        let result = match event.action {
            "policy_load" | "policy_reload" | "policy_change" => "success",
            "policy_reload_failed" => "failure",
            _ => return,
        };
        self.policy_reloads.with_label_values(&[result]).inc();
        if let Some(version) = event.detail.get("policy_version").and_then(|v| v.as_str()) {
            if result == "success" {
                self.policy_info.reset();
                self.policy_info.with_label_values(&[version]).set(1);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A sink that counts what passes through it, then hands it on.
#[derive(Debug)]
pub(crate) struct MeteredSink {
    inner: Arc<dyn EventSink>,
    metrics: Arc<Metrics>,
}

impl MeteredSink {
    /// Counts into `metrics`, then forwards to `inner`.
    pub(crate) fn new(inner: Arc<dyn EventSink>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl EventSink for MeteredSink {
    fn record(&self, record: CommandRecord) -> Option<u64> {
        self.metrics.command(record.tally());
        self.inner.record(record)
    }

    fn wants_records(&self) -> bool {
        self.inner.wants_records()
    }

    fn tally(&self, tally: CommandTally<'_>) {
        self.metrics.command(tally);
        self.inner.tally(tally);
    }

    fn poll_durable(&self, ticket: u64, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.inner.poll_durable(ticket, cx)
    }

    fn session(&self, event: SessionEvent) {
        match event.action {
            SessionAction::Open => {
                self.metrics.connections_open.inc();
                self.metrics.connections_total.inc();
            }
            SessionAction::Close => self.metrics.connections_open.dec(),
            SessionAction::Auth => {}
        }
        self.inner.session(event);
    }

    fn security(&self, event: SecurityEvent) {
        self.metrics.security(&event);
        self.inner.security(event);
    }

    fn system(&self, event: SystemEvent) {
        self.metrics.system(&event);
        self.inner.system(event);
    }

    fn stats(&self) -> Option<SinkStats> {
        self.inner.stats()
    }

    fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    fn is_failing(&self) -> bool {
        self.inner.is_failing()
    }

    fn flush(&self) {
        self.inner.flush();
    }
}
