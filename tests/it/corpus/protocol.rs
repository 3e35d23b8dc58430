//! Scripts about the request protocol: inline commands, protocol errors, pipelines, binary
//! keys and values, large values.

use super::*;

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
