//! `audit verify --syslog-export`: a real rsyslogd's RFC 5424 export of a syslog sink's copy
//! verifies, alone and against the file trail; an edited, a removed or a reordered line is
//! named, and lines removed inside a range a `loss` line declares pass.

use std::path::Path;
use std::process::Command;

use redis_audit_proxy::audit::verify::strip_header;

use crate::support::client::encode_command;
use crate::support::rsyslog::Rsyslog;
use crate::support::scratch::trail_lines;
use crate::support::{RawClient, RedisServer, Scratch};

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// `audit verify --syslog-export FILE [--dir DIR]`: exit code, stdout, stderr.
fn verify(export: &Path, dir: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(BINARY);
    command.args(["audit", "verify", "--syslog-export"]).arg(export);
    if let Some(dir) = dir {
        command.arg("--dir").arg(dir);
    }
    let out = command.output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
}

fn msg(line: &str) -> serde_json::Value {
    serde_json::from_slice(strip_header(line.as_bytes()).unwrap()).unwrap()
}

/// From `from` on, the first index of `count` consecutive command records.
fn commands_at(export: &[String], from: usize, count: usize) -> usize {
    (from..export.len() - count)
        .find(|&i| (i..i + count).all(|j| msg(&export[j])["kind"] == "command"))
        .expect("consecutive command records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collectors_export_verifies_and_edits_outside_declared_losses_are_named() {
    crate::require_redis!();
    crate::require_rsyslog!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sink-export");
    let collector = Rsyslog::start(&dir.path().join("rsyslog"), None);
    let sink = format!(
        "[audit]\nseal_interval_ms = 50\n[[audit.sinks]]\ntype = \"syslog\"\nname = \"siem\"\n\
         address = \"{}\"\ntransport = \"tcp\"\n",
        collector.addr
    );
    let audit_dir = dir.path().join("audit");
    let (proxy, _audit) =
        crate::support::TestProxy::start_audited(redis.addr, &audit_dir, &sink).await;
    let mut client = RawClient::connect(proxy.addr).await;
    for round in 0..20 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            bytes.extend(encode_command(&[b"SET", format!("key:{round}:{i}").as_bytes(), b"v"]));
        }
        client.send(&bytes).await;
        for _ in 0..100 {
            assert_eq!(client.read_reply().await, b"+OK\r\n");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(client);
    proxy.shutdown().await;
    let file = trail_lines(&audit_dir);
    collector.wait_for(file.len());
    let text = std::fs::read_to_string(&collector.export).unwrap();
    let export: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(export.len(), file.len(), "rsyslog exported every line");
    assert!(export[0].starts_with("<"), "an RFC 5424 header: {}", export[0]);
    let work = dir.path().join("checked.log");

    // Sound, alone and against the trail; as plain JSON lines (a stdout sink's copy) too.
    let (code, out, err) = verify(&collector.export, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sound copy") && out.contains(" 0 loss lines"), "{out}");
    assert!(!out.contains(" 0 checked"), "seals were recomputed: {out}");
    let (code, out, err) = verify(&collector.export, Some(&audit_dir));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{} lines identical", file.len())), "{out}");
    let plain: Vec<String> = export
        .iter()
        .map(|l| String::from_utf8(strip_header(l.as_bytes()).unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(plain, file, "the header is all that is stripped");
    write_lines(&work, &plain);
    assert_eq!(verify(&work, Some(&audit_dir)).0, 0);

    // An edited line: its seal breaks; against the trail, the line itself is named.
    let k = commands_at(&export, export.len() / 2, 2);
    let mut edited = export.clone();
    edited[k] = edited[k].replacen("key:", "kez:", 1);
    assert_ne!(edited[k], export[k]);
    write_lines(&work, &edited);
    let (code, _, err) = verify(&work, None);
    assert_eq!(code, 1);
    assert!(err.contains("seal broken"), "{err}");
    let (code, _, err) = verify(&work, Some(&audit_dir));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("checked.log:{}: differs from", k + 1)), "{err}");

    // A removed line: the gap is named where it is.
    let mut removed = export.clone();
    removed.remove(k);
    write_lines(&work, &removed);
    let (code, _, err) = verify(&work, None);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("checked.log:{}: seq gap", k + 1)), "{err}");
    let (code, _, err) = verify(&work, Some(&audit_dir));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("checked.log:{}: the copy lacks", k + 1)), "{err}");

    // Two lines swapped.
    let mut swapped = export.clone();
    swapped.swap(k, k + 1);
    write_lines(&work, &swapped);
    let (code, _, err) = verify(&work, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("checked.log:{}:", k + 1)), "{err}");

    // A block delivered twice (a RELP sink sends again what was not acknowledged when its
    // connection broke): sound, the repetition counted; the same block edited is not.
    let mut repeated = export.clone();
    let block = export[k - 3..k + 3].to_vec();
    repeated.splice(k + 3..k + 3, block);
    write_lines(&work, &repeated);
    for against in [None, Some(audit_dir.as_path())] {
        let (code, out, err) = verify(&work, against);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("6 lines delivered twice"), "{out}");
    }
    repeated[k + 4] = repeated[k + 4].replacen("key:", "kez:", 1);
    write_lines(&work, &repeated);
    assert_eq!(verify(&work, None).0, 1);
    assert_eq!(verify(&work, Some(&audit_dir)).0, 1);

    // Lines removed inside a range a loss line declares, where the gap is: sound.
    let k = commands_at(&export, export.len() / 3, 4);
    let first = msg(&export[k])["seq"].as_u64().unwrap();
    let loss = format!(
        "{{\"time\":\"2026-12-06T00:00:00.000000Z\",\"kind\":\"system\",\"action\":\"loss\",\
         \"outcome\":\"failure\",\"lost\":{{\"sink\":\"siem\",\"reason\":\"connection_lost\",\
         \"first_seq\":{first},\"last_seq\":{},\"lines\":4}}}}",
        first + 3
    );
    let mut lossy = export;
    lossy.splice(
        k..k + 4,
        [format!("<132>1 2026-12-06T00:00:00Z host redis-audit-proxy 1 system - {loss}")],
    );
    write_lines(&work, &lossy);
    let (code, out, err) = verify(&work, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 loss lines declaring 4 lines"), "{out}");
    let (code, _, err) = verify(&work, Some(&audit_dir));
    assert_eq!(code, 0, "{err}");
    // ...but not one more than it declares.
    lossy.remove(k + 1);
    write_lines(&work, &lossy);
    assert_eq!(verify(&work, None).0, 1);
    assert_eq!(verify(&work, Some(&audit_dir)).0, 1);
}
