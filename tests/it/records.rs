//! Every command yields exactly one record, in order, with the session's state.

use redis_audit_proxy::record::{ReplySource, ReplyStatus};

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
