//! Fuzz target: `audit verify` on mutated trails. The fixture (fuzz/fixtures/trail/, a
//! trail the real proxy wrote: a run that rotated, then stopped) verifies; each input
//! mutates one of its files, and the mutated directory must be reported as broken, never
//! panic, unless the mutation left the bytes as they were or is a change a chain cannot show
//! (see `audit::verify`): whole lines cut from the end of the newest file, its final seal
//! rewritten, or lines that the report then counts as not sealed yet (`unsealed_lines`, as a
//! running proxy's trail ends: the fixture has none).
//!
//! Input: byte 0 picks the file, byte 1 the kind of mutation, bytes 2..6 the offset, the rest
//! the bytes written.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::audit::verify::verify_dir;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/trail");

struct Fixture {
    /// The scratch directory each input is verified in (on tmpfs when there is one).
    dir: PathBuf,
    /// The audit files, in rotation order, with their bytes.
    files: Vec<(String, Vec<u8>)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE_FILES: OnceLock<Fixture> = OnceLock::new();
    FIXTURE_FILES.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("rap-fuzz-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(FIXTURE)
            .expect("fuzz/fixtures/trail")
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut files = Vec::new();
        for name in names {
            let bytes = std::fs::read(format!("{FIXTURE}/{name}")).unwrap();
            std::fs::write(dir.join(&name), &bytes).unwrap();
            if name.ends_with(".log") {
                files.push((name, bytes));
            }
        }
        // audit.log is the newest: last.
        files.sort_by_key(|(name, _)| (name == "audit.log", name.clone()));
        verify_dir(&dir).expect("the fixture trail verifies");
        Fixture { dir, files }
    })
}

fn mutate(original: &[u8], kind: u8, offset: usize, bytes: &[u8]) -> Vec<u8> {
    let at = if original.is_empty() { 0 } else { offset % (original.len() + 1) };
    let mut out = original.to_vec();
    match kind % 6 {
        // Overwrite bytes in place.
        0 => {
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(slot) = out.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        // Insert bytes.
        1 => {
            out.splice(at..at, bytes.iter().copied());
        }
        // Delete a range.
        2 => {
            let end = (at + 1 + bytes.first().map_or(0, |&b| usize::from(b))).min(out.len());
            out.drain(at..end);
        }
        // Flip one bit.
        3 => {
            if let Some(slot) = out.get_mut(at.min(original.len().saturating_sub(1))) {
                *slot ^= 1 << (bytes.first().copied().unwrap_or(0) % 8);
            }
        }
        // Truncate.
        4 => out.truncate(at),
        // Swap two lines.
        _ => {
            let mut lines: Vec<&[u8]> = original.split_inclusive(|&b| b == b'\n').collect();
            if lines.len() >= 2 {
                let a = at % lines.len();
                let b = usize::from(bytes.first().copied().unwrap_or(1)) % lines.len();
                lines.swap(a, b);
            }
            out = lines.concat();
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let fixture = fixture();
    let (name, original) = &fixture.files[usize::from(data[0]) % fixture.files.len()];
    let offset = u32::from_le_bytes(data[2..6].try_into().unwrap()) as usize;
    let mutated = mutate(original, data[1], offset, &data[6..]);
    let path = fixture.dir.join(name);
    std::fs::write(&path, &mutated).unwrap();
    let result = verify_dir(&fixture.dir);
    std::fs::write(&path, original).unwrap();
    let newest = name == "audit.log";
    // Whole lines cut from the end of the newest file: what a chain cannot show.
    let cut_at_the_end = newest
        && original.starts_with(&mutated)
        && (mutated.is_empty() || mutated.ends_with(b"\n"));
    // The newest file's last line, its final seal, rewritten as one line: no later hash
    // covers a seal's own bytes (its `prev`, `lines` and `hash` are checked, not its other
    // fields), the same gap as a rewritten suffix (see docs/reliability.md).
    let last_start =
        original[..original.len() - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last_line_rewritten = newest
        && mutated.starts_with(&original[..last_start])
        && !mutated[last_start..]
            .strip_suffix(b"\n")
            .unwrap_or(&mutated[last_start..])
            .contains(&b'\n');
    if mutated != *original && !cut_at_the_end && !last_line_rewritten {
        // The fixture's every line is sealed: a change may pass only as lines not sealed yet
        // (what a running proxy's trail ends with), which the report says.
        if let Ok(report) = &result {
            assert!(
                report.unsealed_lines > 0,
                "{name} mutated ({} bytes) still verifies, every line sealed",
                mutated.len()
            );
        }
    }
    if mutated == *original {
        assert!(result.is_ok(), "{result:?}");
    }
});
