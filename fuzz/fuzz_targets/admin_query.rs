//! Fuzz target: the admin plane's query-string parser and the parameters it feeds
//! (`AuditQuery::from_params`, `Paging::from_params`), and the query's test on a trail line.
//!
//! Properties: pairs percent-encoded and joined parse back to themselves (later duplicates
//! win); any query string parses without panic; `Paging` accepts exactly what its contract
//! says; and for a query that validates, `line_matches` on a command line carrying fuzzed
//! values (other fields too, to try to fake a match) is true exactly when the values equal
//! the filters — the line is a real command line of the fixture trail with its values
//! replaced, rendered by serde_json as the writer's lines are.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::query::logs::Paging;
use redis_audit_proxy::query::params::{parse_query_string, AuditQuery};
use redis_audit_proxy_fuzz::Choices;
use serde_json::{json, Value};

/// A command line of the fixture trail, as JSON.
fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/trail");
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|value| value["kind"] == "command")
            .expect("a command line in the fixture")
    })
}

fn encode(text: &str, plus_for_space: bool) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        match b {
            b' ' if plus_for_space => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A short string from a small alphabet, so that filters and values often coincide.
fn word(c: &mut Choices<'_>) -> String {
    const ALPHABET: &[char] =
        &['a', 'b', 'A', ' ', '"', '\\', ':', ',', '{', 'é', '\u{0}', '1', '.'];
    (0..c.below(4)).map(|_| ALPHABET[c.below(ALPHABET.len())]).collect()
}

fn round_trip(c: &mut Choices<'_>) {
    let mut expected = HashMap::new();
    let mut parts = Vec::new();
    for _ in 0..c.below(6) {
        let (name, value) = (word(c), word(c));
        let plus = c.below(2) == 0;
        parts.push(format!("{}={}", encode(&name, plus), encode(&value, plus)));
        expected.insert(name, value);
    }
    assert_eq!(parse_query_string(&parts.join("&")), expected, "{parts:?}");
}

fn paging(params: &HashMap<String, String>) {
    let number =
        |name: &str, default: u64| params.get(name).map_or(Some(default), |t| t.parse().ok());
    let valid = matches!((number("offset", 0), number("limit", 100)), (Some(_), Some(1..=1000)));
    assert_eq!(Paging::from_params(params).is_ok(), valid, "{params:?}");
}

fn line_matches(c: &mut Choices<'_>) {
    const TIMES: [&str; 4] = [
        "2026-11-22T00:00:00Z",
        "2026-11-22T00:05Z",
        "2026-11-22T00:10:00Z",
        "2026-11-23T00:00:00Z",
    ];
    let mut params = HashMap::new();
    params.insert("StartTime".to_owned(), TIMES[c.below(2)].to_owned());
    params.insert("EndTime".to_owned(), TIMES[2 + c.below(2)].to_owned());
    let filters =
        ["AccountName", "HostAddress", "DatabaseName", "QueryKeywords", "SQLType", "NodeId"];
    for name in filters {
        if c.below(2) == 0 {
            let value = match (name, c.below(3)) {
                ("DatabaseName", 0) => "1".to_owned(),
                ("SQLType", 0) => "write".to_owned(),
                _ => word(c),
            };
            params.insert(name.to_owned(), value);
        }
    }
    let Ok(query) = AuditQuery::from_params(&params) else { return };
    let mut record = template().clone();
    let (user, ip, name, class, node) = (word(c), word(c), word(c), word(c), word(c));
    let db = c.below(3) as u64;
    let minute = c.below(20);
    record["time"] = json!(format!("2026-11-22T00:{minute:02}:00.000000Z"));
    record["user"] = json!(user);
    record["client"]["ip"] = json!(ip);
    record["db"] = json!(db);
    record["command"]["name"] = json!(name);
    record["command"]["class"] = json!(class);
    record["node"] = json!(node);
    // Other client-chosen strings, which must never fake a filter's match.
    record["client"]["name"] = json!(format!("\"user\":{}", json!(word(c))));
    let line = serde_json::to_vec(&record).unwrap();
    let get = |key: &str| params.get(key).filter(|v| !v.is_empty());
    let in_range = (get("StartTime").unwrap() == TIMES[0] || minute >= 5)
        && (get("EndTime").unwrap() == TIMES[3] || minute <= 10);
    let expected = in_range
        && get("AccountName").is_none_or(|v| *v == user)
        && get("HostAddress").is_none_or(|v| *v == ip)
        && get("DatabaseName").is_none_or(|v| v.parse::<u64>() == Ok(db))
        && get("QueryKeywords").is_none_or(|v| v.trim().to_ascii_lowercase() == name)
        && get("SQLType").is_none_or(|v| *v == class)
        && get("NodeId").is_none_or(|v| *v == node);
    assert_eq!(
        query.line_matches(&line, false),
        expected,
        "{params:?} on {}",
        String::from_utf8_lossy(&line)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => round_trip(&mut Choices::new(rest)),
        1 => {
            let params = parse_query_string(&String::from_utf8_lossy(rest));
            paging(&params);
            let _ = AuditQuery::from_params(&params);
        }
        _ => line_matches(&mut Choices::new(rest)),
    }
});
