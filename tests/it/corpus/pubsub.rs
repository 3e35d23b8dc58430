//! Scripts about RESP3 (HELLO 3 and every reply type) and pub/sub.

use super::*;

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
            .expect_either(
                0,
                "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
                "-NOSUB 'unsubscribe' command executed not in subscribed mode\r\n",
            ),
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
