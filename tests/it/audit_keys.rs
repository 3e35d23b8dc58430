//! `audit.keys`: key names in clear, as HMAC-SHA256, or not at all.

use crate::support::scratch::trail;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

async fn keys_written(redis: &RedisServer, toml: &str) -> Vec<serde_json::Value> {
    let dir = Scratch::new("keys");
    let (proxy, _audit) = TestProxy::start_audited(redis.addr, dir.path(), toml).await;
    let mut client = RawClient::connect(proxy.addr).await;
    client.call(&[b"SET", b"user:alice@example.com", b"v"]).await;
    client.call(&[b"GET", b"user:alice@example.com"]).await;
    client.call(&[b"MGET", b"a", b"b"]).await;
    proxy.shutdown().await;
    let lines = trail(dir.path());
    let text = lines.iter().map(|l| l.to_string()).collect::<String>();
    if !toml.is_empty() {
        assert!(!text.contains("alice"), "the key name leaked: {text}");
    }
    lines.into_iter().filter(|l| l["kind"] == "command").collect()
}

#[tokio::test]
async fn keys_in_clear_as_hmac_or_off() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let clear = keys_written(&redis, "").await;
    assert_eq!(clear[0]["keys"], serde_json::json!(["user:alice@example.com"]));

    let secret = Scratch::new("hmac-key");
    std::fs::create_dir_all(secret.path()).unwrap();
    let key_file = secret.path().join("key");
    std::fs::write(&key_file, "a-secret-hmac-key-of-32-bytes!!!\n").unwrap();
    let toml = format!("[audit]\nkeys = \"hmac\"\nhmac_key_file = \"{}\"\n", key_file.display());
    let hmac = keys_written(&redis, &toml).await;
    let first = hmac[0]["keys"][0]["hmac"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 32);
    assert_eq!(hmac[1]["keys"][0]["hmac"], first.as_str(), "the same key, the same value");
    assert_ne!(hmac[2]["keys"][0]["hmac"], hmac[2]["keys"][1]["hmac"]);
    assert_eq!(hmac[0]["key_count"], 1);

    let off = keys_written(&redis, "[audit]\nkeys = \"off\"\n").await;
    assert!(off.iter().all(|l| l.get("keys").is_none()));
    assert_eq!(off[2]["key_count"], 2);
    assert_eq!(off[0]["key_bytes"], 22);
}
