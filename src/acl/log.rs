//! The `ACL LOG` the proxy serves, as the Redis behind it answers: entries grouped as Redis
//! groups them, newest first, bounded by `acl.log_max_len`, with `entry-id` and both timestamps
//! from Redis 7.2 on ([`Shape`]), encoded byte for byte as Redis encodes them in RESP2 and RESP3.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::resp::args::string2ll;
use crate::resp::encode::{self, bulk, header, integer, map_header};

/// Events within this many milliseconds of an entry's last update join it.
const GROUPING_WINDOW_MS: i64 = 60_000;
/// How many of the newest entries an event may join.
const GROUPING_SCAN: usize = 10;
/// Entries `ACL LOG` shows without a count.
const DEFAULT_COUNT: usize = 10;

/// One denial or failed authentication, as it enters the log.
#[derive(Debug, Clone)]
pub(crate) struct LogEvent {
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    /// `toplevel` or `multi`.
    pub context: &'static str,
    /// Command full name, key, channel, or the auth command as sent.
    pub object: Bytes,
    /// The user (for auth: the user tried).
    pub username: Bytes,
    /// The client, in `CLIENT LIST` format, with the real client's address.
    pub(crate) client_info: String,
    /// Unix time in milliseconds.
    pub(crate) time_ms: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    count: u64,
    event: LogEvent,
    entry_id: u64,
    created_ms: i64,
}

/// The log: newest entry first.
#[derive(Debug)]
pub(crate) struct AclLog {
    entries: VecDeque<Entry>,
    next_id: u64,
    max_len: usize,
}

impl AclLog {
    /// An empty log keeping at most `max_len` entries.
    pub(crate) fn new(max_len: usize) -> Self {
        Self { entries: VecDeque::new(), next_id: 0, max_len }
    }

    /// Adds an event: it joins a similar recent entry (same reason, context, object and user,
    /// last updated within 60 s, among the 10 newest), or becomes a new entry.
    pub(crate) fn add(&mut self, event: LogEvent) {
        if self.max_len == 0 {
            // Redis 7.4+: nothing is created and no id is used.
            self.entries.clear();
            return;
        }
        let similar = self.entries.iter().take(GROUPING_SCAN).position(|entry| {
            let existing = &entry.event;
            existing.reason == event.reason
                && existing.context == event.context
                && (existing.time_ms - event.time_ms).abs() <= GROUPING_WINDOW_MS
                && existing.object == event.object
                && existing.username == event.username
        });
        if let Some(index) = similar {
            let mut entry = self.entries.remove(index).expect("index from position");
            entry.count += 1;
            entry.event.client_info = event.client_info;
            entry.event.time_ms = event.time_ms;
            self.entries.push_front(entry);
            return;
        }
        let entry = Entry { count: 1, entry_id: self.next_id, created_ms: event.time_ms, event };
        self.next_id += 1;
        self.entries.push_front(entry);
        self.entries.truncate(self.max_len);
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers `ACL LOG [count|RESET]` (`args` from `ACL` on) at `now_ms`, in RESP3 when
    /// `resp3`, with the fields of the Redis behind (`shape`).
    pub(crate) fn command(
        &mut self,
        args: &[Bytes],
        resp3: bool,
        now_ms: i64,
        shape: Shape,
    ) -> Bytes {
        let count = match args.len() {
            2 => DEFAULT_COUNT,
            3 if args[2].eq_ignore_ascii_case(b"reset") => {
                self.entries.clear();
                return Bytes::from_static(b"+OK\r\n");
            }
            3 => match string2ll(&args[2]) {
                Some(count) => usize::try_from(count).unwrap_or(0),
                None => {
                    return Bytes::from_static(b"-ERR value is not an integer or out of range\r\n")
                }
            },
            _ => {
                return encode::error(&format!(
                    "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
                    String::from_utf8_lossy(&args[1]),
                    String::from_utf8_lossy(&args[0]).to_ascii_uppercase()
                ));
            }
        };
        let count = count.min(self.entries.len());
        let mut out = Vec::with_capacity(64 + count * 512);
        header(&mut out, b'*', count);
        for entry in self.entries.iter().take(count) {
            encode_entry(&mut out, entry, resp3, now_ms, shape);
        }
        Bytes::from(out)
    }
}

/// Which fields an entry has: Redis 7.2 added `entry-id`, `timestamp-created` and
/// `timestamp-last-updated` to the seven of 7.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Redis 6.2 to 7.1: seven fields.
    V7_0,
    /// Redis 7.2 and later, Valkey: ten.
    V7_2,
}

impl Shape {
    /// The shape of a `redis_version` (`7.0.15`); the newest for anything unreadable.
    pub(crate) fn of_version(version: &str) -> Self {
        match crate::acl::policy::Wording::of_version(version) {
            crate::acl::policy::Wording::V7_2 => Self::V7_2,
            _ => Self::V7_0,
        }
    }
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry, resp3: bool, now_ms: i64, shape: Shape) {
    let event = &entry.event;
    map_header(out, if shape == Shape::V7_2 { 10 } else { 7 }, resp3);
    bulk(out, b"count");
    integer(out, entry.count as i64);
    bulk(out, b"reason");
    bulk(out, event.reason.as_bytes());
    bulk(out, b"context");
    bulk(out, event.context.as_bytes());
    bulk(out, b"object");
    bulk(out, &event.object);
    bulk(out, b"username");
    bulk(out, &event.username);
    bulk(out, b"age-seconds");
    // Shortest round-trip form, as Redis 7.2's grisu formatting: `8.038`, `0`, `12.5`.
    let age = format!("{}", (now_ms - event.time_ms) as f64 / 1000.0);
    if resp3 {
        out.extend_from_slice(format!(",{age}\r\n").as_bytes());
    } else {
        bulk(out, age.as_bytes());
    }
    bulk(out, b"client-info");
    bulk(out, event.client_info.as_bytes());
    if shape == Shape::V7_0 {
        return;
    }
    bulk(out, b"entry-id");
    integer(out, entry.entry_id as i64);
    bulk(out, b"timestamp-created");
    integer(out, entry.created_ms);
    bulk(out, b"timestamp-last-updated");
    integer(out, event.time_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(object: &str, time_ms: i64) -> LogEvent {
        LogEvent {
            reason: "command",
            context: "toplevel",
            object: Bytes::copy_from_slice(object.as_bytes()),
            username: Bytes::from_static(b"alice"),
            client_info: format!("id=1 cmd={object}"),
            time_ms,
        }
    }

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn grouping_ids_and_order() {
        let mut log = AclLog::new(128);
        log.add(event("get", 1_000));
        log.add(event("set", 2_000));
        log.add(event("get", 30_000));
        assert_eq!(log.len(), 2, "the second get joined the first");
        let front = &log.entries[0];
        assert_eq!((front.count, front.entry_id, front.created_ms), (2, 0, 1_000));
        assert_eq!(front.event.time_ms, 30_000);
        log.add(event("get", 90_001));
        assert_eq!(log.entries[0].count, 1, "more than 60 s after the last update: new entry");
        assert_eq!(log.entries[0].entry_id, 2);
        for i in 0..11 {
            log.add(event(&format!("c{i}"), 90_002));
        }
        log.add(event("get", 90_003));
        assert_eq!(log.entries[0].entry_id, 14, "only the 10 newest entries are scanned");
        // At today's clock: 5 s apart is within the window.
        let mut log = AclLog::new(128);
        log.add(event("get", 1_675_361_484_370));
        log.add(event("get", 1_675_361_489_370));
        assert_eq!((log.len(), log.entries[0].count), (1, 2));
    }

    #[test]
    fn bounded_and_zero_length() {
        let mut log = AclLog::new(2);
        for i in 0..5 {
            log.add(event(&format!("c{i}"), 0));
        }
        assert_eq!(log.len(), 2);
        let mut none = AclLog::new(0);
        none.add(event("get", 0));
        assert!(none.is_empty());
        assert_eq!(none.next_id, 0);
    }

    #[test]
    fn replies_as_redis_writes_them() {
        let mut log = AclLog::new(128);
        log.add(event("get", 1_675_361_484_370));
        let now = 1_675_361_492_408;
        let reply = log.command(&args(&["ACL", "LOG"]), false, now, Shape::V7_2);
        let expected = "*1\r\n*20\r\n$5\r\ncount\r\n:1\r\n$6\r\nreason\r\n$7\r\ncommand\r\n\
            $7\r\ncontext\r\n$8\r\ntoplevel\r\n$6\r\nobject\r\n$3\r\nget\r\n$8\r\nusername\r\n\
            $5\r\nalice\r\n$11\r\nage-seconds\r\n$5\r\n8.038\r\n$11\r\nclient-info\r\n\
            $12\r\nid=1 cmd=get\r\n$8\r\nentry-id\r\n:0\r\n$17\r\ntimestamp-created\r\n\
            :1675361484370\r\n$22\r\ntimestamp-last-updated\r\n:1675361484370\r\n";
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        let resp3 = log.command(&args(&["acl", "log", "5"]), true, now, Shape::V7_2);
        assert!(resp3.starts_with(b"*1\r\n%10\r\n"));
        assert!(memchr::memmem::find(&resp3, b",8.038\r\n").is_some());
        assert_eq!(
            &log.command(&args(&["ACL", "LOG", "-1"]), false, now, Shape::V7_2)[..],
            b"*0\r\n"
        );
        assert_eq!(
            &log.command(&args(&["ACL", "LOG", "+1"]), false, now, Shape::V7_2)[..],
            b"-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(
            &log.command(&args(&["acl", "log", "1", "2"]), false, now, Shape::V7_2)[..],
            b"-ERR unknown subcommand or wrong number of arguments for 'log'. Try ACL HELP.\r\n"
        );
        assert_eq!(
            &log.command(&args(&["ACL", "LOG", "reset"]), false, now, Shape::V7_2)[..],
            b"+OK\r\n"
        );
        assert_eq!(&log.command(&args(&["ACL", "LOG"]), false, now, Shape::V7_2)[..], b"*0\r\n");
    }
}
