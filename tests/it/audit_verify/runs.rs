//! Trails of several runs: crashes (a torn line, right after a rotation), restarts, declared
//! losses, retention deletions, an idle run's seal.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_torn_line_is_recovered_by_the_next_run() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("crash");
    record_run(&redis, dir.path(), ROTATE, 10).await;
    // Make it look like a crash mid-write: no `stop`, and half a line at the end.
    let active = dir.path().join("audit.log");
    let mut all = lines(&active);
    assert_eq!(json(&all.pop().unwrap())["action"], "seal");
    let stop = all.pop().unwrap();
    assert_eq!(json(&stop)["action"], "stop");
    // The lines the crashed run left after its last seal: the next start seals them.
    let last_seal = all.iter().rposition(|line| is_seal(line)).unwrap();
    let unsealed = (all.len() - 1 - last_seal) as u64;
    let last_seal = all[last_seal].clone();
    write_lines(&active, &all);
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&stop[..stop.len() / 2]);
    std::fs::write(&active, &bytes).unwrap();
    let torn_line = all.len() as u64 + 1;
    assert_broken(dir.path(), "audit.log", Some(torn_line), |problem| {
        *problem == Problem::TornNotRecovered { next: None }
    });
    let before = audit_files(dir.path());

    let second = record_run(&redis, dir.path(), ROTATE, 1).await;
    let report = verify_dir(dir.path()).expect("recovered");
    assert_eq!(report.torn_lines_recovered, 1);
    assert_eq!((report.instances, report.unclean_instances), (2, 1), "the first run crashed");
    assert!(report.last_instance_stopped);
    assert_eq!(report.kinds.get("command"), Some(&11));

    // The crashed file was rotated away; the next file's header records the recovery and
    // chains to the last complete line before the torn one.
    let after = audit_files(dir.path());
    let rotated: Vec<&String> = after.iter().filter(|name| !before.contains(name)).collect();
    let old_active = rotated.iter().find(|name| {
        std::fs::read(dir.path().join(name)).unwrap().ends_with(&stop[..stop.len() / 2])
    });
    let old_active = old_active.expect("the crashed audit.log, rotated").to_string();
    let position = after.iter().position(|name| *name == old_active).unwrap();
    let header = json(&lines(&dir.path().join(&after[position + 1]))[0]);
    assert_eq!(header["action"], "file_open");
    assert_eq!(header["instance_id"], second.as_str());
    assert_eq!(header["recovered_torn_line"], true);
    assert_eq!(header["prev_file"], old_active.as_str());
    assert_eq!(header["chain"]["prev"], blake3_hex(&last_seal).as_str());
    assert_eq!(header["chain"]["lines"], unsealed);

    let output = verify_binary(dir.path());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("torn lines recovered: 1"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_starts_a_new_instance_that_chains_on() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("restart");
    let first = record_run(&redis, dir.path(), ROTATE, 12).await;
    let files = audit_files(dir.path());
    let second = record_run(&redis, dir.path(), ROTATE, 7).await;
    assert_ne!(first, second);
    let report = verify_dir(dir.path()).expect("intact");
    assert_eq!((report.instances, report.unclean_instances), (2, 0));
    assert_eq!(report.kinds.get("command"), Some(&19));
    assert_eq!(report.kinds.get("system"), Some(&4), "two starts, two stops");
    assert_eq!(report.torn_lines_recovered, 0);
    assert!(report.last_instance_stopped);

    // The first run's audit.log was rotated at the second start; the next file begins the
    // second run and names it.
    let after = audit_files(dir.path());
    let old_active = after[files.len() - 1].clone();
    let header = json(&lines(&dir.path().join(&after[files.len()]))[0]);
    assert_eq!(header["instance_id"], second.as_str());
    assert_eq!(header["prev_file"], old_active.as_str());
    assert_eq!(header["recovered_torn_line"], false);

    let output = verify_binary(dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8(output.stdout).unwrap().contains("instances: 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_losses_verify_and_resealed_sequence_damage_is_named() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("losses");
    // A queue too small for any command record: every command is dropped and declared.
    record_run(&redis, dir.path(), "[audit]\nqueue_max_bytes = 1\n", 5).await;
    let report = verify_dir(dir.path()).expect("declared losses are no break");
    assert_eq!((report.loss_records, report.lost_events), (1, 5));
    assert_eq!(report.kinds.get("command"), None);
    assert_eq!(report.records, 5, "start, session open, loss, session close, stop");

    let active = lines(&dir.path().join("audit.log"));
    let actions: Vec<String> =
        active.iter().map(|line| json(line)["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        actions,
        ["file_open", "start", "session_open", "loss", "session_close", "stop", "seal"]
    );
    let loss = json(&active[3]);
    assert_eq!(loss["seq"], 8);
    assert_eq!(
        loss["lost"],
        serde_json::json!({"reason": "queue_full", "first_seq": 3, "last_seq": 7, "count": 5,
                           "kinds": {"command": 5}})
    );

    // Each change below is resealed (every prev recomputed), so only the sequence shows it.
    let tamper = |tag: &str, change: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let copy = dir.copy(tag);
        let path = copy.path().join("audit.log");
        let mut all = lines(&path);
        change(&mut all);
        write_lines(&path, &all);
        reseal(copy.path());
        copy
    };
    let no_loss = tamper("no-loss", &|all| {
        all.remove(3);
    });
    assert_broken(no_loss.path(), "audit.log", Some(4), |problem| {
        *problem == Problem::SeqGap { expected: 3, found: 9 }
    });
    let wrong_count = tamper("loss-count", &|all| {
        let mut loss = json(&all[3]);
        loss["lost"]["count"] = 4.into();
        all[3] = serde_json::to_vec(&loss).unwrap();
    });
    assert_broken(
        wrong_count.path(),
        "audit.log",
        Some(4),
        |problem| matches!(problem, Problem::BadLoss { why } if why.contains("count is 4")),
    );
    let duplicated = tamper("duplicate", &|all| {
        let line = all[2].clone();
        all.insert(3, line);
    });
    assert_broken(duplicated.path(), "audit.log", Some(4), |problem| {
        *problem == Problem::SeqBackwards { expected: 3, found: 2 }
    });
    let headless = tamper("no-start", &|all| {
        all.remove(1);
    });
    assert_broken(headless.path(), "audit.log", Some(2), |problem| {
        matches!(problem, Problem::InstanceStart { seq: 2, .. })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletions_are_accepted_only_when_recorded() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("retention");
    record_run(&redis, dir.path(), "[audit]\nrotate_bytes = 4096\nretain_files = 2\n", 40).await;
    let files = audit_files(dir.path());
    assert_eq!(files.len(), 3, "two rotated files and audit.log: {files:?}");
    let report = verify_dir(dir.path()).expect("retention is no break");
    let first = json(&lines(&dir.path().join(&files[0]))[0]);
    let pruned = first["prev_file"].as_str().expect("the first file follows a deleted one");
    assert_eq!(report.pruned_before.as_deref(), Some(pruned));
    assert!(report.files_deleted >= 1);

    // The oldest remaining file removed by hand: no file_delete line records it.
    std::fs::remove_file(dir.path().join(&files[0])).unwrap();
    assert_broken(dir.path(), &files[1], Some(1), |problem| {
        *problem == Problem::UnrecordedDeletion { name: files[0].clone() }
    });
}

/// A crash between creating `audit.log` (by a rotation) and writing its header leaves an empty
/// file; the next start should chain its header to the last line before that empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_rotation_created_audit_log_is_chained_over() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("empty-active");
    record_run(&redis, dir.path(), "", 3).await;
    // What the rotation leaves when the process dies between the rename and the header.
    let stamp = redis_audit_proxy::audit::event::rfc3339_micros(std::time::SystemTime::now());
    let compact: String = stamp[..23].chars().filter(|c| *c != '-' && *c != ':').collect();
    let rotated = format!("audit-{compact}Z-0000.log");
    std::fs::rename(dir.path().join("audit.log"), dir.path().join(rotated)).unwrap();
    std::fs::write(dir.path().join("audit.log"), b"").unwrap();
    assert_broken(dir.path(), "audit.log", None, |problem| *problem == Problem::EmptyFile);

    record_run(&redis, dir.path(), "", 1).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.empty_files, report.instances), (1, 2));
}

/// A run that idles past `seal_interval_ms` before it stops: the seal the interval makes after
/// `stop` is the run's last line, and no empty seal follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_ends_with_one_seal_after_stop() {
    crate::require_redis!();
    let AuditedProxy { redis: _redis, dir, proxy, audit: _sink } =
        AuditedProxy::start("idle-seal", "[audit]\nseal_interval_ms = 20\n").await;
    RawClient::connect(proxy.addr).await.call(&[b"PING"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    proxy.shutdown().await;
    let all = lines(&dir.path().join("audit.log"));
    let actions: Vec<Value> = all.iter().map(|line| json(line)["action"].clone()).collect();
    assert_eq!(actions[actions.len() - 2..], ["stop", "seal"], "{actions:?}");
    assert!(actions.iter().filter(|a| *a == "seal").count() >= 2, "interval seals: {actions:?}");
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report.unsealed_lines, 0);
}
