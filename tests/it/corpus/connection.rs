//! Scripts about connection state (RESET, QUIT, SELECT, names, CLIENT KILL, ...) and clients
//! that have not authenticated.

use super::*;

pub(super) fn tracking_redirect(id: u64) -> Vec<u8> {
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
        // `AUTH nouser x` is sent when no reply is waiting (see `noauth_then_auth`).
        Script::new("auth_without_password_configured")
            .send(cmds(&[&["AUTH", "secret"], &["AUTH", "default", "anything"]]))
            .sync()
            .send(cmds(&[&["AUTH", "nouser", "x"], &["PING"]]))
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

/// Redis's reply to a command before AUTH.
const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";
/// Redis's reply to a failed AUTH.
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

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
        // Each failed AUTH is sent when no reply is waiting: Redis 7.2 and Valkey 8 drop the
        // error of a failed AUTH pipelined behind other replies (the proxy holds a login until
        // nothing is in flight, so through it the error comes: `versions.rs` shows both).
        Script::new("noauth_then_auth")
            .send(cmds(&[&["PING"], &["GET", "k"]]))
            .wait_for(0, format!("{NOAUTH}{NOAUTH}"))
            .send(cmds(&[&["AUTH", "wrong"]]))
            .wait_for(0, WRONGPASS)
            .send(cmds(&[&["AUTH", "default", "wrong"]]))
            .wait_for(0, WRONGPASS)
            .send(cmds(&[&["AUTH", PASSWORD], &["GET", "k"]]))
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
