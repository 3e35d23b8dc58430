//! What a record holds and what never reaches the trail: passwords and values, script error
//! text; when a command's time is taken; binary and long key lists.

use super::*;

/// Sends one command of text arguments and returns its reply.
pub(super) async fn call(client: &mut RawClient, args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.call(&args).await
}

#[tokio::test]
async fn passwords_and_values_never_reach_the_trail() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("secrets", "").await;
    let secret = "canary-secret-7f3a";
    let value = "canary-value-9b2c";
    let mut client = RawClient::connect(proxy.addr).await;
    let reply = call(&mut client, &["AUTH", secret]).await;
    assert!(reply.starts_with(b"-"), "no password is set: {:?}", String::from_utf8_lossy(&reply));
    assert_eq!(call(&mut client, &["CONFIG", "SET", "requirepass", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["AUTH", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["CONFIG", "SET", "requirepass", ""]).await, b"+OK\r\n");
    let hello = call(&mut client, &["HELLO", "3", "AUTH", "default", secret]).await;
    assert!(hello.starts_with(b"%"), "{:?}", String::from_utf8_lossy(&hello));
    let migrate = call(
        &mut client,
        &["MIGRATE", "127.0.0.1", "1", "", "0", "100", "AUTH", secret, "KEYS", "k"],
    )
    .await;
    assert_eq!(migrate, b"+NOKEY\r\n");
    assert_eq!(
        call(
            &mut client,
            &["ACL", "SETUSER", "canary-user", "on", &format!(">{secret}"), "+@all", "~*"]
        )
        .await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut client, &["AUTH", "canary-user", secret]).await, b"+OK\r\n");
    assert_eq!(call(&mut client, &["SET", "k", value]).await, b"+OK\r\n");
    drop(client);

    let lines =
        wait_for(dir.path(), &sink, |lines| lines.iter().any(|l| l["action"] == "session_close"))
            .await;
    proxy.shutdown().await;
    for path in audit_files(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "{} holds the password", path.display());
        assert!(!text.contains(value), "{} holds the value", path.display());
    }
    let names: Vec<(&str, Option<&str>)> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| (command_name(l), l["command"]["sub"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("auth", None),
            ("config", Some("set")),
            ("auth", None),
            ("config", Some("set")),
            ("hello", None),
            ("migrate", None),
            ("acl", Some("setuser")),
            ("auth", None),
            ("set", None),
        ]
    );
    let commands: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(commands[0]["result"]["status"], "error");
    assert!(key_strings(commands[5]).contains(&"k".to_owned()), "MIGRATE's KEYS are keys");
    assert_eq!(commands[8]["user"], "canary-user", "the user AUTH switched to");
    assert_eq!(key_strings(commands[8]), ["k"]);
}

/// `2026-11-22T04:40:00.123456Z` back to a time (proleptic Gregorian, H. Hinnant's algorithm).
fn parse_time(time: &str) -> SystemTime {
    assert!(is_rfc3339_micros_utc(time), "{time}");
    let number = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    UNIX_EPOCH + Duration::from_secs(seconds as u64) + Duration::from_micros(number(20..26) as u64)
}

/// A command's `time` is when its request arrived, not when its reply came.
#[tokio::test]
async fn command_time_is_when_the_request_arrived() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("time", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    let sent_at = SystemTime::now();
    assert_eq!(call(&mut client, &["BLPOP", "nothing", "0.3"]).await, b"*-1\r\n");
    let replied_at = SystemTime::now();
    sink.sync();
    let lines = lines(dir.path());
    let blpop = lines.iter().find(|l| l["kind"] == "command").unwrap();
    assert_eq!(command_name(blpop), "blpop");
    assert_eq!(blpop["result"]["status"], "ok");
    let time = parse_time(blpop["time"].as_str().unwrap());
    let slack = Duration::from_millis(100);
    assert!(time + Duration::from_millis(1) >= sent_at, "{time:?} before {sent_at:?}");
    assert!(time <= sent_at + slack, "the time of the request, not of the reply");
    let duration = Duration::from_micros(blpop["duration_us"].as_u64().unwrap());
    assert!(duration >= Duration::from_millis(290), "{duration:?}");
    assert!(time + duration <= replied_at + Duration::from_millis(1));
    proxy.shutdown().await;
}

/// An error reply's text is the script's (or a module's) to choose: its first word is not
/// always an error code, and must not carry a value into the trail, whatever its shape (an
/// upper-case token such as an AWS access key id looks like a code).
#[tokio::test]
async fn script_error_text_never_reaches_the_trail() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("script-error", "").await;
    let values = ["canary-value-5e1d", "AKIACANARY5E1D7F3A"];
    let mut client = RawClient::connect(proxy.addr).await;
    for value in values {
        let reply = call(&mut client, &["EVAL", "return {err=ARGV[1]}", "0", value]).await;
        assert_eq!(reply, format!("-{value}\r\n").into_bytes(), "Redis sends the text as is");
    }
    sink.sync();
    let lines = lines(dir.path());
    let evals: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!(evals.len(), values.len());
    for eval in &evals {
        assert_eq!(command_name(eval), "eval");
        assert_eq!(eval["result"]["status"], "error");
    }
    for path in audit_files(dir.path()) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (value, eval) in values.iter().zip(&evals) {
            assert!(
                !text.contains(value),
                "the script's argument {value} reached {} as result.error_code: {}",
                path.display(),
                eval["result"]
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn binary_keys_are_base64_and_long_key_lists_are_truncated() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("keys", "").await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"SET", b"\xff\x00", b"v"]).await, b"+OK\r\n");
    let long: Vec<Vec<u8>> =
        (0..20).map(|i| format!("{i:02}{}", "k".repeat(1022)).into_bytes()).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(long.iter().map(Vec::as_slice));
    client.call(&mget).await;
    // Exactly the cap (16 keys of 1 KiB) is not truncated.
    client.call(&mget[..17]).await;
    sink.sync();
    let raw = trail_lines(dir.path());
    let lines = parse(&raw);
    let commands: Vec<(&Value, &String)> =
        lines.iter().zip(&raw).filter(|(l, _)| l["kind"] == "command").collect();
    assert_eq!(commands.len(), 3);

    let (binary, _) = commands[0];
    assert_eq!(binary["keys"], serde_json::json!([{"b64": "/wA="}]));
    // Keys listed whole and in clear: the counts would restate them, and are left out.
    for restated in ["key_count", "key_bytes", "keys_truncated"] {
        assert!(binary.get(restated).is_none(), "{restated}: {binary}");
    }

    let (truncated, line) = commands[1];
    assert_eq!(truncated["key_count"], 20);
    assert_eq!(truncated["key_bytes"], 20 * 1024);
    assert_eq!(truncated["keys_truncated"], true);
    let shown = key_strings(truncated);
    assert_eq!(shown.len(), 16, "16 KiB of key names are written");
    assert!(shown.iter().zip(&long).all(|(s, l)| s.as_bytes() == l.as_slice()), "the first ones");
    assert!(line.len() < 16 * 1024 + 2048, "the line stays bounded: {}", line.len());

    let (at_cap, _) = commands[2];
    assert!(at_cap.get("key_count").is_none() && at_cap.get("keys_truncated").is_none());
    assert_eq!(key_strings(at_cap).len(), 16);
    // A reader of the query API gets them back.
    let records = trail(dir.path());
    let records: Vec<&Value> = records.iter().filter(|l| l["kind"] == "command").collect();
    assert_eq!((&records[0]["key_count"], &records[0]["key_bytes"]), (&json!(1), &json!(2)));
    assert_eq!(
        (&records[2]["key_count"], &records[2]["keys_truncated"]),
        (&json!(16), &json!(false))
    );
    assert_eq!(records[1]["key_count"], 20);
    proxy.shutdown().await;
}
