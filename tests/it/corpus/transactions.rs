//! Scripts about transactions, blocking commands, MONITOR and CLIENT REPLY.

use super::*;

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
            .expect_either(
                0,
                "-ERR MULTI calls can not be nested",
                "+OK\r\n-ERR Command not allowed inside a transaction\r\n",
            ),
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
            .expect_either(
                0,
                "WATCH inside MULTI is not allowed",
                "+OK\r\n-ERR Command not allowed inside a transaction\r\n",
            ),
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
