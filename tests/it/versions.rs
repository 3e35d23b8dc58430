//! The differential corpus against servers newer than Debian's 7.0.15: Redis 7.2.6 and Valkey
//! 8.0.1, built from `../shared/upstreams` by `scripts/ensure-upstreams.sh` (`make test` runs
//! it; a server that is not built fails these tests, saying how to build it). Where replies
//! differ by version the proxy follows the server behind it, so every byte must still be the
//! same directly and through the proxy. The ACL DRYRUN differential
//! ([`crate::acl_policy`]) and the ACL LOG tests ([`crate::acl_log_passthrough`]) run against
//! both too.

use crate::differential::{differential_tests, Over, Pool};
use crate::support::client::show;
use crate::support::redis::Server;
use crate::support::{RawClient, RedisServer, TestProxy};

differential_tests! { Over::Plain, Pool::Dedicated, Server::Redis72;
    inline_commands_redis_7_2 => inline,
    protocol_errors_redis_7_2 => protocol_errors,
    pipelines_redis_7_2 => pipelines,
    binary_keys_and_values_redis_7_2 => binary,
    resp3_redis_7_2 => resp3,
    pubsub_redis_7_2 => pubsub,
    transactions_redis_7_2 => transactions,
    blocking_commands_redis_7_2 => blocking,
    monitor_redis_7_2 => monitor,
    client_reply_redis_7_2 => client_reply,
    connection_state_redis_7_2 => connection_state,
    unauthenticated_redis_7_2 => unauthenticated requirepass,
}

differential_tests! { Over::Plain, Pool::Dedicated, Server::Valkey80;
    inline_commands_valkey_8_0 => inline,
    protocol_errors_valkey_8_0 => protocol_errors,
    pipelines_valkey_8_0 => pipelines,
    binary_keys_and_values_valkey_8_0 => binary,
    resp3_valkey_8_0 => resp3,
    pubsub_valkey_8_0 => pubsub,
    transactions_valkey_8_0 => transactions,
    blocking_commands_valkey_8_0 => blocking,
    monitor_valkey_8_0 => monitor,
    client_reply_valkey_8_0 => client_reply,
    connection_state_valkey_8_0 => connection_state,
    unauthenticated_valkey_8_0 => unauthenticated requirepass,
}

/// Redis 7.2.6 drops the error of a failed AUTH pipelined behind another reply
/// (`addAuthErrReply` returns when replies are pending): a direct client never gets it. The
/// proxy holds a login until nothing is in flight, so its client gets every reply, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_auth_pipelined_behind_a_reply_is_answered_through_the_proxy() {
    crate::require_server!(Server::Redis72);
    let redis = RedisServer::start_server(Server::Redis72, &["--requirepass", "s3cret"]);
    let proxy = TestProxy::start(redis.addr).await;
    let pipeline = b"PING\r\nAUTH wrong\r\nPING\r\nAUTH s3cret\r\nPING\r\n";
    let noauth = "-NOAUTH Authentication required.\r\n";
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

    let mut direct = RawClient::connect(redis.addr).await;
    direct.send(pipeline).await;
    let mut through = RawClient::connect(proxy.addr).await;
    through.send(pipeline).await;
    let expected = format!("{noauth}{wrongpass}{noauth}+OK\r\n+PONG\r\n");
    assert_eq!(show(&read_exactly(&mut through, expected.len()).await), show(expected.as_bytes()));
    // Directly, the error is lost (the replies shift by one).
    let lost = format!("{noauth}{noauth}+OK\r\n+PONG\r\n");
    assert_eq!(show(&read_exactly(&mut direct, lost.len()).await), show(lost.as_bytes()));
    proxy.shutdown().await;
}

/// Reads until `len` bytes came (the client's read times out otherwise).
async fn read_exactly(client: &mut RawClient, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        out.extend(client.read_reply().await);
    }
    out
}
