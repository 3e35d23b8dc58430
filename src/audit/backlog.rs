//! What the writer's queue takes once it is full, and the account of what it drops.
//!
//! `queue_max_bytes` bounds the command records that may be dropped. Session and security
//! events are clients' doing too (connections, AUTH attempts, denials), so they cannot be
//! queued without bound either: they may use a reserve of as much again (at least
//! [`MIN_RESERVE_BYTES`]), and past it they are dropped like commands. Only the proxy's own system events and
//! the records of commands that ran under `on_full = "block"`/`"reject"` (whose clients are
//! held back meanwhile) are always taken. Every dropped line keeps its `seq`, and the next
//! line queued is preceded by a `loss` record naming the range and how many of each kind it
//! held, so nothing is lost silently.

use std::time::SystemTime;

use serde_json::json;

use crate::audit::event::AuditEvent;
use crate::event::SystemEvent;

/// The smallest reserve for session and security events: a small queue (a test's, or a
/// deployment's that would rather drop commands) still takes those of a short stall.
pub(crate) const MIN_RESERVE_BYTES: usize = 1 << 20;

/// How far past `queue_max_bytes` a line is still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Within `queue_max_bytes`: a command record that may be dropped.
    Droppable,
    /// Within `queue_max_bytes` and a reserve of as much again (at least
    /// [`MIN_RESERVE_BYTES`]): a session or security event.
    Reserve,
    /// Always: a system event, or the record of a command that ran under `block`/`reject`.
    Always,
}

impl Budget {
    /// The budget of an event that is not a command.
    pub(crate) fn of_event(event: &AuditEvent) -> Self {
        match event {
            AuditEvent::Session(_) | AuditEvent::Security(_) => Self::Reserve,
            AuditEvent::System(_) => Self::Always,
        }
    }

    /// Whether a line of `bytes` is queued when `queued` bytes already are.
    pub(crate) fn admits(self, queued: usize, bytes: usize, queue_max_bytes: usize) -> bool {
        let after = queued.saturating_add(bytes);
        match self {
            Self::Droppable => after <= queue_max_bytes,
            Self::Reserve => {
                after <= queue_max_bytes.saturating_add(queue_max_bytes.max(MIN_RESERVE_BYTES))
            }
            Self::Always => true,
        }
    }
}

/// The kinds of line that can be dropped, as a `loss` record counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A command record.
    Command,
    /// A session event.
    Session,
    /// A security event.
    Security,
}

impl Kind {
    /// The kind of an event (system events are never dropped: counted as nothing).
    pub(crate) fn of_event(event: &AuditEvent) -> Option<Self> {
        match event {
            AuditEvent::Session(_) => Some(Self::Session),
            AuditEvent::Security(_) => Some(Self::Security),
            AuditEvent::System(_) => None,
        }
    }
}

/// Dropped sequence numbers not yet declared: always one contiguous range, because every
/// line queued declares the range before it first.
#[derive(Debug, Default)]
pub struct Lost {
    range: Option<(u64, u64)>,
    /// Of which commands, session events, security events.
    counts: [u64; 3],
}

impl Lost {
    /// Notes that the line numbered `seq` was dropped.
    pub fn add(&mut self, seq: u64, kind: Kind) {
        self.range = Some(self.range.map_or((seq, seq), |(first, _)| (first, seq)));
        self.counts[kind as usize] += 1;
    }

    /// The `loss` event that declares what was dropped since the last one, if anything was.
    pub(crate) fn take_event(&mut self) -> Option<AuditEvent> {
        let (first, last) = self.range.take()?;
        let [command, session, security] = std::mem::take(&mut self.counts);
        let mut kinds = serde_json::Map::new();
        for (name, count) in [("command", command), ("session", session), ("security", security)] {
            if count > 0 {
                kinds.insert(name.to_owned(), json!(count));
            }
        }
        Some(AuditEvent::System(SystemEvent {
            action: "loss",
            time: SystemTime::now(),
            detail: json!({
                "lost": {"reason": "queue_full", "first_seq": first, "last_seq": last,
                         "count": last - first + 1, "kinds": kinds}
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_budget_stops_at_its_limit() {
        let max = 4 << 20;
        assert!(Budget::Droppable.admits(max - 100, 100, max));
        assert!(!Budget::Droppable.admits(max - 100, 101, max));
        assert!(Budget::Reserve.admits(2 * max - 100, 100, max));
        assert!(!Budget::Reserve.admits(2 * max - 100, 101, max));
        // A small queue keeps a reserve of its own.
        assert!(!Budget::Droppable.admits(0, 500, 1));
        assert!(Budget::Reserve.admits(MIN_RESERVE_BYTES, 1, 1));
        assert!(!Budget::Reserve.admits(MIN_RESERVE_BYTES, 2, 1));
        assert!(Budget::Always.admits(usize::MAX, usize::MAX, max));
    }

    #[test]
    fn a_loss_declares_its_range_and_kinds_once() {
        let mut lost = Lost::default();
        assert!(lost.take_event().is_none());
        lost.add(5, Kind::Command);
        lost.add(6, Kind::Security);
        lost.add(7, Kind::Security);
        let Some(AuditEvent::System(event)) = lost.take_event() else { panic!("a loss") };
        assert_eq!(
            event.detail,
            json!({"lost": {"reason": "queue_full", "first_seq": 5, "last_seq": 7, "count": 3,
                            "kinds": {"command": 1, "security": 2}}})
        );
        assert!(lost.take_event().is_none(), "declared once");
    }
}
