//! Every command yields exactly one record, in order, with the session's state.

use redis_audit_proxy::event::{ReplySource, ReplyStatus};

use crate::support::{RawClient, RedisServer, TestProxy};

#[tokio::test]
async fn every_command_yields_one_record_in_order() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let mut script = Vec::new();
    for i in 0..500 {
        script.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$4\r\nk{i:03}\r\n$1\r\nv\r\n").as_bytes(),
        );
    }
    script.extend_from_slice(b"SELECT 2\r\nGET nokey\r\nLPUSH k000 x\r\nPING\r\n");
    client.send(&script).await;
    for _ in 0..504 {
        client.read_reply().await;
    }
    let records = proxy.sink.wait_for(504).await;
    assert_eq!(records.len(), 504);
    for (i, record) in records.iter().take(500).enumerate() {
        assert_eq!(record.args[1].as_ref(), format!("k{i:03}").as_bytes());
        assert_eq!(record.status, ReplyStatus::Ok);
        assert_eq!(record.db, 0);
    }
    assert_eq!(records[500].args[0].as_ref(), b"SELECT");
    assert_eq!(records[501].db, 2, "GET ran in db 2 after SELECT");
    assert_eq!(records[502].status, ReplyStatus::Ok, "k000 does not exist in db 2");
    assert_eq!(records[503].source, ReplySource::Upstream);
    assert!(records.iter().all(|r| r.conn_id == records[0].conn_id));
}

/// Names and statuses of the records, for compact assertions.
fn summary(records: &[redis_audit_proxy::event::CommandRecord]) -> Vec<(String, &'static str)> {
    records.iter().map(|r| (r.command_name().to_lowercase(), r.status.as_str())).collect()
}

fn owned(pairs: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[tokio::test]
async fn pubsub_messages_are_not_commands_and_confirmations_are_counted() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut subscriber = RawClient::connect(proxy.addr).await;
    let mut publisher = RawClient::connect(redis.addr).await;
    subscriber.send(b"SUBSCRIBE a b\r\nPSUBSCRIBE p*\r\n").await;
    for _ in 0..3 {
        subscriber.read_reply().await;
    }
    assert_eq!(publisher.call(&[b"PUBLISH", b"a", b"hello"]).await, b":1\r\n");
    assert_eq!(publisher.call(&[b"PUBLISH", b"px", b"hi"]).await, b":1\r\n");
    let message = subscriber.read_reply().await;
    assert!(message.starts_with(b"*3\r\n$7\r\nmessage\r\n"), "{message:?}");
    subscriber.read_reply().await; // pmessage
                                   // A message arriving between a command and its reply must not be taken for the reply.
    subscriber.send(b"PING\r\n").await;
    publisher.call(&[b"PUBLISH", b"b", b"x"]).await;
    // Argument-less UNSUBSCRIBE confirms both channels; PUNSUBSCRIBE the pattern.
    subscriber.send(b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\nPING\r\n").await;
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(subscriber.read_reply().await);
    }
    assert_eq!(replies.last().unwrap(), b"+PONG\r\n", "out of subscribed mode");
    let records = proxy.sink.wait_for(6).await;
    assert_eq!(
        summary(&records),
        owned(&[
            ("subscribe", "ok"),
            ("psubscribe", "ok"),
            ("ping", "ok"),
            ("unsubscribe", "ok"),
            ("punsubscribe", "ok"),
            ("ping", "ok")
        ])
    );
    assert_eq!(
        records[0].reply_bytes,
        2 * b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n".len() as u64
    );
}

#[tokio::test]
async fn resp3_pushes_interleave_with_replies() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let mut other = RawClient::connect(redis.addr).await;
    client.call(&[b"HELLO", b"3"]).await;
    client.call(&[b"SUBSCRIBE", b"ch"]).await;
    client.call(&[b"CLIENT", b"TRACKING", b"on"]).await;
    client.call(&[b"GET", b"tracked"]).await;
    other.call(&[b"SET", b"tracked", b"1"]).await; // invalidation push
    other.call(&[b"PUBLISH", b"ch", b"m"]).await; // message push
    client.send(b"GET tracked\r\nPING\r\n").await;
    let (mut pushes, mut replies) = (0, Vec::new());
    while replies.len() < 2 {
        let reply = client.read_reply().await;
        if reply.first() == Some(&b'>') {
            pushes += 1;
        } else {
            replies.push(reply);
        }
    }
    assert_eq!(pushes, 2, "the invalidation and the message");
    assert_eq!(replies, [b"$1\r\n1\r\n".to_vec(), b"+PONG\r\n".to_vec()]);
    let records = proxy.sink.wait_for(6).await;
    assert_eq!(
        summary(&records),
        owned(&[
            ("hello", "ok"),
            ("subscribe", "ok"),
            ("client", "ok"),
            ("get", "ok"),
            ("get", "ok"),
            ("ping", "ok")
        ])
    );
}

#[tokio::test]
async fn multi_exec_queues_and_applies_select_at_exec() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"MULTI\r\nSELECT 3\r\nSET k v\r\nSELECT 99\r\nINCR k\r\nEXEC\r\nGET k\r\nMULTI\r\nNOSUCH\r\nEXEC\r\n")
        .await;
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(client.read_reply().await);
    }
    assert!(replies[5].starts_with(b"*4\r\n+OK\r\n+OK\r\n-ERR DB index"), "{:?}", replies[5]);
    assert_eq!(replies[6], b"$1\r\nv\r\n");
    let records = proxy.sink.wait_for(10).await;
    assert_eq!(
        summary(&records),
        owned(&[
            ("multi", "ok"),
            ("select", "queued"),
            ("set", "queued"),
            ("select", "queued"),
            ("incr", "queued"),
            ("exec", "ok"),
            ("get", "ok"),
            ("multi", "ok"),
            ("nosuch", "error"),
            ("exec", "error")
        ])
    );
    assert_eq!(records[6].db, 3, "the successful queued SELECT applied at EXEC");
    assert_eq!(records[9].error_code.as_deref(), Some(&b"EXECABORT"[..]));
}

#[tokio::test]
async fn client_reply_off_and_skip_are_recorded_as_skipped() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"CLIENT REPLY SKIP\r\nSET a 1\r\nPING\r\nCLIENT REPLY OFF\r\nSET b 2\r\nCLIENT REPLY ON\r\nGET b\r\n")
        .await;
    assert_eq!(client.read_reply().await, b"+PONG\r\n");
    assert_eq!(client.read_reply().await, b"+OK\r\n");
    assert_eq!(client.read_reply().await, b"$1\r\n2\r\n");
    let records = proxy.sink.wait_for(7).await;
    assert_eq!(
        summary(&records),
        owned(&[
            ("client", "skipped"),
            ("set", "skipped"),
            ("ping", "ok"),
            ("client", "skipped"),
            ("set", "skipped"),
            ("client", "ok"),
            ("get", "ok")
        ])
    );
}

#[tokio::test]
async fn monitor_lines_are_not_replies() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut monitor = RawClient::connect(proxy.addr).await;
    let mut other = RawClient::connect(redis.addr).await;
    assert_eq!(monitor.call(&[b"MONITOR"]).await, b"+OK\r\n");
    other.call(&[b"SET", b"seen", b"1"]).await;
    let line = monitor.read_reply().await;
    assert!(line.starts_with(b"+") && line.windows(5).any(|w| w == b"\"SET\""), "{line:?}");
    monitor.send(b"PING\r\nRESET\r\nGET seen\r\n").await;
    let mut replies = Vec::new();
    while replies.last().map(Vec::as_slice) != Some(b"$1\r\n1\r\n") {
        replies.push(monitor.read_reply().await);
    }
    assert!(replies.contains(&b"+PONG\r\n".to_vec()) && replies.contains(&b"+RESET\r\n".to_vec()));
    let records = proxy.sink.wait_for(4).await;
    assert_eq!(
        summary(&records),
        owned(&[("monitor", "ok"), ("ping", "ok"), ("reset", "ok"), ("get", "ok")])
    );
}

#[tokio::test]
async fn auth_and_hello_set_the_user_and_protocol_errors_are_recorded() {
    crate::require_redis!();
    let redis = RedisServer::start(&["--requirepass", "pw"]);
    let mut admin = RawClient::connect(redis.addr).await;
    admin.call(&[b"AUTH", b"pw"]).await;
    admin.call(&[b"ACL", b"SETUSER", b"alice", b"on", b">secret", b"~*", b"+@all"]).await;
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(b"GET k\r\nAUTH alice wrong\r\nAUTH alice secret\r\nGET k\r\nHELLO 3 AUTH default pw SETNAME app\r\nGET k\r\n*1\r\n$-5\r\n")
        .await;
    let output = client.read_to_close().await;
    assert!(output.starts_with(b"-NOAUTH"), "{output:?}");
    assert!(output.ends_with(b"-ERR Protocol error: invalid bulk length\r\n"));
    let records = proxy.sink.wait_for(7).await;
    let users: Vec<String> =
        records.iter().map(|r| String::from_utf8_lossy(&r.user).into_owned()).collect();
    assert_eq!(users, ["default", "default", "default", "alice", "alice", "default", "default"]);
    assert_eq!(records[0].error_code.as_deref(), Some(&b"NOAUTH"[..]));
    assert_eq!(records[1].error_code.as_deref(), Some(&b"WRONGPASS"[..]));
    assert_eq!(records[6].source, ReplySource::Proxy);
    assert_eq!(records[6].status, ReplyStatus::Error);
    // The secret never shows in a record's debug output.
    let debug = format!("{records:?}");
    assert!(!debug.contains("secret") && !debug.contains("pw\""), "{debug}");
}

#[tokio::test]
async fn records_carry_class_keys_and_categories() {
    use redis_audit_proxy::command::Class;
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let read_only = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])";
    let sha = {
        let reply = client.call(&[b"SCRIPT", b"LOAD", read_only.as_bytes()]).await;
        String::from_utf8(reply[5..45].to_vec()).unwrap()
    };
    let upper_sha = sha.to_uppercase();
    let lines: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", b"k", b"v", b"GET"],
        vec![b"MGET", b"a", b"b"],
        vec![b"CONFIG", b"GET", b"maxmemory"],
        vec![b"NOSUCHCOMMAND", b"x"],
        vec![b"MULTI"],
        vec![b"GET", b"a"],
        vec![b"EXEC"],
        vec![b"MULTI"],
        vec![b"GET", b"a"],
        vec![b"DEL", b"a"],
        vec![b"EXEC"],
        vec![b"EVAL", b"return 1", b"0"],
        vec![b"EVAL", b"#!lua\nreturn 1", b"0"],
        vec![b"EVALSHA", sha.as_bytes(), b"1", b"k"],
        vec![b"EVALSHA", upper_sha.as_bytes(), b"1", b"k"],
    ];
    for line in &lines {
        client.call(line).await;
    }
    let records = proxy.sink.wait_for(lines.len() + 1).await;
    let classes: Vec<Option<Class>> = records.iter().map(|r| r.class).collect();
    use Class::{NonReadWrite as N, Read as R, Write as W};
    assert_eq!(
        classes,
        [
            Some(N), // SCRIPT LOAD
            Some(W),
            Some(R),
            Some(N),
            None,
            Some(N),
            Some(R),
            Some(R), // EXEC of a read
            Some(N),
            Some(R),
            Some(W),
            Some(W), // EXEC of a read and a write
            Some(N), // EVAL without shebang: static flags
            Some(W), // shebang without no-writes
            Some(R), // EVALSHA of a no-writes script, learned from SCRIPT LOAD
            Some(R),
        ]
    );
    let set = &records[1];
    assert_eq!(set.key_names().collect::<Vec<_>>(), [&bytes::Bytes::from_static(b"k")]);
    assert_eq!(set.keys[0].flags.names(), ["RW", "access", "update"]);
    assert_eq!(records[2].key_names().count(), 2);
    let config_get = records[3].command.as_ref().unwrap();
    assert_eq!(config_get.name, "config|get");
    assert!(config_get.categories.iter().any(|c| c == "@admin"));
    assert!(records[4].command.is_none() && records[4].keys.is_empty());
    assert_eq!(records[14].key_names().count(), 1);
}

#[tokio::test]
async fn fcall_follows_the_flags_its_function_was_registered_with() {
    use redis_audit_proxy::command::Class;
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let proxy = TestProxy::start(redis.addr).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let library = "#!lua name=lib\n\
        redis.register_function{function_name='reader', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n\
        redis.register_function('writer', function(keys, args) return redis.call('SET', keys[1], 'x') end)\n";
    assert_eq!(client.call(&[b"FUNCTION", b"LOAD", library.as_bytes()]).await, b"$3\r\nlib\r\n");
    let mut direct = RawClient::connect(redis.addr).await;
    let other = "#!lua name=other\nredis.register_function('elsewhere', function() return 1 end)";
    direct.call(&[b"FUNCTION", b"LOAD", other.as_bytes()]).await;
    for line in [
        &[&b"FCALL"[..], b"reader", b"1", b"k"][..],
        &[b"FCALL", b"writer", b"1", b"k"],
        &[b"FCALL_RO", b"reader", b"1", b"k"],
        &[b"FCALL", b"elsewhere", b"0"],
    ] {
        let reply = client.call(line).await;
        assert!(!reply.starts_with(b"-"), "{:?}", String::from_utf8_lossy(&reply));
    }
    let records = proxy.sink.wait_for(5).await;
    let classes: Vec<Option<Class>> = records.iter().map(|r| r.class).collect();
    assert_eq!(
        classes,
        [
            Some(Class::Write), // FUNCTION LOAD
            Some(Class::Read),
            Some(Class::Write),
            Some(Class::Read),
            // Loaded behind the proxy's back: the static flags.
            Some(Class::NonReadWrite),
        ]
    );
    assert_eq!(records[1].key_names().next().map(|k| k.as_ref()), Some(&b"k"[..]));
}
