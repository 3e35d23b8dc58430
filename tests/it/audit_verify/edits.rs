//! Edits `audit verify` must name: a changed byte, deleted, reordered and inserted lines, a
//! deleted middle or active file, a truncated last line, an appended forged line.

use super::*;

/// A command line of `file` with a command line after it (lines 3.. of the file).
pub(super) fn command_line_in(dir: &Path, file: &str) -> usize {
    let all = lines(&dir.join(file));
    (2..all.len() - 1)
        .find(|&i| json(&all[i])["kind"] == "command" && json(&all[i + 1])["kind"] == "command")
        .expect("two command lines in a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edited_byte_breaks_the_seal_over_its_line() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("edit", 40).await;
    let (_, file) = middle_file(dir.path());
    let path = dir.path().join(&file);
    let mut all = lines(&path);
    // A command line: change one byte of its key name.
    let index = command_line_in(dir.path(), &file);
    let at = memchr::memmem::find(&all[index], b"\"key-").unwrap() + 3;
    all[index][at] = b'z';
    write_lines(&path, &all);
    let ((seal_file, seal_line), first) = covering_seal(dir.path(), &file, index as u64 + 1);
    let error = assert_broken(
        dir.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );
    let Problem::SealMismatch { first: named, .. } = error.problem else { unreachable!() };
    assert_eq!(named, Some(first), "the error names where the broken batch begins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_reordered_and_inserted_lines_are_named() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("lines", 40).await;
    let (_, file) = middle_file(dir.path());
    let index = command_line_in(dir.path(), &file);

    let seq_of = |line: &[u8]| json(line)["seq"].as_u64().unwrap();
    let with_seq = |line: &[u8], seq: u64| {
        let mut value = json(line);
        value["seq"] = seq.into();
        serde_json::to_vec(&value).unwrap()
    };

    // Removed: the sequence names the line after it; with the sequence renumbered to hide
    // that, the seal over it still breaks, counting one line less than it sealed.
    let deleted = dir.copy("deleted-line");
    let path = deleted.path().join(&file);
    let mut all = lines(&path);
    let removed = all.remove(index);
    write_lines(&path, &all);
    let (expected, found) = (seq_of(&removed), seq_of(&removed) + 1);
    assert_broken(deleted.path(), &file, Some(index as u64 + 1), |problem| {
        *problem == Problem::SeqGap { expected, found }
    });
    for line in all.iter_mut().skip(index) {
        if json(line).get("seq").is_some() {
            *line = with_seq(line, seq_of(line) - 1);
        }
    }
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(deleted.path(), &file, index as u64);
    assert_broken(
        deleted.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if *declared == found + 1),
    );

    // Reordered, keeping the sequence in order: the seal over them breaks.
    let swapped = dir.copy("swapped-lines");
    let path = swapped.path().join(&file);
    let mut all = lines(&path);
    let (first, second) = (seq_of(&all[index]), seq_of(&all[index + 1]));
    (all[index], all[index + 1]) =
        (with_seq(&all[index + 1], first), with_seq(&all[index], second));
    write_lines(&path, &all);
    let ((seal_file, seal_line), _) = covering_seal(swapped.path(), &file, index as u64 + 1);
    assert_broken(
        swapped.path(),
        &seal_file,
        Some(seal_line),
        |problem| matches!(problem, Problem::SealMismatch { declared, found, .. } if declared == found),
    );

    // Inserted (a copy of a line): the sequence goes back at it.
    let inserted = dir.copy("inserted-line");
    let path = inserted.path().join(&file);
    let mut all = lines(&path);
    let copy = all[index].clone();
    all.insert(index, copy);
    write_lines(&path, &all);
    let (expected, found) = (seq_of(&all[index]) + 1, seq_of(&all[index]));
    assert_broken(inserted.path(), &file, Some(index as u64 + 2), |problem| {
        *problem == Problem::SeqBackwards { expected, found }
    });

    // A seal altered (its prev): named, with the seal before it.
    let altered = dir.copy("altered-seal");
    let path = altered.path().join(&file);
    let mut all = lines(&path);
    let mut open = json(&all[0]);
    open["chain"]["prev"] = "ab".repeat(32).into();
    all[0] = serde_json::to_vec(&open).unwrap();
    write_lines(&path, &all);
    let files = audit_files(altered.path());
    let before = files[files.iter().position(|f| *f == file).unwrap() - 1].clone();
    let last =
        positions(altered.path()).into_iter().rfind(|(f, _, seal)| *f == before && *seal).unwrap();
    assert_broken(altered.path(), &file, Some(1), |problem| {
        matches!(problem, Problem::ChainMismatch { previous: Previous::Seal(at), .. }
            if at.0 == last.0 && at.1 == last.1)
    });

    // The original is untouched and still intact.
    verify_dir(dir.path()).expect("intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_middle_file_is_named_by_the_next_header() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("missing-file", 40).await;
    let (index, file) = middle_file(dir.path());
    let next = audit_files(dir.path())[index + 1].clone();
    std::fs::remove_file(dir.path().join(&file)).unwrap();
    assert_broken(
        dir.path(),
        &next,
        Some(1),
        |problem| matches!(problem, Problem::MissingFile { name } if *name == file),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_last_line_is_a_torn_line_nothing_recovered() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("truncated", 40).await;
    let files = audit_files(dir.path());
    let truncate = |dir: &Path, file: &str| -> u64 {
        let path = dir.join(file);
        let all = lines(&path);
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - 1 - all.last().unwrap().len() / 2;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        all.len() as u64
    };

    // A rotated file: the next file's header does not say it recovered a torn line.
    let (index, file) = middle_file(dir.path());
    let rotated = dir.copy("torn-rotated");
    let line = truncate(rotated.path(), &file);
    let next = files[index + 1].clone();
    assert_broken(rotated.path(), &file, Some(line), |problem| {
        *problem == Problem::TornNotRecovered { next: Some(next.clone()) }
    });

    // The active file: nothing after it.
    let active = dir.copy("torn-active");
    let line = truncate(active.path(), "audit.log");
    assert_broken(active.path(), "audit.log", Some(line), |problem| {
        *problem == Problem::TornNotRecovered { next: None }
    });

    // A torn line glued to the next record, in the middle of a file.
    let glued = dir.copy("torn-middle");
    let path = glued.path().join(&file);
    let mut all = lines(&path);
    let half = all[2].len() / 2;
    let tail = all.remove(3);
    all[2].truncate(half);
    all[2].extend_from_slice(&tail);
    write_lines(&path, &all);
    assert_broken(glued.path(), &file, Some(3), |problem| *problem == Problem::TornInMiddle);

    // Lines that are not JSON at all.
    for (tag, garbage) in [("garbage", &b"hello"[..]), ("blank", b"")] {
        let copy = dir.copy(tag);
        let path = copy.path().join(&file);
        let mut all = lines(&path);
        all[2] = garbage.to_vec();
        write_lines(&path, &all);
        assert_broken(copy.path(), &file, Some(3), |problem| {
            matches!(problem, Problem::NotJson { .. })
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_active_file_is_reported() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("no-active", 40).await;
    let files = audit_files(dir.path());
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    let last = files[files.len() - 2].clone();
    assert_broken(dir.path(), "audit.log", None, |problem| {
        *problem == Problem::NoActiveFile { last: last.clone() }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_forged_line_is_caught_unless_its_seal_is_recomputed() {
    crate::require_redis!();
    let (_redis, dir) = rotated_trail("forged", 40).await;
    let honest = verify_dir(dir.path()).expect("intact");
    let path = dir.path().join("audit.log");
    let all = lines(&path);
    let n = all.len();
    // A command record made from a real one, with the next seq and another key, appended
    // after the seal that ended the run.
    let files = audit_files(dir.path());
    let template = files
        .iter()
        .rev()
        .flat_map(|file| lines(&dir.path().join(file)).into_iter().rev())
        .find(|line| json(line)["kind"] == "command")
        .expect("a command line to imitate");
    let mut forged = json(&template);
    let stop = json(&all[n - 2]);
    assert_eq!(stop["action"], "stop");
    forged["seq"] = (stop["seq"].as_u64().unwrap() + 1).into();
    forged["keys"] = serde_json::json!(["forged"]);
    let mut appended = all.clone();
    appended.push(serde_json::to_vec(&forged).unwrap());
    write_lines(&path, &appended);
    assert_broken(dir.path(), "audit.log", Some(n as u64 + 1), |problem| {
        *problem == Problem::AfterFinalSeal
    });

    // Inserted before the stop and resealed, the seals alone cannot tell (they have no key):
    // the last hash kept elsewhere can.
    let mut inserted = all;
    forged["seq"] = stop["seq"].clone();
    let mut stop = stop;
    stop["seq"] = (forged["seq"].as_u64().unwrap() + 1).into();
    inserted[n - 2] = serde_json::to_vec(&forged).unwrap();
    inserted.insert(n - 1, serde_json::to_vec(&stop).unwrap());
    write_lines(&path, &inserted);
    reseal(dir.path());
    let report = verify_dir(dir.path()).expect("a resealed forgery passes");
    assert_ne!(report.last_hash, honest.last_hash, "but the anchor moved");
}
