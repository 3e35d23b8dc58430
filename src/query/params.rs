//! The parameters of an audit query, validated as `DescribeAuditRecords` validates them
//! (its error codes), from HTTP query parameters or from `audit query` flags.

use std::collections::HashMap;

use serde_json::Value;

use crate::audit::index::{line_time, FACETS};
use crate::command::Class;

/// A refused parameter: the seed's error code and message (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParamError {
    /// `InvalidStartTime.Malformed`, ...
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> ParamError {
    ParamError { code, message: message.into() }
}

/// Longest time range one query may cover (the seed: "not longer than one day").
const MAX_RANGE_SECONDS: i64 = 86_400;

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// `StartTime` as given (echoed in the response).
    pub(crate) start_text: String,
    /// `EndTime` as given.
    pub(crate) end_text: String,
    start: Option<String>,
    end: Option<String>,
    user: Option<String>,
    host: Option<String>,
    db: Option<u64>,
    keyword: Option<String>,
    class: Option<Class>,
    status: Option<String>,
    node: Option<String>,
    /// Records per page: 30, 50 or 100.
    pub page_size: u32,
    /// Page, from 1.
    pub page_number: u32,
    /// What each filter besides time looks like in a command line (the field's prefix as the
    /// index knows it, then the value's JSON text), made once for every line scanned.
    needles: Vec<Vec<u8>>,
    /// The node filter's needle, apart: a `redis-audit/2` line does not name its node (its
    /// file does, see [`Self::node_matches`]).
    node_needle: Option<Vec<u8>>,
}

/// `yyyy-MM-ddTHH:mm:ssZ` (or `yyyy-MM-ddTHH:mmZ`) as seconds since the epoch, and the
/// RFC 3339 µs bounds the trail's `time` compares with.
fn parse_time(text: &str) -> Option<(i64, String)> {
    let body = text.strip_suffix('Z')?;
    let (date, clock) = body.split_once('T')?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let mut clock_parts = clock.split(':');
    let hour: u32 = clock_parts.next()?.parse().ok()?;
    let minute: u32 = clock_parts.next()?.parse().ok()?;
    let second: u32 = match clock_parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    let shapes_ok = date.len() == 10 && (clock.len() == 8 || clock.len() == 5);
    if !shapes_ok || date_parts.next().is_some() || clock_parts.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days_in_month = match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    // Days from civil (H. Hinnant).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(m) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    let bound = format!("{date}T{hour:02}:{minute:02}:{second:02}");
    Some((seconds, bound))
}

impl AuditQuery {
    /// From `DescribeAuditRecords` parameters (`StartTime` and `EndTime` required).
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ParamError> {
        let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let start = get("StartTime").ok_or_else(|| {
            refuse("InvalidStartTime.Malformed", "The Specified parameter StartTime is not valid.")
        })?;
        let end = get("EndTime").ok_or_else(|| {
            refuse("InvalidEndTime.Malformed", "The Specified parameter EndTime is not valid.")
        })?;
        Self::new(
            Some(start),
            Some(end),
            get("AccountName"),
            get("HostAddress"),
            get("DatabaseName"),
            get("QueryKeywords"),
            get("SQLType"),
            get("NodeId"),
            get("PageSize"),
            get("PageNumber"),
            true,
        )?
        .with_status(get("Status"))
    }

    /// Only records with this `result.status` (`ok`, `error`, `queued`, `skipped`,
    /// `unanswered`): the one filter beyond Tair's, which the files' indexes do not count.
    pub fn with_status(mut self, status: Option<&str>) -> Result<Self, ParamError> {
        let Some(status) = status else { return Ok(self) };
        if !matches!(status, "ok" | "error" | "queued" | "skipped" | "unanswered") {
            return Err(refuse(
                "InvalidStatus.Malformed",
                "Status is one of ok, error, queued, skipped, unanswered.",
            ));
        }
        self.needles.push(format!("\"result\":{{\"status\":\"{status}\"").into_bytes());
        self.status = Some(status.to_owned());
        Ok(self)
    }

    /// Whether a file's index can count this query's matches (it has no `result.status`).
    pub(crate) fn index_counts(&self) -> bool {
        self.status.is_none()
    }

    /// Only a time range (either end open), no other filter and no one-day limit: what
    /// `audit report`, `audit suggest-acl` and `GET /api/v1/report` read.
    pub fn range(start: Option<&str>, end: Option<&str>) -> Result<Self, ParamError> {
        Self::new(start, end, None, None, None, None, None, None, None, None, false)
    }

    /// From any source; `bounded` applies the one-day limit (the API's; the CLI has none).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        start: Option<&str>,
        end: Option<&str>,
        user: Option<&str>,
        host: Option<&str>,
        db: Option<&str>,
        keyword: Option<&str>,
        class: Option<&str>,
        node: Option<&str>,
        page_size: Option<&str>,
        page_number: Option<&str>,
        bounded: bool,
    ) -> Result<Self, ParamError> {
        let start_time = start
            .map(|t| {
                parse_time(t).ok_or_else(|| {
                    refuse(
                        "InvalidStartTime.Malformed",
                        "The Specified parameter StartTime is not valid.",
                    )
                })
            })
            .transpose()?;
        let end_time = end
            .map(|t| parse_time(t).ok_or_else(|| refuse("InvalidEndTime.Malformed", "The Specified parameter EndTime is not valid. Specify the time in the yyyy-MM-ddTHH:mm:ssZ format, in UTC.")))
            .transpose()?;
        if let (Some((from, _)), Some((to, _))) = (&start_time, &end_time) {
            if to <= from {
                return Err(refuse(
                    "InvalidEndTime.Malformed",
                    "The end time must be later than the start time.",
                ));
            }
            if bounded && to - from > MAX_RANGE_SECONDS {
                return Err(refuse(
                    "InvalidEndTime.Malformed",
                    "The time range must not be longer than one day.",
                ));
            }
        }
        let page_size = match page_size {
            None => 30,
            Some(text) => match text.parse::<u32>() {
                Ok(size @ (30 | 50 | 100)) => size,
                _ => {
                    return Err(refuse(
                        "InvalidPageSize.Malformed",
                        "The specified parameter PageSize is not valid.",
                    ))
                }
            },
        };
        let page_number = match page_number {
            None => 1,
            Some(text) => match text.parse::<u32>() {
                Ok(number) if number >= 1 => number,
                _ => {
                    return Err(refuse(
                        "InvalidPageNumbers.Malformed",
                        "Specified page number is not valid.",
                    ))
                }
            },
        };
        let db = match db {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(db) if db <= 255 => Some(db),
                _ => {
                    return Err(refuse(
                        "InvalidDatabaseName.Malformed",
                        "The specified parameter DatabaseName is not valid: 0 to 255.",
                    ))
                }
            },
        };
        let class = match class.map(|name| Class::from_name(name).ok_or(name)) {
            None => None,
            Some(Ok(class)) => Some(class),
            Some(Err(_)) => {
                let names: Vec<&str> = Class::ALL.iter().map(|class| class.as_str()).collect();
                return Err(refuse(
                    "InvalidSQLType.Malformed",
                    format!("SQLType is one of {}.", names.join(", ")),
                ));
            }
        };
        if keyword.is_some_and(|k| k.split_whitespace().count() > 1) {
            return Err(refuse(
                "InvalidQueryKeywords.Malformed",
                "Specify a single command as the keyword.",
            ));
        }
        let mut query = Self {
            start_text: start.unwrap_or_default().to_owned(),
            end_text: end.unwrap_or_default().to_owned(),
            start: start_time.map(|(_, bound)| format!("{bound}.000000Z")),
            end: end_time.map(|(_, bound)| format!("{bound}.999999Z")),
            user: user.map(str::to_owned),
            host: host.map(str::to_owned),
            db,
            keyword: keyword.map(|k| k.trim().to_ascii_lowercase()),
            class,
            node: node.map(str::to_owned),
            status: None,
            page_size,
            page_number,
            needles: Vec::new(),
            node_needle: None,
        };
        query.needles = query
            .facet_filters()
            .into_iter()
            .map(|(facet, value)| {
                let prefix =
                    FACETS.iter().find(|(name, _)| *name == facet).map_or(&b""[..], |f| f.1);
                let mut needle = [prefix, value.as_bytes()].concat();
                if facet == "db" {
                    needle.push(b','); // a number: `"db":1` must not match `"db":12`
                }
                (facet, needle)
            })
            .filter_map(|(facet, needle)| {
                if facet == "node" {
                    query.node_needle = Some(needle);
                    return None;
                }
                Some(needle)
            })
            .collect();
        Ok(query)
    }

    /// True when a record's `time` is inside the range.
    pub fn contains(&self, time: &str) -> bool {
        self.start.as_deref().is_none_or(|start| time >= start)
            && self.end.as_deref().is_none_or(|end| time <= end)
    }

    /// True when `[first, last]` meets the range.
    pub(crate) fn overlaps(&self, first: &str, last: &str) -> bool {
        self.start.as_deref().is_none_or(|start| last >= start)
            && self.end.as_deref().is_none_or(|end| first <= end)
    }

    /// Filters other than time.
    pub(crate) fn has_field_filters(&self) -> bool {
        self.user.is_some()
            || self.host.is_some()
            || self.db.is_some()
            || self.keyword.is_some()
            || self.class.is_some()
            || self.node.is_some()
            || self.status.is_some()
    }

    /// With exactly one filter besides time: the index field it is on and the value's JSON
    /// text, so a file's index can count the matches.
    pub(crate) fn single_facet(&self) -> Option<(&'static str, String)> {
        let mut filters = self.facet_filters();
        (filters.len() == 1).then(|| filters.remove(0))
    }

    /// Every filter besides time, as (index field, the value's JSON text).
    pub(crate) fn facet_filters(&self) -> Vec<(&'static str, String)> {
        let string = |v: &str| Value::String(v.to_owned()).to_string();
        [
            self.user.as_deref().map(|u| ("user", string(u))),
            self.host.as_deref().map(|h| ("ip", string(h))),
            self.db.map(|db| ("db", db.to_string())),
            self.keyword.as_deref().map(|k| ("command", string(k))),
            self.class.map(|c| ("class", string(c.as_str()))),
            self.node.as_deref().map(|n| ("node", string(n))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The test on a raw command line, exact for the writer's lines: each filtered field
    /// occurs once in a command record, and JSON strings cannot hide a bare quote, so the
    /// field and its whole value match only where they are.
    ///
    /// `v2`: the line is of a `redis-audit/2` file, whose node [`Self::node_matches`] checked.
    pub fn line_matches(&self, line: &[u8], v2: bool) -> bool {
        if !super::contains(line, b"\"kind\":\"command\"") {
            return false;
        }
        if !line_time(line).is_some_and(|time| self.contains(time)) {
            return false;
        }
        self.needles.iter().all(|needle| super::contains(line, needle))
            && (v2 || self.node_needle.as_ref().is_none_or(|needle| super::contains(line, needle)))
    }

    /// Whether a file's node (its `file_open`'s, in `redis-audit/2`) passes the node filter.
    pub(crate) fn node_matches(&self, node: &serde_json::Value) -> bool {
        self.node.as_deref().is_none_or(|wanted| node.as_str() == Some(wanted))
    }
}

/// The admin API's query string: `a=b&c=d` with percent-decoding (and `+` as a space); later
/// duplicates win.
pub fn parse_query_string(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Percent-decoding as query strings use it (`+` is a space; a bad escape stays as it is;
/// bytes that are not UTF-8 become U+FFFD).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(at + 1).and_then(hex), bytes.get(at + 2).and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    at += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hexadecimal digit (`u8::from_str_radix` would also take a sign, so
/// `%+1` would decode).
fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn code(pairs: &[(&str, &str)]) -> &'static str {
        AuditQuery::from_params(&params(pairs)).unwrap_err().code
    }

    #[test]
    fn the_seeds_error_codes() {
        let range = [("StartTime", "2026-11-22T00:00:00Z"), ("EndTime", "2026-11-22T00:10:00Z")];
        assert!(AuditQuery::from_params(&params(&range)).is_ok());
        assert_eq!(code(&[("EndTime", "2026-11-22T00:10:00Z")]), "InvalidStartTime.Malformed");
        assert_eq!(
            code(&[("StartTime", "2026-11-22 00:00:00"), range[1]]),
            "InvalidStartTime.Malformed"
        );
        assert_eq!(
            code(&[range[0], ("EndTime", "2026-13-01T00:00:00Z")]),
            "InvalidEndTime.Malformed"
        );
        assert_eq!(
            code(&[range[1], ("StartTime", "2026-11-22T00:20:00Z")]),
            "InvalidEndTime.Malformed"
        );
        assert_eq!(
            code(&[range[0], ("EndTime", "2026-11-23T00:00:01Z")]),
            "InvalidEndTime.Malformed"
        );
        assert_eq!(code(&[range[0], range[1], ("PageSize", "20")]), "InvalidPageSize.Malformed");
        assert_eq!(
            code(&[range[0], range[1], ("PageNumber", "0")]),
            "InvalidPageNumbers.Malformed"
        );
        assert_eq!(
            code(&[range[0], range[1], ("PageNumber", "x")]),
            "InvalidPageNumbers.Malformed"
        );
        assert_eq!(
            code(&[range[0], range[1], ("DatabaseName", "256")]),
            "InvalidDatabaseName.Malformed"
        );
        assert_eq!(code(&[range[0], range[1], ("SQLType", "admin")]), "InvalidSQLType.Malformed");
        let minutes = [("StartTime", "2026-11-22T00:00Z"), ("EndTime", "2026-11-22T00:10Z")];
        assert!(AuditQuery::from_params(&params(&minutes)).is_ok(), "yyyy-MM-ddTHH:mmZ too");
    }

    #[test]
    fn bounds_compare_with_the_trails_times() {
        let q = AuditQuery::from_params(&params(&[
            ("StartTime", "2026-11-22T04:56:13Z"),
            ("EndTime", "2026-11-22T04:56:14Z"),
        ]))
        .unwrap();
        assert!(q.contains("2026-11-22T04:56:13.000000Z"));
        assert!(q.contains("2026-11-22T04:56:14.999999Z"));
        assert!(!q.contains("2026-11-22T04:56:12.999999Z"));
        assert!(!q.contains("2026-11-22T04:56:15.000000Z"));
        assert_eq!(parse_time("1970-01-02T00:00:00Z").map(|(s, _)| s), Some(86_400));
        assert_eq!(parse_time("2026-02-29T00:00:00Z"), None, "not a leap year");
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        let params =
            parse_query_string("StartTime=2026-11-22T00%3A00%3A00Z&AccountName=a+b&x=%zz&flag");
        assert_eq!(params["StartTime"], "2026-11-22T00:00:00Z");
        assert_eq!(params["AccountName"], "a b");
        assert_eq!(params["x"], "%zz", "a bad escape stays as it is");
        assert_eq!(params["flag"], "");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41%4a%4A"), "AJJ");
        // A sign is not a digit: `%+1` is not byte 1 (the `+` is then a space, as everywhere).
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(percent_decode("%-1%1"), "%-1%1");
    }
}
