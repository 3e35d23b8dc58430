//! TLS on both sides against a real `redis-server --tls-port`: every combination of plain and
//! TLS, mutual TLS with certificates mapped to users, the handshake's facts in the audit trail,
//! bad input turned away cleanly, and certificates reloaded without dropping connections.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::certs::{self, Authority, Issued};
use crate::support::client::encode_command;
use crate::support::scratch::trail;
use crate::support::{RawClient, RedisServer, Scratch, TestProxy};

/// A Redis with a TLS port (clients certificates not required) beside its plain one.
fn tls_redis(ca: &Authority, server: &Issued) -> (RedisServer, SocketAddr) {
    let port = crate::support::redis::free_port();
    let redis = RedisServer::start(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        server.cert_file.to_str().unwrap(),
        "--tls-key-file",
        server.key_file.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.ca_file.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    (redis, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `[tls]` and `[upstream.tls]` sections (each optional) for these files.
fn tls_toml(
    ca: &Authority,
    server: &Issued,
    client_auth: &str,
    user_from: &str,
    upstream: bool,
) -> String {
    let mut toml = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_auth = \"{client_auth}\"\nuser_from = \"{user_from}\"\nhandshake_timeout_ms = 2000\n",
        server.cert_file.display(),
        server.key_file.display(),
        ca.ca_file.display()
    );
    if upstream {
        toml.push_str(&format!(
            "[upstream.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
            ca.ca_file.display()
        ));
    }
    toml
}

/// One command over any stream, its whole reply.
async fn call<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    args: &[&[u8]],
) -> Vec<u8> {
    stream.write_all(&encode_command(args)).await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(len) = crate::support::client::reply_len(&buffer) {
            return buffer[..len].to_vec();
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed before a whole reply: {:?}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_and_certificates_mapped_to_users() {
    crate::require_redis!();
    let scratch = Scratch::new("tls-both");
    let dir = scratch.path();
    let ca = Authority::new(dir, "main");
    let server = ca.server(dir, "server");
    let (alice, bob) = (ca.client(dir, "alice"), ca.client(dir, "bob"));
    let (redis, redis_tls) = tls_redis(&ca, &server);
    let users = dir.join("users.acl");
    std::fs::write(&users, "user default on nopass ~* &* +@all\nuser alice on >pw ~* &* +@all\n")
        .unwrap();
    let toml = format!(
        "{}[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\n",
        tls_toml(&ca, &server, "optional", "cn", true),
        users.display()
    );
    let audit_dir = dir.join("audit");
    let (proxy, sink) = TestProxy::start_audited(redis_tls, &audit_dir, &toml).await;

    // TLS → TLS, no client certificate: the default user.
    let mut anonymous =
        certs::connect(proxy.tls_addr(), certs::client_config(&ca.ca_file, None)).await.unwrap();
    assert_eq!(call(&mut anonymous, &[b"SET", b"k", b"v"]).await, b"+OK\r\n");
    assert_eq!(call(&mut anonymous, &[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    assert_eq!(call(&mut anonymous, &[b"ACL", b"WHOAMI"]).await, b"$7\r\ndefault\r\n");
    // Mutual TLS: alice's certificate makes her alice without AUTH.
    let mut mapped =
        certs::connect(proxy.tls_addr(), certs::client_config(&ca.ca_file, Some(&alice)))
            .await
            .unwrap();
    assert_eq!(call(&mut mapped, &[b"ACL", b"WHOAMI"]).await, b"$5\r\nalice\r\n");
    // bob has a valid certificate but no user: he stays the default user, and it is recorded.
    let mut unmapped =
        certs::connect(proxy.tls_addr(), certs::client_config(&ca.ca_file, Some(&bob)))
            .await
            .unwrap();
    assert_eq!(call(&mut unmapped, &[b"ACL", b"WHOAMI"]).await, b"$7\r\ndefault\r\n");
    // A TLS 1.2 client.
    let tls12 = certs::client_config_tls12(&ca.ca_file);
    let mut old_tls = certs::connect(proxy.tls_addr(), tls12).await.unwrap();
    assert_eq!(call(&mut old_tls, &[b"PING"]).await, b"+PONG\r\n");
    // plain → TLS: the plain listener still serves, over the same TLS upstream.
    let mut plain = RawClient::connect(proxy.addr).await;
    assert_eq!(plain.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    // The data really went to the TLS Redis.
    let mut direct = RawClient::connect(redis.addr).await;
    assert_eq!(direct.call(&[b"GET", b"k"]).await, b"$1\r\nv\r\n");
    // redis-cli --tls, a real client, through the proxy.
    let cli = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert", ca.ca_file.to_str().unwrap(), "-h", "127.0.0.1"])
        .args(["-p", &proxy.tls_addr().port().to_string(), "--sni", "localhost", "GET", "k"])
        .output();
    if let Ok(output) = cli {
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "v",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    sink.sync();
    let lines = trail(&audit_dir);
    let opens: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["action"] == "session_open" && l["tls"].is_object()).collect();
    assert!(opens.len() >= 3, "{opens:?}");
    let alice_open = opens
        .iter()
        .find(|l| l["tls"]["client_subject"] == "CN=alice")
        .expect("alice's session shows her certificate");
    assert!(alice_open["tls"]["version"].as_str().unwrap().starts_with("TLSv1."));
    assert!(!alice_open["tls"]["cipher"].as_str().unwrap().is_empty());
    let fingerprint = alice_open["tls"]["client_cert_sha256"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 64);
    assert!(lines.iter().any(|l| l["action"] == "session_auth" && l["user"] == "alice"));
    let versions: Vec<&str> = opens.iter().filter_map(|l| l["tls"]["version"].as_str()).collect();
    assert!(versions.contains(&"TLSv1.2") && versions.contains(&"TLSv1.3"), "{versions:?}");
    let unmapped_event = lines
        .iter()
        .find(|l| l["action"] == "auth_failure" && l["reason"] == "tls-cert")
        .expect("bob's unmapped certificate is a security event");
    assert_eq!(unmapped_event["username"], "bob");
    assert_eq!(unmapped_event["object"], "CN=bob");
    assert!(lines.iter().any(|l| l["action"] == "auth_success"
        && l["reason"] == "tls-cert"
        && l["username"] == "alice"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_input_is_turned_away_without_leaking_a_slot() {
    crate::require_redis!();
    let scratch = Scratch::new("tls-bad");
    let dir = scratch.path();
    let ca = Authority::new(dir, "main");
    let other = Authority::new(dir, "other");
    let server = ca.server(dir, "server");
    let stranger = other.client(dir, "stranger");
    let expired = ca.expired_client(dir, "late");
    let redis = RedisServer::start(&[]);
    let toml =
        format!("[proxy]\nmax_clients = 2\n{}", tls_toml(&ca, &server, "required", "none", false));
    let audit_dir = dir.join("audit");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;

    // Plain text on the TLS port.
    let mut plain_on_tls = tokio::net::TcpStream::connect(proxy.tls_addr()).await.unwrap();
    plain_on_tls.write_all(b"PING\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain_on_tls.read_to_end(&mut rest),
    )
    .await;
    // A TLS client on the plain port.
    let tls_on_plain = certs::connect(proxy.addr, certs::client_config(&ca.ca_file, None)).await;
    assert!(tls_on_plain.is_err(), "no TLS on the plain listener");
    // Certificates the proxy must refuse: none, from another CA, expired.
    for identity in [None, Some(&stranger), Some(&expired)] {
        let client =
            certs::connect(proxy.tls_addr(), certs::client_config(&ca.ca_file, identity)).await;
        // With TLS 1.3 the client learns of the refusal at its first read.
        if let Ok(mut stream) = client {
            let _ = stream.write_all(b"*1\r\n$4\r\nPING\r\n").await;
            let mut buffer = [0u8; 64];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
                    .await;
            assert!(!matches!(read, Ok(Ok(n)) if n > 0), "refused: no reply");
        }
    }
    // Five failures and max_clients = 2: a good client still gets in.
    let alice = ca.client(dir, "alice");
    let mut good =
        certs::connect(proxy.tls_addr(), certs::client_config(&ca.ca_file, Some(&alice)))
            .await
            .unwrap();
    assert_eq!(call(&mut good, &[b"PING"]).await, b"+PONG\r\n");

    let mut lines = Vec::new();
    for _ in 0..300 {
        sink.sync();
        lines = trail(&audit_dir);
        if lines.iter().filter(|l| l["action"] == "tls_rejected").count() >= 4
            && lines.iter().any(|l| l["close"]["reason"] == "tls_on_plain_port")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rejected: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["action"] == "tls_rejected")
        .map(|l| (l["reason"].as_str().unwrap(), l["object"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert_eq!(rejected[0].0, "tls-handshake", "{rejected:?}");
    assert!(rejected[1..].iter().all(|(reason, _)| *reason == "tls-cert"), "{rejected:?}");
    assert!(
        lines.iter().any(|l| l["close"]["reason"] == "tls_on_plain_port"),
        "the plain port says why it closed"
    );
    proxy.shutdown().await;

    // An upstream whose certificate does not name the host the proxy expects.
    let (_tls_redis, redis_tls) = tls_redis(&ca, &server);
    let wrong = format!(
        "[upstream.tls]\nca_file = \"{}\"\nserver_name = \"wrong.example\"\n",
        ca.ca_file.display()
    );
    let proxy = TestProxy::start_with(redis_tls, &wrong).await;
    let mut client = RawClient::connect(proxy.addr).await;
    let reply = String::from_utf8_lossy(&client.call(&[b"PING"]).await).into_owned();
    assert!(
        reply.starts_with("-ERR upstream 127.0.0.1:") && reply.contains("TLS handshake failed"),
        "{reply}"
    );
    proxy.shutdown().await;

    // insecure_skip_verify: the same certificate, from a CA the proxy does not even know, is
    // accepted (the handshake's signatures are still checked).
    let skip = "[upstream.tls]\nserver_name = \"wrong.example\"\ninsecure_skip_verify = true\n";
    let proxy = TestProxy::start_with(redis_tls, skip).await;
    let mut client = RawClient::connect(proxy.addr).await;
    assert_eq!(client.call(&[b"PING"]).await, b"+PONG\r\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    crate::require_redis!();
    let scratch = Scratch::new("tls-reload");
    let dir = scratch.path();
    let ca = Authority::new(dir, "main");
    let first = ca.server(dir, "server");
    let redis = RedisServer::start(&[]);
    let toml = tls_toml(&ca, &first, "none", "none", false);
    let audit_dir = dir.join("audit");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let config = certs::client_config(&ca.ca_file, None);
    let mut before = certs::connect(proxy.tls_addr(), config.clone()).await.unwrap();
    assert_eq!(call(&mut before, &[b"PING"]).await, b"+PONG\r\n");
    let served = |stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        stream.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    let old_cert = served(&before);

    // A new certificate in the same files, reloaded while a second connection is busy.
    let mut busy = certs::connect(proxy.tls_addr(), config.clone()).await.unwrap();
    let load = tokio::spawn(async move {
        for i in 0..400u32 {
            let value = i.to_string();
            assert_eq!(call(&mut busy, &[b"SET", b"n", value.as_bytes()]).await, b"+OK\r\n");
        }
    });
    let second = ca.server(dir, "server-next");
    for _ in 0..5 {
        std::fs::copy(&second.cert_file, &first.cert_file).unwrap();
        std::fs::copy(&second.key_file, &first.key_file).unwrap();
        proxy.reload_tls().expect("valid files");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    load.await.expect("the busy connection never failed");
    for _ in 0..50 {
        assert_eq!(
            call(&mut before, &[b"PING"]).await,
            b"+PONG\r\n",
            "the open connection goes on"
        );
    }
    let mut after = certs::connect(proxy.tls_addr(), config.clone()).await.unwrap();
    assert_ne!(served(&after), old_cert, "new handshakes get the new certificate");
    let new_cert = served(&after);

    // A broken file: the reload fails, the certificate in force stays.
    std::fs::write(&first.cert_file, "not a certificate").unwrap();
    let error = proxy.reload_tls().expect_err("broken certificate");
    assert!(error.contains("server.pem"), "{error}");
    let mut still = certs::connect(proxy.tls_addr(), config).await.unwrap();
    assert_eq!(served(&still), new_cert);
    assert_eq!(call(&mut still, &[b"PING"]).await, b"+PONG\r\n");
    assert_eq!(call(&mut after, &[b"PING"]).await, b"+PONG\r\n");

    sink.sync();
    let actions: Vec<String> = trail(&audit_dir)
        .iter()
        .filter(|l| l["action"].as_str().is_some_and(|a| a.starts_with("tls_reload")))
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions[..5], ["tls_reload"; 5]);
    assert_eq!(actions[5..], ["tls_reload_failed"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    crate::require_redis!();
    let scratch = Scratch::new("tls-timeout");
    let dir = scratch.path();
    let ca = Authority::new(dir, "main");
    let server = ca.server(dir, "server");
    let redis = RedisServer::start(&[]);
    let toml = tls_toml(&ca, &server, "none", "none", false)
        .replace("handshake_timeout_ms = 2000", "handshake_timeout_ms = 200");
    let audit_dir = dir.join("audit");
    let (proxy, sink) = TestProxy::start_audited(redis.addr, &audit_dir, &toml).await;
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(proxy.tls_addr()).await.unwrap();
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), silent.read_to_end(&mut rest))
            .await;
    assert!(closed.is_ok(), "closed by the proxy, not left open");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150), "{:?}", started.elapsed());
    sink.sync();
    let rejected: Vec<String> = trail(&audit_dir)
        .iter()
        .filter(|l| l["action"] == "tls_rejected")
        .map(|l| format!("{} {}", l["reason"].as_str().unwrap(), l["object"].as_str().unwrap()))
        .collect();
    assert_eq!(rejected, ["tls-handshake handshake timed out"]);
    proxy.shutdown().await;
}
