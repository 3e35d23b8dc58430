//! A `tail -F` follower of the trail sees every line once across rotations.

use super::*;

/// What a follower saw.
#[derive(Debug, Default)]
pub(super) struct Followed {
    pub(super) lines: Vec<String>,
    /// Times the file it had open was renamed away (and then read to its end).
    renames_seen: usize,
    /// Rotated files it never had open (more than one rotation between two of its looks),
    /// read from the directory instead.
    caught_up: usize,
}

/// Reads what `file` holds past its position; whole lines go to `lines`, the rest stays in
/// `partial`.
fn drain(file: &mut File, partial: &mut Vec<u8>, lines: &mut Vec<String>) {
    let mut chunk = [0u8; 65536];
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            return;
        }
        partial.extend_from_slice(&chunk[..n]);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            lines.push(String::from_utf8(line[..end].to_vec()).unwrap());
        }
    }
}

/// Follows `dir/audit.log` as `tail -F` does: reads what is appended; when the path names
/// another file (or none) than the one open, that one was renamed away, so it is read to its
/// end and the path reopened. Like Filebeat or Vector (which also watch the rotated names and
/// know files by inode), it first reads, in name order, any rotated file it has not read yet:
/// with rotations faster than its looks, a follower of the path alone misses whole files.
/// Returns once `stop` is set and the current file is read to its end.
pub(super) fn follow(dir: &Path, stop: &AtomicBool) -> Followed {
    let path = dir.join("audit.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Followed::default();
    let mut done: HashSet<u64> = HashSet::new();
    let unread = |done: &HashSet<u64>, open: Option<u64>| -> Vec<(PathBuf, u64)> {
        let mut files: Vec<(PathBuf, u64)> = audit_files(dir)
            .into_iter()
            .filter(|file| file != &path)
            .filter_map(|file| {
                let inode = std::fs::metadata(&file).ok()?.ino();
                Some((file, inode))
            })
            .filter(|(_, inode)| !done.contains(inode) && Some(*inode) != open)
            .collect();
        files.sort();
        files
    };
    let mut partial = Vec::new();
    'reopen: loop {
        assert!(std::time::Instant::now() < deadline, "follower stuck");
        for (rotated, inode) in unread(&done, None) {
            let mut file = File::open(&rotated).unwrap();
            drain(&mut file, &mut partial, &mut seen.lines);
            assert!(partial.is_empty(), "{} ends mid-line", rotated.display());
            done.insert(inode);
            seen.caught_up += 1;
        }
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                // Between the rename and the new file.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(error) => panic!("{error}"),
        };
        let inode = file.metadata().unwrap().ino();
        if !unread(&done, Some(inode)).is_empty() {
            // Rotated again meanwhile: older files come first.
            continue;
        }
        loop {
            assert!(std::time::Instant::now() < deadline, "follower stuck");
            let stopping = stop.load(Ordering::SeqCst);
            drain(&mut file, &mut partial, &mut seen.lines);
            let renamed = match std::fs::metadata(&path) {
                Ok(metadata) => metadata.ino() != inode,
                Err(error) if error.kind() == ErrorKind::NotFound => true,
                Err(error) => panic!("{error}"),
            };
            if renamed {
                drain(&mut file, &mut partial, &mut seen.lines);
                assert!(partial.is_empty(), "a rotated file ended mid-line");
                done.insert(inode);
                seen.renames_seen += 1;
                continue 'reopen;
            }
            if stopping {
                assert!(partial.is_empty(), "the active file ended mid-line");
                return seen;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_follower_sees_every_line_once_across_rotations() {
    crate::require_redis!();
    let config = "[audit]\nrotate_bytes = 8192\nretain_files = 0\n";
    let AuditedProxy { redis: _redis, dir, proxy, audit: sink } =
        AuditedProxy::start("rotation", config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (dir, stop) = (dir.path().to_path_buf(), Arc::clone(&stop));
        std::thread::spawn(move || follow(&dir, &stop))
    };
    let tasks: Vec<_> = (0..2)
        .map(|c| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut client = RawClient::connect(addr).await;
                for chunk in 0..20 {
                    let batch: Vec<Sent> = (0..50)
                        .map(|i| {
                            let key = format!("rot:{c}:{chunk}:{i}");
                            sent(&["SET", &key, "v"], &[&key])
                        })
                        .collect();
                    pipeline(&mut client, &batch).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    sink.sync();
    proxy.shutdown().await;
    stop.store(true, Ordering::SeqCst);
    let followed = follower.join().unwrap();

    let files = audit_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let mut all = Vec::new();
    let mut previous: Option<String> = None;
    for path in &files {
        let metadata = std::fs::metadata(path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{}", path.display());
        assert!(metadata.len() <= 8192, "{} passed rotate_bytes", path.display());
        let lines = file_lines(path);
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["action"], "file_open", "{}", path.display());
        assert_eq!(first["file"], "audit.log");
        assert_eq!(first["prev_file"], previous.as_deref().map_or(Value::Null, Value::from));
        assert_eq!(first["recovered_torn_line"], false);
        assert!(first.get("seq").is_none(), "file_open lines have no seq");
        previous = Some(path.file_name().unwrap().to_str().unwrap().to_owned());
        all.extend(lines);
    }
    eprintln!(
        "{} files; the follower saw {} renames and read {} rotated files it never had open",
        files.len(),
        followed.renames_seen,
        followed.caught_up
    );
    assert!(followed.renames_seen >= 1, "the follower saw the active file renamed away");
    assert_eq!(followed.lines.len(), all.len(), "the follower saw every line exactly once");
    assert!(followed.lines == all, "the follower saw the lines in file order");
    assert_chain(&all, GENESIS);
    let values = parse(&all);
    let seq = seqs(&values);
    assert_eq!(seq, (1..=seq.len() as u64).collect::<Vec<_>>());
    assert_eq!(values.iter().filter(|l| l["kind"] == "command").count(), 2000);
    assert_eq!(
        sink.stats().rotations.load(Ordering::Relaxed),
        files.len() as u64 - 1,
        "one rotation per rotated file"
    );
}
