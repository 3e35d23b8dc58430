//! What `audit verify` reads besides one intact v2 trail: an empty or missing directory,
//! checkpoints, a v1 trail continued by v2, SHA-256 seals mixed with BLAKE3 ones.

use super::*;

#[test]
fn an_empty_or_missing_directory_fails_with_one_line() {
    let dir = Scratch::new("empty");
    std::fs::create_dir_all(dir.path()).unwrap();
    let error = verify_dir(dir.path()).unwrap_err();
    assert_eq!((error.file, error.line, error.problem), (None, None, Problem::EmptyDirectory));
    let output = verify_binary(dir.path());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.starts_with(&format!("redis-audit-proxy: {}: no audit files", dir.path().display()))
    );

    let missing = dir.path().join("nope");
    let output = verify_binary(&missing);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot read the directory"), "{stderr}");
}

/// HMAC checkpoints: verified with the key; a trail rewritten with recomputed hashes passes the
/// chain but not the checkpoints.
#[tokio::test]
async fn checkpoints_catch_a_rewritten_trail() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let keys = Scratch::new("checkpoint-key");
    std::fs::create_dir_all(keys.path()).unwrap();
    let key_file = keys.path().join("key");
    std::fs::write(&key_file, "checkpoint-key-0123456789\n").unwrap();
    let dir = Scratch::new("checkpoints");
    let toml = format!(
        "[audit]\ncheckpoint_key_file = \"{}\"\ncheckpoint_records = 5\n",
        key_file.display()
    );
    record_run(&redis, dir.path(), &toml, 12).await;
    let key = b"checkpoint-key-0123456789";
    let report = redis_audit_proxy::audit::verify::verify_dir_with_key(dir.path(), Some(key))
        .expect("intact");
    assert!(report.checkpoints >= 3, "{report:?}");
    assert_eq!(report.checkpoints, report.checkpoints_verified);
    // Rewrite a command's key and recompute every seal: the chain verifies...
    let path = dir.path().join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let target = lines.iter().position(|l| l.contains("\"kind\":\"command\"")).unwrap();
    lines[target] = lines[target].replacen("\"keys\":[\"", "\"keys\":[\"forged-", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    reseal(dir.path());
    redis_audit_proxy::audit::verify::verify_dir(dir.path()).expect("without the key it passes");
    // ...but not the checkpoints.
    let error = redis_audit_proxy::audit::verify::verify_dir_with_key(dir.path(), Some(key))
        .expect_err("the checkpoint catches it");
    assert!(error.to_string().contains("checkpoint does not verify"), "{error}");
    let wrong = redis_audit_proxy::audit::verify::verify_dir_with_key(
        dir.path(),
        Some(b"another-key-of-16+bytes"),
    )
    .expect_err("another key");
    assert!(wrong.to_string().contains("made with key"), "{wrong}");
}

/// A trail written by the previous release (`redis-audit/1`, checked in under
/// `tests/fixtures/audit-v1`: four files, a SET, an MSET, a GET, an LPUSH that failed, an
/// INCR): it verifies, a run of this version chains onto it (its `file_open` seals from the
/// last `/1` line's SHA-256), and queries return whole records from both schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_trail_verifies_and_a_v2_run_chains_onto_it() {
    crate::require_redis!();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v1");
    let dir = Scratch::new("v1");
    std::fs::create_dir_all(dir.path()).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let report = verify_dir(dir.path()).expect("the /1 trail verifies");
    assert_eq!((report.kinds.get("command"), report.files, report.seals), (Some(&5), 4, 0));
    assert_eq!(report.indexes, 3, "and so do its query indexes");
    let v1_last = lines(&dir.path().join("audit.log")).pop().unwrap();
    let v1_head: String =
        sha2::Sha256::digest(&v1_last).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.last_hash, v1_head);

    let redis = RedisServer::start(&[]);
    record_run(&redis, dir.path(), "", 2).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.kinds.get("command"), report.instances), (Some(&7), 2));
    let files = audit_files(dir.path());
    let open = json(&lines(&dir.path().join("audit.log"))[0]);
    assert_eq!(open["schema"], "redis-audit/2");
    assert_eq!(open["prev_file"], files[files.len() - 2].as_str());
    assert_eq!(open["chain"]["prev"], v1_head.as_str());
    assert_eq!(open["chain"]["lines"], 0);

    // Queries: the same whole records from either schema.
    let query = redis_audit_proxy::query::AuditQuery::new(
        Some("2026-01-01T00:00:00Z"),
        Some("2099-01-01T00:00:00Z"),
        None,
        None,
        None,
        None,
        None,
        None,
        Some("100"),
        None,
        false,
    )
    .unwrap();
    let page = redis_audit_proxy::query::run(dir.path(), &query).unwrap();
    assert_eq!(page.total, 7);
    let (new, old) = (&page.records[0], &page.records[6]);
    assert_eq!(
        (&new["schema"], &old["schema"]),
        (&"redis-audit/2".into(), &"redis-audit/1".into())
    );
    let fields = |record: &Value| -> Vec<String> {
        let mut names: Vec<String> = record.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    };
    // Everything but the per-line chain, which /2 replaced with seals.
    let old_fields: Vec<String> = fields(old).into_iter().filter(|f| f != "chain").collect();
    assert_eq!(fields(new), old_fields, "{new}\n{old}");
    assert_eq!(fields(&new["command"]), fields(&old["command"]));
    assert_eq!(new["command"]["categories"], old["command"]["categories"], "both SETs");
    assert_eq!(new["upstream"], redis.addr.to_string().as_str());
    assert_eq!(new["instance_id"], open["instance_id"]);
    assert_eq!((&new["key_count"], &new["keys_truncated"]), (&1.into(), &false.into()));

    // The node filter: a `/1` line names its node, a `/2` file names it once, in its first line.
    let on_node = |node: &str| {
        let query = redis_audit_proxy::query::AuditQuery::new(
            Some("2026-01-01T00:00:00Z"),
            Some("2099-01-01T00:00:00Z"),
            None,
            None,
            None,
            None,
            None,
            Some(node),
            Some("100"),
            None,
            false,
        )
        .unwrap();
        redis_audit_proxy::query::run(dir.path(), &query).unwrap().total
    };
    let here = open["node"].as_str().unwrap();
    let same = u64::from(here == "vm");
    assert_eq!(on_node(here), 2 + 5 * same, "this run's node");
    assert_eq!(on_node("vm"), 5 + 2 * same, "the fixture's node");
    assert_eq!(on_node("no-such-node"), 0);
}

/// `audit.chain_alg = "sha256"` (for FIPS sites): its seals say so and verify, a directory
/// whose runs used different algorithms verifies, and an edit is caught as with BLAKE3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_seals_verify_and_mix_with_blake3_ones() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let dir = Scratch::new("sha256");
    record_run(&redis, dir.path(), "[audit]\nrotate_bytes = 4096\n", 10).await;
    let sha = "[audit]\nchain_alg = \"sha256\"\n";
    record_run(&redis, dir.path(), sha, 10).await;
    let report = verify_dir(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((report.kinds.get("command"), report.instances), (Some(&20), 2));
    let active = lines(&dir.path().join("audit.log"));
    let open = json(&active[0]);
    assert_eq!(open["chain"]["alg"], "sha256");
    let last = active.last().unwrap();
    assert_eq!(json(last)["chain"]["alg"], "sha256");
    let head: String = sha2::Sha256::digest(last).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report.last_hash, head, "the head is the last seal's SHA-256");

    // The first seal of the second run closes a segment the first run opened (BLAKE3).
    let files = audit_files(dir.path());
    let second =
        files.iter().position(|f| json(&lines(&dir.path().join(f))[0])["chain"]["alg"] == "sha256");
    let second = second.expect("a file of the sha256 run");
    assert!(
        second > 0
            && json(&lines(&dir.path().join(&files[second - 1]))[0])["chain"]["alg"] == "blake3"
    );

    // One byte of a command line of the sha256 run changed: its seal breaks.
    let path = dir.path().join("audit.log");
    let mut all = active.clone();
    let index = command_line_in(dir.path(), "audit.log");
    let at = memchr::memmem::find(&all[index], b"\"key-").unwrap() + 3;
    all[index][at] = b'z';
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(dir.path(), "audit.log", index as u64 + 1);
    assert_broken(
        dir.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );
}
