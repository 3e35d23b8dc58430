//! The scripts of the differential transparency suite (run by [`crate::differential`]).
//!
//! A [`Script`] is a sequence of [`Step`]s on one or more connections. The runner plays it
//! against a real redis-server directly and through the proxy and compares what every
//! connection received. Scripts are grouped by topic; each group runs in its own test with its
//! own redis-server. Every script must be deterministic against a real Redis: multi-connection
//! interleavings are sequenced with sentinels (`sync`), `wait_for` and `wait_blocked`, never
//! with sleeps alone.

use crate::support::client::encode_command;
use crate::support::rng::Rng;

/// One thing the runner does.
#[derive(Clone)]
pub enum Step {
    /// Writes `bytes` on `conn`, in separate writes cut at `splits` (offsets into `bytes`).
    Send { conn: usize, bytes: Vec<u8>, splits: Vec<usize> },
    /// Writes `build(id)` on `conn`, `id` being the client id learned on `id_of`.
    SendWithId { conn: usize, id_of: usize, build: fn(u64) -> Vec<u8> },
    /// Sends `CLIENT ID` on `conn` and remembers the id (its reply is normalised).
    LearnId(usize),
    /// Sends `ECHO token` (or `PING token`, for RESP2 subscribed mode) on `conn` and reads
    /// until its reply arrived: everything sent before on `conn` has been answered.
    Sync { conn: usize, ping: bool, token: String },
    /// Reads on `conn` until `pattern` arrived (searched after the previous wait's match).
    WaitFor { conn: usize, pattern: Vec<u8> },
    /// Polls Redis (on the admin connection) until this many clients are blocked.
    WaitBlocked(u64),
    /// Sleeps this many milliseconds.
    Sleep(u64),
    /// Reads on `conn` until nothing new arrived for a quiet period.
    Quiet(usize),
    /// Reads on `conn` until the peer closes it.
    Closes(usize),
}

impl Step {
    /// A one-line description for failure messages (never the whole payload).
    pub fn describe(&self) -> String {
        match self {
            Self::Send { conn, bytes, splits } => {
                let shown: Vec<u8> = bytes.iter().copied().take(60).collect();
                let more = if bytes.len() > 60 { "..." } else { "" };
                format!(
                    "send on {conn} ({} bytes, {} cuts): \"{}\"{more}",
                    bytes.len(),
                    splits.len(),
                    shown.escape_ascii()
                )
            }
            Self::SendWithId { conn, id_of, build } => {
                format!("send on {conn} with the id of {id_of}: \"{}\"", build(0).escape_ascii())
            }
            Self::LearnId(conn) => format!("CLIENT ID on {conn}"),
            Self::Sync { conn, ping, token } => {
                let verb = if *ping { "PING" } else { "ECHO" };
                format!("sync on {conn} ({verb} {token})")
            }
            Self::WaitFor { conn, pattern } => {
                format!("wait on {conn} for \"{}\"", pattern.escape_ascii())
            }
            Self::WaitBlocked(count) => format!("wait for {count} blocked clients"),
            Self::Sleep(ms) => format!("sleep {ms} ms"),
            Self::Quiet(conn) => format!("read on {conn} until quiet"),
            Self::Closes(conn) => format!("read on {conn} until closed"),
        }
    }
}

/// A named byte script; built with the methods below.
#[derive(Clone)]
pub struct Script {
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// Patterns the direct stream of a connection must contain: proof that the script
    /// exercises what its name says, whatever the proxy does.
    pub expects: Vec<(usize, Vec<u8>)>,
    syncs: usize,
}

impl Script {
    pub fn new(name: &'static str) -> Self {
        Self { name, steps: Vec::new(), expects: Vec::new(), syncs: 0 }
    }

    /// How many connections the script uses.
    pub fn connections(&self) -> usize {
        let highest = self.steps.iter().map(|step| match step {
            Step::Send { conn, .. }
            | Step::SendWithId { conn, .. }
            | Step::Sync { conn, .. }
            | Step::WaitFor { conn, .. } => *conn,
            Step::LearnId(conn) | Step::Quiet(conn) | Step::Closes(conn) => *conn,
            Step::WaitBlocked(_) | Step::Sleep(_) => 0,
        });
        highest.max().unwrap_or(0) + 1
    }

    fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Sends on connection 0 in one write.
    pub fn send(self, bytes: impl AsRef<[u8]>) -> Self {
        self.send_on(0, bytes)
    }

    pub fn send_on(self, conn: usize, bytes: impl AsRef<[u8]>) -> Self {
        self.send_split(conn, bytes, Vec::new())
    }

    /// Sends in several writes, cut at `splits`.
    pub fn send_split(self, conn: usize, bytes: impl AsRef<[u8]>, splits: Vec<usize>) -> Self {
        self.step(Step::Send { conn, bytes: bytes.as_ref().to_vec(), splits })
    }

    pub fn send_with_id(self, conn: usize, id_of: usize, build: fn(u64) -> Vec<u8>) -> Self {
        self.step(Step::SendWithId { conn, id_of, build })
    }

    pub fn learn_id(self, conn: usize) -> Self {
        self.step(Step::LearnId(conn))
    }

    /// `ECHO sync:N` on connection 0.
    pub fn sync(self) -> Self {
        self.sync_on(0)
    }

    pub fn sync_on(self, conn: usize) -> Self {
        self.sentinel(conn, false)
    }

    /// `PING sync:N`: the sentinel that works in RESP2 subscribed mode.
    pub fn ping_sync_on(self, conn: usize) -> Self {
        self.sentinel(conn, true)
    }

    fn sentinel(mut self, conn: usize, ping: bool) -> Self {
        self.syncs += 1;
        let token = format!("sync:{}", self.syncs);
        self.step(Step::Sync { conn, ping, token })
    }

    /// Waits on `monitor` until the MONITOR line of the last sentinel arrived.
    pub fn wait_monitored_sync(self, monitor: usize) -> Self {
        let pattern = format!("\"sync:{}\"\r\n", self.syncs).into_bytes();
        self.wait_for(monitor, pattern)
    }

    pub fn wait_for(self, conn: usize, pattern: impl AsRef<[u8]>) -> Self {
        self.step(Step::WaitFor { conn, pattern: pattern.as_ref().to_vec() })
    }

    pub fn wait_blocked(self, count: u64) -> Self {
        self.step(Step::WaitBlocked(count))
    }

    pub fn sleep(self, ms: u64) -> Self {
        self.step(Step::Sleep(ms))
    }

    pub fn quiet(self, conn: usize) -> Self {
        self.step(Step::Quiet(conn))
    }

    pub fn closes(self, conn: usize) -> Self {
        self.step(Step::Closes(conn))
    }

    /// The direct stream of `conn` must contain `pattern`.
    pub fn expect(mut self, conn: usize, pattern: impl AsRef<[u8]>) -> Self {
        self.expects.push((conn, pattern.as_ref().to_vec()));
        self
    }
}

/// One multibulk command.
pub fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode_command(&args)
}

/// One multibulk command with binary arguments.
pub fn bcmd(args: &[&[u8]]) -> Vec<u8> {
    encode_command(args)
}

/// Several multibulk commands, concatenated.
pub fn cmds(list: &[&[&str]]) -> Vec<u8> {
    list.iter().flat_map(|args| cmd(args)).collect()
}

/// `count` distinct cut points in `1..len`, sorted.
pub fn random_splits(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut cuts: Vec<usize> = (0..count).map(|_| 1 + rng.below(len - 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Cut points at the awkward places of a RESP byte stream: between `\r` and `\n`, right
/// after a `*` or `$` (inside a length), and in the middle of a length or a payload; about
/// `count` of them, picked pseudo-randomly.
pub fn awkward_splits(bytes: &[u8], count: usize, seed: u64) -> Vec<usize> {
    let candidates: Vec<usize> = (1..bytes.len())
        .filter(|&at| {
            bytes[at - 1] == b'\r'
                || matches!(bytes[at - 1], b'*' | b'$')
                || (bytes[at - 1].is_ascii_digit() && bytes[at].is_ascii_digit())
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut cuts: Vec<usize> = (0..count).map(|_| *rng.pick(&candidates)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Every offset: one write per byte.
pub fn every_byte(bytes: &[u8]) -> Vec<usize> {
    (1..bytes.len()).collect()
}

/// `count` pseudo-random bytes.
pub fn random_bytes(count: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).fill(count)
}

/// Every byte value once, 0 to 255.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

/// 1,000 commands of mixed kinds (multibulk and inline, replies of every RESP2 type,
/// errors included).
pub fn thousand_commands() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let key = format!("key:{}", i % 37);
        let list = format!("list:{}", i % 3);
        let value = format!("value-{i}");
        let number = i.to_string();
        let part = match i % 10 {
            0 => cmd(&["SET", &key, &value]),
            1 => cmd(&["GET", &key]),
            2 => cmd(&["INCR", &format!("counter:{}", i % 5)]),
            3 => cmd(&["RPUSH", &list, &number]),
            4 => format!("ECHO \"inline {i}\"\r\n").into_bytes(),
            5 => cmd(&["LRANGE", &list, "-3", "-1"]),
            6 => cmd(&["HSET", "hash", &key, &number]),
            7 => cmd(&["INCR", &key]),
            8 => format!("EXISTS {key} nokey\r\n").into_bytes(),
            _ => cmd(&["GET", "missing"]),
        };
        out.extend_from_slice(&part);
    }
    out
}

/// Inline commands: quoting, escapes, odd line ends, mixed with multibulk.
pub fn inline() -> Vec<Script> {
    let long_arg = "a".repeat(60_000);
    let mut nul_then_big = b"GET a\x00b\r\nPING\r\n".to_vec();
    nul_then_big.resize(64 * 1024 + 1, b'x');
    vec![
        Script::new("inline_basic")
            .send("PING\r\nSET k v\r\nGET k\r\nECHO hello\r\nPING hi\r\n")
            .sync()
            .expect(0, "+PONG\r\n+OK\r\n$1\r\nv\r\n"),
        Script::new("inline_double_quote_escapes")
            .send("SET k \"a\\x41\\n\\t\\r\\\"q\\\\\"\r\nGET k\r\nSTRLEN k\r\nECHO \"\\x4g\\q\\b\\a\"\r\n")
            .sync()
            .expect(0, "aA\n\t\r\"q\\"),
        Script::new("inline_single_quotes")
            .send("SET k 'it\\'s'\r\nGET k\r\nSET k2 'a\\nb \"c\"'\r\nGET k2\r\nECHO ''\r\n")
            .sync()
            .expect(0, "it's"),
        Script::new("inline_quoted_empty_and_adjacent")
            .send("SET k \"\"\r\nSTRLEN k\r\nECHO foo\"bar baz\"\r\nECHO \"\"\r\n")
            .sync()
            .expect(0, "foobar baz"),
        Script::new("inline_unbalanced_double_quote")
            .send("PING\r\nSET k \"abc\r\nPING\r\n")
            .closes(0)
            .expect(0, "unbalanced quotes"),
        Script::new("inline_unbalanced_single_quote")
            .send("SET a 1\r\nSET k 'abc\r\nGET a\r\n")
            .closes(0)
            .expect(0, "unbalanced quotes"),
        Script::new("inline_closing_quote_followed_by_text")
            .send("ECHO ok\r\nSET k \"a\"b\r\n")
            .closes(0)
            .expect(0, "unbalanced quotes"),
        Script::new("inline_empty_and_blank_lines")
            .send("\r\n\r\n   \r\n\t\r\n\nPING\r\n\n\n  \t  \nECHO x\r\n\r\n")
            .sync()
            .expect(0, "+PONG\r\n$1\r\nx\r\n"),
        Script::new("inline_lf_without_cr")
            .send("PING\nSET k v\nGET k\nECHO \"a b\"\nPING\r\n")
            .sync()
            .expect(0, "$3\r\na b\r\n"),
        Script::new("inline_tabs_and_vertical_space")
            .send("SET\tk\t v\r\nGET\tk\r\nECHO a\x0bb\r\nECHO x\ry\r\n")
            .sync()
            .expect(0, "$1\r\nv\r\n"),
        Script::new("inline_mixed_with_multibulk")
            .send(
                [
                    cmd(&["SET", "k", "1"]),
                    b"INCR k\r\n".to_vec(),
                    cmd(&["GET", "k"]),
                    b"  GET   k  \r\n\r\n".to_vec(),
                    cmd(&["ECHO", "multi bulk"]),
                    b"ECHO \"in line\"\n".to_vec(),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "$10\r\nmulti bulk\r\n$7\r\nin line\r\n"),
        Script::new("inline_hex_escapes_binary")
            .send("SET k \"\\x00\\xff\\x80\\x0d\\x0a\"\r\nGET k\r\nSTRLEN k\r\n")
            .sync()
            .expect(0, ":5\r\n"),
        Script::new("inline_unknown_command_and_arity")
            .send("FOOBAR a \"b c\" 'd'\r\nGET\r\nSET k\r\nfoobar\r\n")
            .sync()
            .expect(0, "-ERR unknown command 'FOOBAR'"),
        Script::new("inline_long_line_under_the_limit")
            .send(format!("ECHO {long_arg}\r\nPING\r\n"))
            .sync()
            .expect(0, "$60000\r\n"),
        Script::new("inline_exactly_at_the_limit_then_newline")
            .send(format!("ECHO {}", "b".repeat(64 * 1024 - 5)))
            .sleep(50)
            .send("\r\n")
            .sync()
            .expect(0, "$65531\r\n"),
        Script::new("inline_nul_hides_the_line_end")
            .send("PING\r\nPING\x00\r\nPING\r\n")
            .wait_for(0, "+PONG\r\n")
            .quiet(0)
            .expect(0, "+PONG\r\n"),
        Script::new("inline_nul_then_too_big")
            .send(nul_then_big)
            .closes(0)
            .expect(0, "too big inline request"),
        Script::new("inline_cr_inside_line")
            .send("PING\rPING\r\nECHO a\rb\r\n")
            .sync()
            .expect(0, "$4\r\nPING\r\n"),
    ]
}

/// Every protocol error Redis produces from client input, and the quirks next to them.
pub fn protocol_errors() -> Vec<Script> {
    let mut too_big_inline = b"PING\r\n".to_vec();
    too_big_inline.resize(6 + 64 * 1024 + 1, b'a');
    let mut too_big_mbulk = b"*".to_vec();
    too_big_mbulk.resize(64 * 1024 + 1, b'1');
    let mut too_big_bulk = b"*1\r\n$".to_vec();
    too_big_bulk.resize(4 + 64 * 1024 + 1, b'1');
    let error = |name: &'static str, bytes: &[u8], message: &[u8]| {
        Script::new(name)
            .send(bytes)
            .closes(0)
            .expect(0, [&b"-ERR Protocol error: "[..], message, b"\r\n"].concat())
    };
    vec![
        error("mbulk_length_not_a_number", b"*a\r\n", b"invalid multibulk length"),
        error("mbulk_length_above_int_max", b"*3000000000\r\n", b"invalid multibulk length"),
        error("mbulk_length_int_max_plus_one", b"*2147483648\r\n", b"invalid multibulk length"),
        error("mbulk_length_with_plus", b"*+1\r\n$4\r\nPING\r\n", b"invalid multibulk length"),
        error("mbulk_length_with_space", b"*1 \r\n$4\r\nPING\r\n", b"invalid multibulk length"),
        error("expected_dollar_got_star", b"*1\r\n*1\r\n", b"expected '$', got '*'"),
        error("expected_dollar_got_colon", b"*2\r\n$4\r\nECHO\r\n:5\r\n", b"expected '$', got ':'"),
        error("expected_dollar_got_crlf", b"*1\r\n\r\n\r\n", b"expected '$', got ' '"),
        error(
            "expected_dollar_got_inline",
            b"*2\r\n$4\r\nECHO\r\nhello\r\n",
            b"expected '$', got 'h'",
        ),
        error("expected_dollar_got_high_byte", b"*1\r\n\xff\r\n", b"expected '$', got '\xff'"),
        error("mbulk_int_max_then_inline", b"*2147483647\r\nPING\r\n", b"expected '$', got 'P'"),
        error("bulk_length_negative", b"*1\r\n$-1\r\n", b"invalid bulk length"),
        error("bulk_length_with_plus", b"*1\r\n$+4\r\nPING\r\n", b"invalid bulk length"),
        error("bulk_length_leading_zero", b"*1\r\n$04\r\nPING\r\n", b"invalid bulk length"),
        error("bulk_length_not_a_number", b"*1\r\n$abc\r\n", b"invalid bulk length"),
        error(
            "bulk_length_above_512mib",
            b"*2\r\n$4\r\nECHO\r\n$536870913\r\n",
            b"invalid bulk length",
        ),
        error("too_big_inline_request", &too_big_inline, b"too big inline request"),
        error("too_big_mbulk_count_string", &too_big_mbulk, b"too big mbulk count string"),
        error("too_big_bulk_count_string", &too_big_bulk, b"too big bulk count string"),
        Script::new("replies_before_the_error_are_kept")
            .send(
                [
                    cmd(&["SET", "a", "1"]),
                    b"INCR a\r\n".to_vec(),
                    cmd(&["GET", "a"]),
                    b"*2\r\n$3\r\nGET\r\n$x\r\nPING\r\n".to_vec(),
                ]
                .concat(),
            )
            .closes(0)
            .expect(0, "+OK\r\n:2\r\n$1\r\n2\r\n-ERR Protocol error: invalid bulk length\r\n"),
        Script::new("commands_after_the_error_are_dropped")
            .send("PING\r\n*a\r\nPING\r\nSET dropped 1\r\n")
            .closes(0)
            .expect(0, "+PONG\r\n-ERR Protocol error"),
        Script::new("empty_and_null_multibulk_ignored")
            .send("*0\r\n*-1\r\n*-5\r\nPING\r\n*0\r\n*0\r\nECHO x\r\n")
            .sync()
            .expect(0, "+PONG\r\n$1\r\nx\r\n"),
        Script::new("bytes_after_a_bulk_are_not_checked")
            .send(
                "*2\r\n$4\r\nECHO\r\n$3\r\nfooXY*1\r\n$4\r\nPINGab*2\r\n$4\r\nECHO\r\n$1\r\nz\n\n",
            )
            .sync()
            .expect(0, "$3\r\nfoo\r\n+PONG\r\n$1\r\nz\r\n"),
        Script::new("protocol_error_split_byte_by_byte")
            .send_split(0, "PING\r\n*1\r\n$-1\r\n", every_byte(b"PING\r\n*1\r\n$-1\r\n"))
            .closes(0)
            .expect(0, "invalid bulk length"),
        Script::new("mbulk_header_nul_hides_the_cr")
            .send("PING\r\n*1\x00\r\n$4\r\nPING\r\n")
            .wait_for(0, "+PONG\r\n")
            .quiet(0)
            .expect(0, "+PONG\r\n"),
        Script::new("protocol_error_inside_a_long_pipeline")
            .send(
                [
                    (0..200).flat_map(|i| cmd(&["SET", &format!("k{i}"), "v"])).collect(),
                    b"*1\r\n$4\r\nPING\r\n*1\r\n*1\r\n".to_vec(),
                ]
                .concat(),
            )
            .closes(0)
            .expect(0, "+PONG\r\n-ERR Protocol error: expected '$', got '*'\r\n"),
    ]
}

/// Pipelines, whole and cut into writes at awkward boundaries.
pub fn pipelines() -> Vec<Script> {
    let thousand = thousand_commands();
    let small = [
        cmd(&["SET", "key", "hello world"]),
        b"GET key\r\n".to_vec(),
        cmd(&["RPUSH", "list", "a", "bb", "ccc"]),
        cmd(&["LRANGE", "list", "0", "-1"]),
        b"INCR key\r\n".to_vec(),
        cmd(&["GET", "nokey"]),
    ]
    .concat();
    let big_value = "x".repeat(40_000);
    let big_pipeline: Vec<u8> = (0..8)
        .flat_map(|i| {
            [cmd(&["SET", &format!("big{i}"), &big_value]), cmd(&["GET", &format!("big{i}")])]
                .concat()
        })
        .collect();
    let inline_pipeline: Vec<u8> = (0..300)
        .flat_map(|i| format!("SET \"k {i}\" 'v{i}'\r\nGET \"k {i}\"\nINCR n\r\n").into_bytes())
        .collect();
    let mut rich = Vec::new();
    for i in 0..100 {
        rich.extend(cmd(&["XADD", "stream", &format!("{}-1", i + 1), "field", &i.to_string()]));
        rich.extend(cmd(&["ZADD", "zset", &format!("{i}.5"), &format!("m{i}")]));
        rich.extend(cmd(&["HSET", &format!("h{}", i % 4), &format!("f{i}"), "v"]));
    }
    rich.extend(cmds(&[
        &["XRANGE", "stream", "-", "+", "COUNT", "20"],
        &["ZRANGE", "zset", "0", "10", "WITHSCORES"],
        &["HGETALL", "h1"],
        &["LPUSH", "zset", "x"],
        &["XINFO", "STREAM", "stream"],
    ]));
    vec![
        Script::new("pipeline_1000_commands_one_write")
            .send(&thousand)
            .sync()
            .expect(0, "$10\r\ninline 994\r\n"),
        Script::new("pipeline_1000_commands_random_cuts")
            .send_split(0, &thousand, random_splits(thousand.len(), 300, 7))
            .sync()
            .expect(0, "-ERR value is not an integer"),
        Script::new("pipeline_1000_commands_awkward_cuts")
            .send_split(0, &thousand, awkward_splits(&thousand, 300, 11))
            .sync()
            .expect(0, "$10\r\ninline 994\r\n"),
        Script::new("pipeline_byte_by_byte")
            .send_split(0, &small, every_byte(&small))
            .sync()
            .expect(0, "*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n"),
        Script::new("pipeline_inline_random_cuts")
            .send_split(0, &inline_pipeline, random_splits(inline_pipeline.len(), 200, 3))
            .sync()
            .expect(0, "$4\r\nv299\r\n:300\r\n"),
        Script::new("pipeline_big_values_cut_inside_payloads")
            .send_split(0, &big_pipeline, random_splits(big_pipeline.len(), 60, 5))
            .sync()
            .expect(0, "$40000\r\n"),
        Script::new("pipeline_nested_replies_awkward_cuts")
            .send_split(0, &rich, awkward_splits(&rich, 150, 13))
            .sync()
            .expect(0, "WRONGTYPE"),
        Script::new("pipeline_large_array_reply")
            .send(
                [
                    (0..20)
                        .flat_map(|chunk| {
                            let values: Vec<String> =
                                (0..500).map(|i| format!("item-{chunk}-{i}")).collect();
                            let mut args = vec!["RPUSH", "biglist"];
                            args.extend(values.iter().map(String::as_str));
                            cmd(&args)
                        })
                        .collect::<Vec<u8>>(),
                    cmd(&["LRANGE", "biglist", "0", "-1"]),
                    cmd(&["LRANGE", "biglist", "100", "5000"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "*10000\r\n"),
    ]
}

/// Binary keys and values.
pub fn binary() -> Vec<Script> {
    let every = all_bytes();
    let protocolish = b"\r\n$3\r\nfoo\r\n*1\r\n\x00-ERR x\r\n".to_vec();
    let key_nul = b"key\x00with\x00nul".to_vec();
    let key_crlf = b"key\r\nwith crlf".to_vec();
    let key_high = b"\xff\xfe\x80key".to_vec();
    let mut single_byte_keys = Vec::new();
    for byte in 0..=255u8 {
        single_byte_keys.extend(bcmd(&[b"SET", &[byte], &[byte, byte]]));
    }
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    let singles: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
    mget.extend(singles.iter().map(|b| &b[..]));
    single_byte_keys.extend(bcmd(&mget));
    vec![
        Script::new("binary_value_all_byte_values")
            .send(
                [
                    bcmd(&[b"SET", b"bin", &every]),
                    bcmd(&[b"GET", b"bin"]),
                    bcmd(&[b"STRLEN", b"bin"]),
                    bcmd(&[b"GETRANGE", b"bin", b"10", b"20"]),
                    bcmd(&[b"APPEND", b"bin", b"\x00\r\n"]),
                    bcmd(&[b"GET", b"bin"]),
                    bcmd(&[b"DUMP", b"bin"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, b"$256\r\n\x00\x01\x02"),
        Script::new("binary_keys_with_nul_crlf_and_high_bytes")
            .send(
                [
                    bcmd(&[b"SET", &key_nul, b"1"]),
                    bcmd(&[b"SET", &key_crlf, b"2"]),
                    bcmd(&[b"SET", &key_high, b"3"]),
                    bcmd(&[b"GET", &key_nul]),
                    bcmd(&[b"GET", b"key"]),
                    bcmd(&[b"EXISTS", &key_nul, &key_crlf, &key_high]),
                    bcmd(&[b"TYPE", &key_crlf]),
                    bcmd(&[b"KEYS", b"key\x00*"]),
                    bcmd(&[b"RENAME", &key_high, b"\x00"]),
                    bcmd(&[b"GET", b"\x00"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, ":3\r\n"),
        Script::new("binary_values_that_look_like_resp")
            .send(
                [
                    bcmd(&[b"SET", b"p", &protocolish]),
                    bcmd(&[b"GET", b"p"]),
                    bcmd(&[b"RPUSH", b"l", &protocolish, b"\r\n", b""]),
                    bcmd(&[b"LRANGE", b"l", b"0", b"-1"]),
                    bcmd(&[b"HSET", b"h", &protocolish, &protocolish]),
                    bcmd(&[b"HGETALL", b"h"]),
                    bcmd(&[b"ECHO", b""]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, b"$0\r\n\r\n"),
        Script::new("binary_every_byte_as_a_key")
            .send(&single_byte_keys)
            .sync()
            .expect(0, "*256\r\n$2\r\n\x00\x00\r\n"),
        Script::new("binary_unknown_command_echoes_arguments")
            .send(
                [
                    bcmd(&[b"\xff\xfeCMD", b"\x00arg", b"caf\xc3\xa9", b"\r\n"]),
                    bcmd(&[b"GET", b"\xff", b"extra"]),
                    bcmd(&[b"CONFIG", b"\xffbad"]),
                    bcmd(&[b"OBJECT", b"\x00", b"k"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "-ERR unknown command"),
        Script::new("binary_random_values_pipeline")
            .send(
                (0..50u64)
                    .flat_map(|i| {
                        let value = random_bytes(100 + 37 * i as usize, i);
                        let key = random_bytes(1 + i as usize % 7, i + 100);
                        [bcmd(&[b"SET", &key, &value]), bcmd(&[b"GET", &key])].concat()
                    })
                    .collect::<Vec<u8>>(),
            )
            .sync()
            .expect(0, "+OK\r\n"),
    ]
}

/// Large values: 64 MiB through SET / GET / STRLEN, and a few 1 MiB values.
pub fn large_values() -> Vec<Script> {
    let big = random_bytes(64 * 1024 * 1024, 42);
    let mib = random_bytes(1024 * 1024, 43);
    let mut set = bcmd(&[b"SET", b"big", &big]);
    drop(big);
    set.extend(cmds(&[&["GET", "big"], &["STRLEN", "big"], &["GETRANGE", "big", "1000", "1010"]]));
    let mut mibs = Vec::new();
    for i in 0..4 {
        let key = format!("mib{i}");
        mibs.extend(bcmd(&[b"SET", key.as_bytes(), &mib]));
        mibs.extend(bcmd(&[b"GET", key.as_bytes()]));
    }
    mibs.extend(cmd(&["MGET", "mib0", "mib1", "mib2", "mib3"]));
    vec![
        Script::new("large_value_64mib_set_get_strlen")
            .send(&set)
            .sync()
            .expect(0, "$67108864\r\n")
            .expect(0, ":67108864\r\n"),
        Script::new("large_values_1mib_pipeline_cut")
            .send_split(0, &mibs, random_splits(mibs.len(), 40, 17))
            .sync()
            .expect(0, "*4\r\n$1048576\r\n"),
    ]
}

/// RESP3: HELLO 3 and back, every reply type.
pub fn resp3() -> Vec<Script> {
    let all_types = [
        "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib", "push",
        "verbatim", "true", "false",
    ];
    let debug_protocol: Vec<u8> =
        all_types.iter().flat_map(|t| cmd(&["DEBUG", "PROTOCOL", t])).collect();
    vec![
        Script::new("resp3_hello_maps_and_config")
            .send(cmds(&[
                &["HELLO", "3"],
                &["HSET", "h", "field", "value", "f2", "v2"],
                &["HGETALL", "h"],
                &["CONFIG", "GET", "maxmemory-policy"],
                &["HELLO"],
            ]))
            .sync()
            .expect(0, "%7\r\n"),
        Script::new("resp3_sets_doubles_and_nulls")
            .send(cmds(&[
                &["HELLO", "3"],
                &["SADD", "s", "only"],
                &["SMEMBERS", "s"],
                &["SADD", "s2", "c", "a", "b"],
                &["SORT", "s2", "ALPHA"],
                &["ZADD", "z", "1.5", "m", "2", "n"],
                &["ZSCORE", "z", "m"],
                &["ZRANGE", "z", "0", "-1", "WITHSCORES"],
                &["INCRBYFLOAT", "f", "0.1"],
                &["ZINCRBY", "z", "1e300", "m"],
                &["GET", "missing"],
                &["HGET", "h", "missing"],
                &["LPOP", "missing"],
                &["ZSCORE", "z", "missing"],
                &["ZMSCORE", "z", "m", "missing"],
            ]))
            .sync()
            .expect(0, "~1\r\n$4\r\nonly\r\n")
            .expect(0, ",1.5\r\n")
            .expect(0, "_\r\n"),
        Script::new("resp3_debug_protocol_every_type")
            .send([cmd(&["HELLO", "3"]), debug_protocol.clone()].concat())
            .sync()
            .expect(0, "#t\r\n")
            .expect(0, "|1\r\n")
            .expect(0, ">2\r\n"),
        Script::new("resp2_debug_protocol_every_type")
            .send(&debug_protocol)
            .sync()
            .expect(0, "RESP2 is not supported"),
        Script::new("resp3_lua_types")
            .send(cmds(&[
                &["HELLO", "3"],
                &["EVAL", "return true", "0"],
                &["EVAL", "return false", "0"],
                &["EVAL", "return {double=3.25}", "0"],
                &["EVAL", "return {big_number='1234567890123456789012345678901234567890'}", "0"],
                &["EVAL", "return {map={a=1}}", "0"],
                &["EVAL", "return {set={x=true}}", "0"],
                &["EVAL", "return {1, {2, {3, 'x'}}, {err='My Error'}}", "0"],
                &["EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", "h"],
                &["EVAL", "return redis.call('NOSUCH')", "0"],
            ]))
            .sync()
            .expect(0, ",3.25\r\n"),
        Script::new("resp3_hello_2_goes_back")
            .send(cmds(&[
                &["HELLO", "3"],
                &["HSET", "h", "a", "1"],
                &["HGETALL", "h"],
                &["HELLO", "2"],
                &["HGETALL", "h"],
                &["GET", "missing"],
                &["ZADD", "z", "2.5", "m"],
                &["ZSCORE", "z", "m"],
            ]))
            .sync()
            .expect(0, "*2\r\n$1\r\na\r\n$1\r\n1\r\n$-1\r\n"),
        Script::new("resp3_reset_goes_back_to_resp2")
            .send(cmds(&[
                &["HELLO", "3"],
                &["GET", "missing"],
                &["RESET"],
                &["GET", "missing"],
                &["HSET", "h", "a", "1"],
                &["HGETALL", "h"],
            ]))
            .sync()
            .expect(0, "+RESET\r\n$-1\r\n"),
        Script::new("resp3_client_tracking_invalidation_push")
            .send(cmds(&[&["HELLO", "3"], &["CLIENT", "TRACKING", "ON"], &["GET", "tracked"]]))
            .sync()
            .send_on(1, cmd(&["SET", "tracked", "new"]))
            .sync_on(1)
            .wait_for(0, "invalidate")
            .send(cmds(&[&["GET", "tracked"], &["CLIENT", "TRACKING", "OFF"]]))
            .sync()
            .expect(0, ">2\r\n$10\r\ninvalidate\r\n"),
        Script::new("resp3_blocking_timeout_null")
            .send(cmds(&[
                &["HELLO", "3"],
                &["BLPOP", "nolist", "0.05"],
                &["BZPOPMIN", "nz", "0.05"],
            ]))
            .sync()
            .expect(0, "_\r\n_\r\n"),
        Script::new("resp3_command_docs_and_xinfo")
            .send(cmds(&[
                &["HELLO", "3"],
                &["COMMAND", "DOCS", "get", "set"],
                &["COMMAND", "INFO", "get"],
                &["XADD", "s", "1-1", "f", "v"],
                &["XINFO", "STREAM", "s"],
                &["COMMAND", "COUNT"],
            ]))
            .sync()
            .expect(0, "first-entry"),
        Script::new("resp3_hello_errors")
            .send(cmds(&[
                &["HELLO", "4"],
                &["HELLO", "3", "AUTH", "default"],
                &["HELLO", "x"],
                &["HELLO", "3", "BOGUS"],
                &["GET", "missing"],
            ]))
            .sync()
            .expect(0, "-NOPROTO"),
    ]
}

/// Pub/sub in RESP2 and RESP3.
pub fn pubsub() -> Vec<Script> {
    vec![
        Script::new("pubsub_resp2_subscribe_publish_unsubscribe")
            .send(cmd(&["SUBSCRIBE", "news", "sport", "weather"]))
            .ping_sync_on(0)
            .send_on(1, cmds(&[&["PUBLISH", "news", "hello"], &["PUBLISH", "sport", "goal"]]))
            .send_on(1, cmd(&["PUBLISH", "other", "nobody"]))
            .sync_on(1)
            .ping_sync_on(0)
            .send(cmd(&["UNSUBSCRIBE", "news"]))
            .ping_sync_on(0)
            .send(cmd(&["UNSUBSCRIBE"]))
            .sync()
            .expect(0, "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n")
            .expect(0, "*2\r\n$4\r\npong\r\n"),
        Script::new("pubsub_resp2_psubscribe")
            .send(cmd(&["PSUBSCRIBE", "n*", "s?ort", "[xy]z"]))
            .ping_sync_on(0)
            .send_on(1, cmds(&[&["PUBLISH", "news", "a"], &["PUBLISH", "sport", "b"]]))
            .send_on(1, cmd(&["PUBLISH", "yz", "c"]))
            .sync_on(1)
            .ping_sync_on(0)
            .send(cmd(&["PUNSUBSCRIBE", "n*"]))
            .ping_sync_on(0)
            .send(cmd(&["PUNSUBSCRIBE"]))
            .sync()
            .expect(0, "$8\r\npmessage\r\n"),
        Script::new("pubsub_resp2_ssubscribe")
            .send(cmd(&["SSUBSCRIBE", "shard1", "shard2"]))
            .ping_sync_on(0)
            .send_on(1, cmds(&[&["SPUBLISH", "shard1", "x"], &["SPUBLISH", "shard3", "y"]]))
            .sync_on(1)
            .ping_sync_on(0)
            .send(cmd(&["SUNSUBSCRIBE", "shard1"]))
            .ping_sync_on(0)
            .send(cmd(&["SUNSUBSCRIBE"]))
            .sync()
            .expect(0, "$8\r\nsmessage\r\n"),
        Script::new("pubsub_resp2_refused_commands_while_subscribed")
            .send(cmds(&[&["SUBSCRIBE", "a"], &["GET", "k"], &["ECHO", "x"], &["PING"]]))
            .ping_sync_on(0)
            .send("PING\r\nSET k v\r\n")
            .ping_sync_on(0)
            .expect(0, "-ERR Can't execute 'get'"),
        Script::new("pubsub_resp2_unsubscribe_without_subscriptions")
            .send(cmds(&[
                &["UNSUBSCRIBE"],
                &["PUNSUBSCRIBE"],
                &["SUNSUBSCRIBE"],
                &["UNSUBSCRIBE", "x"],
            ]))
            .sync()
            .expect(0, "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
        Script::new("pubsub_resp2_same_channel_twice")
            .send(cmds(&[&["SUBSCRIBE", "a", "a", "b"], &["SUBSCRIBE", "b"], &["PSUBSCRIBE", "a"]]))
            .ping_sync_on(0)
            .send_on(1, cmd(&["PUBLISH", "a", "both"]))
            .sync_on(1)
            .ping_sync_on(0)
            .send(cmds(&[
                &["UNSUBSCRIBE", "a", "a", "zzz"],
                &["PUNSUBSCRIBE", "a"],
                &["UNSUBSCRIBE"],
            ]))
            .sync()
            .expect(0, "$4\r\nboth\r\n"),
        Script::new("pubsub_resp2_many_messages")
            .send(cmd(&["SUBSCRIBE", "flood"]))
            .ping_sync_on(0)
            .send_on(
                1,
                (0..300)
                    .flat_map(|i| cmd(&["PUBLISH", "flood", &format!("message number {i}")]))
                    .collect::<Vec<u8>>(),
            )
            .sync_on(1)
            .ping_sync_on(0)
            .expect(0, "message number 299"),
        Script::new("pubsub_resp2_binary_messages")
            .send(cmd(&["SUBSCRIBE", "bin"]))
            .ping_sync_on(0)
            .send_on(1, bcmd(&[b"PUBLISH", b"bin", b"\r\n*3\r\n$7\r\nmessage\r\n\x00\xff"]))
            .sync_on(1)
            .ping_sync_on(0)
            .expect(0, "$7\r\nmessage\r\n$3\r\nbin\r\n$21\r\n"),
        Script::new("pubsub_resp2_inline_subscribe")
            .send("SUBSCRIBE a b\r\nPING\r\nPING hi\r\nUNSUBSCRIBE b\r\n")
            .ping_sync_on(0)
            .expect(0, "*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        Script::new("pubsub_resp2_reset_while_subscribed")
            .send(cmds(&[&["SUBSCRIBE", "a"], &["PSUBSCRIBE", "p*"], &["RESET"], &["GET", "k"]]))
            .sync()
            .send_on(1, cmd(&["PUBLISH", "a", "nobody"]))
            .sync_on(1)
            .expect(0, "+RESET\r\n$-1\r\n"),
        Script::new("pubsub_resp2_quit_while_subscribed")
            .send(cmds(&[&["SUBSCRIBE", "a"], &["QUIT"]]))
            .closes(0)
            .expect(0, "+OK\r\n"),
        Script::new("pubsub_resp3_push_interleaved_with_commands")
            .send(cmds(&[&["HELLO", "3"], &["SUBSCRIBE", "a", "b"], &["SET", "k", "v"]]))
            .sync()
            .send_on(1, cmds(&[&["PUBLISH", "a", "one"], &["PUBLISH", "b", "two"]]))
            .sync_on(1)
            .send(cmds(&[&["GET", "k"], &["PSUBSCRIBE", "x*"], &["HSET", "h", "f", "v"]]))
            .sync()
            .send_on(1, cmds(&[&["PUBLISH", "xy", "three"], &["PUBLISH", "a", "four"]]))
            .sync_on(1)
            .send(cmds(&[&["HGETALL", "h"], &["UNSUBSCRIBE"], &["PUNSUBSCRIBE"], &["PING"]]))
            .sync()
            .expect(0, ">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$3\r\none\r\n")
            .expect(0, ">4\r\n$8\r\npmessage\r\n"),
        Script::new("pubsub_resp3_ssubscribe_and_unsubscribe_none")
            .send(cmds(&[&["HELLO", "3"], &["UNSUBSCRIBE"], &["SSUBSCRIBE", "s1"], &["GET", "k"]]))
            .sync()
            .send_on(1, cmd(&["SPUBLISH", "s1", "hi"]))
            .sync_on(1)
            .send(cmds(&[&["SUNSUBSCRIBE"], &["SUNSUBSCRIBE"], &["PING"]]))
            .sync()
            .expect(0, ">3\r\n$8\r\nsmessage\r\n"),
        Script::new("pubsub_resp2_tracking_redirect_to_subscriber")
            .learn_id(1)
            .send_on(1, cmd(&["SUBSCRIBE", "__redis__:invalidate"]))
            .ping_sync_on(1)
            .send_with_id(0, 1, tracking_redirect)
            .send(cmds(&[&["GET", "a"], &["MGET", "b", "c"]]))
            .sync()
            .send_on(2, cmds(&[&["SET", "a", "1"], &["MSET", "b", "2", "c", "3"], &["FLUSHDB"]]))
            .sync_on(2)
            .ping_sync_on(1)
            .expect(1, "$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\na\r\n")
            .expect(1, "$20\r\n__redis__:invalidate\r\n$-1\r\n"),
        Script::new("pubsub_resp2_client_reply_off_while_subscribed")
            .send(cmds(&[&["CLIENT", "REPLY", "OFF"], &["SUBSCRIBE", "a"], &["PING"]]))
            .wait_for(0, "$1\r\na\r\n:1\r\n")
            .send_on(1, cmd(&["PUBLISH", "a", "quiet"]))
            .sync_on(1)
            .wait_for(0, "$5\r\nquiet\r\n")
            .quiet(0),
        Script::new("pubsub_resp3_client_reply_off_while_subscribed")
            .send(cmds(&[&["HELLO", "3"], &["CLIENT", "REPLY", "OFF"], &["SUBSCRIBE", "a"]]))
            .send(cmd(&["PING"]))
            .wait_for(0, "$1\r\na\r\n:1\r\n")
            .send_on(1, cmd(&["PUBLISH", "a", "quiet"]))
            .sync_on(1)
            .send(cmd(&["CLIENT", "REPLY", "ON"]))
            .sync()
            .expect(0, "+OK\r\n$6\r\nsync:"),
        Script::new("pubsub_resp3_hello_2_while_subscribed")
            .send(cmds(&[&["HELLO", "3"], &["SUBSCRIBE", "a"], &["HELLO", "2"]]))
            .ping_sync_on(0)
            .send_on(1, cmd(&["PUBLISH", "a", "after"]))
            .sync_on(1)
            .ping_sync_on(0)
            .expect(0, "after"),
    ]
}

/// MULTI / EXEC / DISCARD / WATCH.
pub fn transactions() -> Vec<Script> {
    vec![
        Script::new("multi_exec_queued_commands")
            .send(cmds(&[
                &["MULTI"],
                &["SET", "k", "1"],
                &["INCR", "k"],
                &["GET", "k"],
                &["LRANGE", "nolist", "0", "-1"],
                &["EXEC"],
            ]))
            .sync()
            .expect(0, "+QUEUED\r\n"),
        Script::new("multi_queue_time_error_execabort")
            .send(cmds(&[
                &["MULTI"],
                &["SET", "k", "1"],
                &["NOSUCHCMD", "x"],
                &["GET"],
                &["EXEC"],
                &["GET", "k"],
            ]))
            .sync()
            .expect(0, "-EXECABORT"),
        Script::new("multi_exec_time_error_in_array")
            .send(cmds(&[
                &["SET", "s", "string"],
                &["MULTI"],
                &["LPUSH", "s", "x"],
                &["INCR", "c"],
                &["INCR", "s"],
                &["EXEC"],
            ]))
            .sync()
            .expect(0, "*3\r\n-WRONGTYPE"),
        Script::new("multi_discard")
            .send(cmds(&[
                &["MULTI"],
                &["SET", "k", "1"],
                &["DISCARD"],
                &["GET", "k"],
                &["DISCARD"],
            ]))
            .sync()
            .expect(0, "-ERR DISCARD without MULTI"),
        Script::new("multi_watch_modified_by_another_client")
            .send(cmds(&[&["SET", "w", "1"], &["WATCH", "w"]]))
            .sync()
            .send_on(1, cmd(&["SET", "w", "2"]))
            .sync_on(1)
            .send(cmds(&[&["MULTI"], &["SET", "w", "3"], &["EXEC"], &["GET", "w"]]))
            .sync()
            .expect(0, "*-1\r\n$1\r\n2\r\n"),
        Script::new("multi_watch_unmodified_and_unwatch")
            .send(cmds(&[
                &["WATCH", "w", "x"],
                &["UNWATCH"],
                &["WATCH", "w"],
                &["MULTI"],
                &["SET", "w", "3"],
                &["EXEC"],
                &["GET", "w"],
            ]))
            .sync()
            .expect(0, "*1\r\n+OK\r\n"),
        Script::new("multi_nested_and_exec_without_multi")
            .send(cmds(&[&["EXEC"], &["MULTI"], &["MULTI"], &["PING"], &["EXEC"], &["EXEC"]]))
            .sync()
            .expect(0, "-ERR MULTI calls can not be nested"),
        Script::new("multi_select_inside")
            .send(cmds(&[
                &["MULTI"],
                &["SELECT", "3"],
                &["SET", "k", "in3"],
                &["EXEC"],
                &["GET", "k"],
                &["SELECT", "0"],
                &["GET", "k"],
            ]))
            .sync()
            .expect(0, "$3\r\nin3\r\n+OK\r\n$-1\r\n"),
        Script::new("multi_watch_inside_multi_refused")
            .send(cmds(&[&["MULTI"], &["WATCH", "k"], &["SET", "k", "v"], &["EXEC"]]))
            .sync()
            .expect(0, "WATCH inside MULTI is not allowed"),
        Script::new("multi_empty")
            .send("MULTI\r\nEXEC\r\nMULTI\r\nDISCARD\r\n")
            .sync()
            .expect(0, "+OK\r\n*0\r\n+OK\r\n+OK\r\n"),
        Script::new("multi_resp3")
            .send(cmds(&[
                &["HELLO", "3"],
                &["MULTI"],
                &["HSET", "h", "f", "v"],
                &["HGETALL", "h"],
                &["ZADD", "z", "1.5", "m"],
                &["ZSCORE", "z", "m"],
                &["GET", "missing"],
                &["EXEC"],
            ]))
            .sync()
            .expect(0, "*5\r\n:1\r\n%1\r\n"),
        Script::new("multi_subscribe_inside_exec")
            .send(cmds(&[&["MULTI"], &["SUBSCRIBE", "a"], &["EXEC"]]))
            .ping_sync_on(0)
            .send_on(1, cmd(&["PUBLISH", "a", "inside"]))
            .sync_on(1)
            .ping_sync_on(0)
            .expect(0, "$6\r\ninside\r\n"),
        Script::new("multi_long_transaction_pipelined")
            .send(
                [
                    b"MULTI\r\n".to_vec(),
                    (0..200).flat_map(|i| cmd(&["RPUSH", "l", &i.to_string()])).collect(),
                    cmds(&[&["LRANGE", "l", "0", "-1"], &["EXEC"]]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "*201\r\n"),
        Script::new("multi_reset_inside")
            .send(cmds(&[&["MULTI"], &["SET", "k", "v"], &["RESET"], &["EXEC"], &["GET", "k"]]))
            .sync()
            .expect(0, "+RESET\r\n-ERR EXEC without MULTI\r\n$-1\r\n"),
    ]
}

/// Blocking commands, served by a second client or timing out.
pub fn blocking() -> Vec<Script> {
    vec![
        Script::new("blpop_served_by_lpush")
            .send(cmd(&["BLPOP", "queue", "5"]))
            .wait_blocked(1)
            .sleep(20)
            .send_on(1, cmd(&["LPUSH", "queue", "job"]))
            .sync_on(1)
            .sync()
            .expect(0, "*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n"),
        Script::new("blpop_served_with_commands_pipelined_behind")
            .send(cmds(&[&["BLPOP", "a", "b", "5"], &["PING"], &["GET", "k"]]))
            .wait_blocked(1)
            .send_on(1, cmds(&[&["SET", "k", "v"], &["RPUSH", "b", "x", "y"]]))
            .sync_on(1)
            .sync()
            .expect(0, "*2\r\n$1\r\nb\r\n$1\r\nx\r\n+PONG\r\n$1\r\nv\r\n"),
        Script::new("blmove_served")
            .send(cmd(&["BLMOVE", "src", "dst", "LEFT", "RIGHT", "5"]))
            .wait_blocked(1)
            .send_on(1, cmd(&["RPUSH", "src", "item"]))
            .sync_on(1)
            .send(cmd(&["LRANGE", "dst", "0", "-1"]))
            .sync()
            .expect(0, "$4\r\nitem\r\n*1\r\n"),
        Script::new("brpoplpush_served")
            .send(cmd(&["BRPOPLPUSH", "src", "dst", "5"]))
            .wait_blocked(1)
            .send_on(1, cmd(&["LPUSH", "src", "a", "b"]))
            .sync_on(1)
            .send(cmd(&["LRANGE", "dst", "0", "-1"]))
            .sync()
            .expect(0, "$1\r\na\r\n"),
        Script::new("xread_block_served_by_xadd")
            .send(cmd(&["XREAD", "BLOCK", "5000", "STREAMS", "events", "$"]))
            .wait_blocked(1)
            .send_on(1, cmd(&["XADD", "events", "7-1", "kind", "click"]))
            .sync_on(1)
            .sync()
            .expect(0, "$3\r\n7-1\r\n"),
        Script::new("bzpopmin_served_resp3")
            .send(cmds(&[&["HELLO", "3"], &["BZPOPMIN", "z", "5"]]))
            .wait_blocked(1)
            .send_on(1, cmd(&["ZADD", "z", "2.5", "m"]))
            .sync_on(1)
            .sync()
            .expect(0, ",2.5\r\n"),
        Script::new("blpop_timeout_expires")
            .send(cmds(&[&["BLPOP", "nolist", "0.1"], &["BRPOP", "nolist", "0.05"]]))
            .sync()
            .expect(0, "*-1\r\n*-1\r\n"),
        Script::new("xread_block_timeout_expires")
            .send(cmd(&["XREAD", "BLOCK", "50", "STREAMS", "nostream", "$"]))
            .sync()
            .expect(0, "*-1\r\n"),
        Script::new("wait_zero_replicas")
            .send(cmds(&[&["SET", "k", "v"], &["WAIT", "0", "0"], &["WAIT", "0", "10"]]))
            .sync()
            .expect(0, ":0\r\n:0\r\n"),
        Script::new("blpop_immediately_served")
            .send(cmds(&[&["RPUSH", "l", "a"], &["BLPOP", "l", "0"], &["BLPOP", "l", "0.05"]]))
            .sync()
            .expect(0, "*2\r\n$1\r\nl\r\n$1\r\na\r\n*-1\r\n"),
        Script::new("blpop_in_multi_does_not_block")
            .send(cmds(&[&["MULTI"], &["BLPOP", "nolist", "0"], &["EXEC"]]))
            .sync()
            .expect(0, "*1\r\n*-1\r\n"),
    ]
}

/// MONITOR on a second connection.
pub fn monitor() -> Vec<Script> {
    let watched = |name: &'static str, commands: Vec<u8>, expected: &str| {
        Script::new(name)
            .send_on(1, cmd(&["MONITOR"]))
            .wait_for(1, "+OK\r\n")
            .send(commands)
            .sync()
            .wait_monitored_sync(1)
            .send_on(1, cmd(&["RESET"]))
            .sync_on(1)
            .expect(1, expected)
    };
    vec![
        watched(
            "monitor_basic_then_reset",
            cmds(&[&["SET", "k", "v"], &["GET", "k"], &["SELECT", "2"], &["DEL", "k"]]),
            "] \"SET\" \"k\" \"v\"\r\n",
        ),
        watched(
            "monitor_binary_and_inline_arguments",
            [
                bcmd(&[b"SET", b"\x00\xff\r\n", b"a \"quoted\" \\ value"]),
                b"ECHO 'x y'\r\n".to_vec(),
            ]
            .concat(),
            "\"\\x00\\xff\\r\\n\"",
        ),
        watched(
            "monitor_multi_exec_and_lua",
            cmds(&[
                &["MULTI"],
                &["INCR", "n"],
                &["EXEC"],
                &["EVAL", "redis.call('SET', KEYS[1], 'x'); return 1", "1", "lk"],
            ]),
            " lua] \"SET\" \"lk\" \"x\"\r\n",
        ),
        watched(
            "monitor_pipeline",
            (0..100).flat_map(|i| cmd(&["SET", &format!("k{i}"), "v"])).collect(),
            "\"k99\" \"v\"\r\n",
        ),
        Script::new("monitor_quit")
            .send(cmds(&[&["MONITOR"], &["QUIT"]]))
            .closes(0)
            .expect(0, "+OK\r\n+OK\r\n"),
        Script::new("monitor_refuses_commands")
            .send_on(1, cmd(&["MONITOR"]))
            .wait_for(1, "+OK\r\n")
            .send_on(1, cmds(&[&["GET", "k"], &["PING"]]))
            .wait_for(1, "\"PING\"\r\n")
            .send(cmd(&["SET", "k", "v"]))
            .sync()
            .wait_monitored_sync(1)
            .send_on(1, cmd(&["RESET"]))
            .sync_on(1)
            .expect(1, "+RESET\r\n"),
    ]
}

/// CLIENT REPLY OFF / SKIP / ON.
pub fn client_reply() -> Vec<Script> {
    vec![
        Script::new("client_reply_off_then_on")
            .send(cmds(&[
                &["CLIENT", "REPLY", "OFF"],
                &["SET", "a", "1"],
                &["GET", "a"],
                &["NOSUCH"],
                &["CLIENT", "REPLY", "ON"],
                &["GET", "a"],
            ]))
            .sync()
            .expect(0, "+OK\r\n$1\r\n1\r\n"),
        Script::new("client_reply_skip")
            .send(cmds(&[
                &["SET", "a", "1"],
                &["CLIENT", "REPLY", "SKIP"],
                &["INCR", "a"],
                &["INCR", "a"],
                &["CLIENT", "REPLY", "SKIP"],
                &["CLIENT", "REPLY", "SKIP"],
                &["GET", "a"],
            ]))
            .sync()
            .expect(0, "+OK\r\n:3\r\n$6\r\nsync:1\r\n"),
        Script::new("client_reply_skip_while_off")
            .send(cmds(&[
                &["CLIENT", "REPLY", "OFF"],
                &["CLIENT", "REPLY", "SKIP"],
                &["PING"],
                &["PING"],
                &["CLIENT", "REPLY", "ON"],
                &["PING"],
            ]))
            .sync()
            .expect(0, "+OK\r\n+PONG\r\n"),
        Script::new("client_reply_invalid_mode")
            .send(cmds(&[&["CLIENT", "REPLY", "MAYBE"], &["CLIENT", "REPLY"], &["PING"]]))
            .sync()
            .expect(0, "-ERR"),
        Script::new("client_reply_off_inline_and_quiet")
            .send("CLIENT REPLY OFF\r\nPING\r\nECHO hidden\r\n")
            .quiet(0),
        Script::new("client_reply_off_then_protocol_error")
            .send("CLIENT REPLY OFF\r\nPING\r\n*a\r\nPING\r\n")
            .quiet(0),
        Script::new("client_reply_off_then_reset")
            .send(cmds(&[&["CLIENT", "REPLY", "OFF"], &["PING"], &["RESET"], &["PING"]]))
            .sync()
            .expect(0, "+RESET\r\n+PONG\r\n"),
    ]
}

fn tracking_redirect(id: u64) -> Vec<u8> {
    cmd(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id.to_string()])
}

fn kill_by_id(id: u64) -> Vec<u8> {
    cmd(&["CLIENT", "KILL", "ID", &id.to_string(), "SKIPME", "no"])
}

fn kill_by_id_then_ping(id: u64) -> Vec<u8> {
    [kill_by_id(id), b"PING\r\n".to_vec()].concat()
}

fn client_list_by_id(id: u64) -> Vec<u8> {
    cmd(&["CLIENT", "LIST", "ID", &id.to_string()])
}

/// Connection state: RESET, QUIT, SELECT, names, unknown commands, CLIENT KILL, keyspace
/// introspection.
pub fn connection_state() -> Vec<Script> {
    vec![
        Script::new("reset_after_select_and_name")
            .send(cmds(&[
                &["SELECT", "5"],
                &["SET", "k", "v"],
                &["CLIENT", "SETNAME", "before"],
                &["RESET"],
                &["GET", "k"],
                &["CLIENT", "GETNAME"],
            ]))
            .sync()
            .expect(0, "+RESET\r\n$-1\r\n$-1\r\n"),
        Script::new("quit_replies_then_closes")
            .send("PING\r\nQUIT\r\nPING\r\n")
            .closes(0)
            .expect(0, "+PONG\r\n+OK\r\n"),
        Script::new("quit_multibulk_with_extra_argument")
            .send(cmds(&[&["SET", "k", "v"], &["QUIT", "now"], &["GET", "k"]]))
            .closes(0)
            .expect(0, "+OK\r\n+OK\r\n"),
        Script::new("select_then_commands")
            .send(cmds(&[
                &["SELECT", "1"],
                &["SET", "k", "one"],
                &["SELECT", "2"],
                &["GET", "k"],
                &["SELECT", "16"],
                &["SELECT", "x"],
                &["SELECT", "-1"],
                &["SELECT", "1"],
                &["GET", "k"],
                &["SWAPDB", "1", "2"],
                &["GET", "k"],
                &["MOVE", "k", "1"],
                &["DBSIZE"],
            ]))
            .sync()
            .expect(0, "-ERR DB index is out of range"),
        Script::new("client_setname_getname")
            .send(cmds(&[
                &["CLIENT", "GETNAME"],
                &["CLIENT", "SETNAME", "app-1"],
                &["CLIENT", "GETNAME"],
                &["CLIENT", "SETNAME", "bad name"],
                &["CLIENT", "INFO"],
                &["CLIENT", "SETNAME", ""],
                &["CLIENT", "GETNAME"],
            ]))
            .sync()
            .expect(0, "name=app-1 "),
        Script::new("hello_with_setname")
            .send(cmds(&[
                &["HELLO", "2", "SETNAME", "n1"],
                &["CLIENT", "GETNAME"],
                &["HELLO", "3", "SETNAME", "n2"],
                &["CLIENT", "GETNAME"],
                &["CLIENT", "INFO"],
            ]))
            .sync()
            .expect(0, "$2\r\nn2\r\n"),
        Script::new("unknown_commands_and_wrong_arity")
            .send(
                [
                    cmds(&[
                        &["NOSUCH", "a", "b", "c"],
                        &["GET"],
                        &["SET", "k"],
                        &["HSET", "h", "f"],
                    ]),
                    cmd(&["CONFIG", "NOSUB"]),
                    cmd(&["nosuch", &"x".repeat(200), "y"]),
                    bcmd(&[b"\xc3\x28", b"\xa0\xa1"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "-ERR wrong number of arguments for 'get' command"),
        Script::new("client_kill_self_by_id")
            .learn_id(0)
            .send_with_id(0, 0, kill_by_id)
            .closes(0)
            .expect(0, ":1\r\n"),
        Script::new("client_kill_self_with_pipelined_command")
            .learn_id(0)
            .send_with_id(0, 0, kill_by_id_then_ping)
            .closes(0)
            .expect(0, ":1\r\n"),
        Script::new("client_kill_other_blocked_client")
            .learn_id(0)
            .send(cmd(&["BLPOP", "nolist", "5"]))
            .wait_blocked(1)
            .send_with_id(1, 0, kill_by_id)
            .sync_on(1)
            .closes(0)
            .expect(1, ":1\r\n"),
        Script::new("client_list_and_info_of_self")
            .learn_id(0)
            .send(cmds(&[&["CLIENT", "SETNAME", "me"], &["CLIENT", "INFO"]]))
            .send_with_id(0, 0, client_list_by_id)
            .sync()
            .expect(0, "cmd=client|list"),
        Script::new("debug_sleep_object_type_ttl")
            .send(cmds(&[
                &["DEBUG", "SLEEP", "0"],
                &["SET", "k", "v", "EX", "100"],
                &["TTL", "k"],
                &["TYPE", "k"],
                &["OBJECT", "ENCODING", "k"],
                &["OBJECT", "REFCOUNT", "k"],
                &["OBJECT", "FREQ", "k"],
                &["RPUSH", "l", "1"],
                &["TYPE", "l"],
                &["OBJECT", "ENCODING", "l"],
                &["TTL", "l"],
                &["TTL", "missing"],
                &["PERSIST", "k"],
                &["TTL", "k"],
                &["OBJECT", "HELP"],
            ]))
            .sync()
            .expect(0, ":100\r\n+string\r\n$6\r\nembstr\r\n"),
        Script::new("scan_with_count_and_sort")
            .send(
                [
                    (0..30)
                        .flat_map(|i| cmd(&["SET", &format!("key:{i}"), &i.to_string()]))
                        .collect(),
                    cmds(&[
                        &["SCAN", "0", "COUNT", "100"],
                        &["SCAN", "0", "MATCH", "key:1*", "COUNT", "1000", "TYPE", "string"],
                        &["RPUSH", "l", "3", "10", "1", "2"],
                        &["SORT", "l"],
                        &["SORT", "l", "DESC", "LIMIT", "0", "2"],
                        &["SORT", "l", "ALPHA"],
                        &["SADD", "s", "c", "a", "b"],
                        &["SORT", "s", "ALPHA"],
                        &["SORT", "l", "BY", "nosort", "GET", "key:*"],
                        &["SORT", "s"],
                    ]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, "*4\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n$2\r\n10\r\n"),
        Script::new("auth_without_password_configured")
            .send(cmds(&[
                &["AUTH", "secret"],
                &["AUTH", "default", "anything"],
                &["AUTH", "nouser", "x"],
                &["PING"],
            ]))
            .sync()
            .expect(0, "-ERR AUTH <password> called without any password configured"),
        Script::new("first_command_has_many_arguments")
            .send(
                [
                    cmd(&[
                        "RPUSH", "l", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
                    ]),
                    cmd(&["LLEN", "l"]),
                ]
                .concat(),
            )
            .sync()
            .expect(0, ":12\r\n:12\r\n"),
        Script::new("echo_and_ping_variants")
            .send(cmds(&[
                &["ECHO", ""],
                &["PING", ""],
                &["PING", "a", "b"],
                &["ECHO"],
                &["echo", "lower"],
                &["eChO", "MiXeD"],
            ]))
            .sync()
            .expect(0, "$0\r\n\r\n$0\r\n\r\n"),
    ]
}

/// The password of the server the `unauthenticated` group runs against.
pub const PASSWORD: &str = "s3cret";

/// A server with `requirepass`: NOAUTH, and the tighter request limits Redis applies before
/// a client authenticated (which are protocol errors too).
pub fn unauthenticated() -> Vec<Script> {
    let rpush = |count: usize| {
        let values: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let mut args = vec!["RPUSH", "l"];
        args.extend(values.iter().map(String::as_str));
        cmd(&args)
    };
    let echo = |size: usize| cmd(&["ECHO", &"e".repeat(size)]);
    vec![
        Script::new("noauth_then_auth")
            .send(cmds(&[
                &["PING"],
                &["GET", "k"],
                &["AUTH", "wrong"],
                &["AUTH", "default", "wrong"],
                &["AUTH", PASSWORD],
                &["GET", "k"],
            ]))
            .sync()
            .expect(0, "-NOAUTH Authentication required.\r\n")
            .expect(0, "-WRONGPASS"),
        Script::new("unauthenticated_multibulk_length")
            .send(rpush(10))
            .closes(0)
            .expect(0, "-ERR Protocol error: unauthenticated multibulk length\r\n"),
        Script::new("unauthenticated_bulk_length")
            .send(echo(16385))
            .closes(0)
            .expect(0, "-ERR Protocol error: unauthenticated bulk length\r\n"),
        Script::new("unauthenticated_limits_are_inclusive")
            .send([rpush(8), echo(16384), cmd(&["AUTH", PASSWORD])].concat())
            .sync()
            .expect(0, "-NOAUTH Authentication required.\r\n-NOAUTH"),
        Script::new("unauthenticated_inline_has_no_argument_limit")
            .send("RPUSH l 1 2 3 4 5 6 7 8 9 10 11 12\r\nAUTH s3cret\r\n")
            .sync()
            .expect(0, "-NOAUTH"),
        Script::new("auth_pipelined_before_large_requests")
            .send([cmd(&["AUTH", PASSWORD]), rpush(20), echo(20_000)].concat())
            .sync()
            .expect(0, "+OK\r\n:20\r\n$20000\r\n"),
        Script::new("failed_auth_then_large_request")
            .send([cmd(&["AUTH", "wrong"]), rpush(20)].concat())
            .closes(0)
            .expect(0, "-WRONGPASS")
            .expect(0, "unauthenticated multibulk length"),
        Script::new("hello_auth_then_large_request")
            .send([cmd(&["HELLO", "3", "AUTH", "default", PASSWORD]), rpush(20)].concat())
            .sync()
            .expect(0, ":20\r\n"),
        Script::new("reset_deauthenticates")
            .send(
                [cmd(&["AUTH", PASSWORD]), cmd(&["RESET"]), cmd(&["GET", "k"]), rpush(20)].concat(),
            )
            .closes(0)
            .expect(0, "+RESET\r\n-NOAUTH")
            .expect(0, "unauthenticated multibulk length"),
        Script::new("unauthenticated_multibulk_length_again")
            .send([cmd(&["PING"]), rpush(11)].concat())
            .closes(0)
            .expect(0, "-NOAUTH Authentication required.\r\n-ERR Protocol error"),
    ]
}
