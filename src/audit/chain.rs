//! The trail's tamper evidence in schema `redis-audit/2`: seals. A seal line hashes every line
//! written since the seal before it (a segment, across files) and names that seal's hash, so
//! the seals form a chain over the whole trail while the writer hashes each byte once, in bulk,
//! instead of hashing and rewriting every line (`docs/audit-schema.md` §5).
//!
//! A segment's hash is `H(head ‖ segment bytes)`, `head` being the hash of the seal line that
//! opened it (`H` of that line's bytes without its `\n`, with that line's `alg`); the first
//! segment of a directory starts from [`GENESIS`], and the first after a `redis-audit/1` file
//! from the SHA-256 of that file's last line (its chain head in `/1`). A file's `file_open`
//! line is itself a seal: it closes the segment left at the end of the file before it (empty
//! after a rotation that sealed it, the unsealed lines of a crashed run otherwise).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::audit::json::{push_hex, push_u64};
use crate::util::hex::{hex, hex_sha256};

/// A hash as the chain holds it.
pub(crate) type Hash = [u8; 32];

/// The head before the first seal of a directory.
pub const GENESIS: Hash = [0; 32];

/// The hash function of the chain (`audit.chain_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainAlg {
    /// BLAKE3 (default): hashes a batch several times faster than SHA-256 here (SIMD).
    #[default]
    Blake3,
    /// SHA-256, for sites that require a FIPS-approved hash.
    Sha256,
}

impl ChainAlg {
    /// The name lines carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blake3 => "blake3",
            Self::Sha256 => "sha256",
        }
    }

    /// The algorithm a line names, if it is one.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "blake3" => Some(Self::Blake3),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The hash of `bytes`.
    pub fn hash(self, bytes: &[u8]) -> Hash {
        match self {
            Self::Blake3 => *blake3::hash(bytes).as_bytes(),
            Self::Sha256 => sha2::Sha256::digest(bytes).into(),
        }
    }
}

/// The segment being hashed: the lines since the last seal.
#[derive(Clone)]
pub struct Segment {
    alg: ChainAlg,
    head: Hash,
    state: State,
    lines: u64,
}

#[derive(Clone)]
enum State {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("alg", &self.alg).field("lines", &self.lines).finish()
    }
}

impl Segment {
    /// An empty segment after the seal whose hash is `head`, hashed with `alg`.
    pub fn new(alg: ChainAlg, head: Hash) -> Self {
        let state = match alg {
            ChainAlg::Blake3 => {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&head);
                State::Blake3(Box::new(hasher))
            }
            ChainAlg::Sha256 => {
                let mut hasher = sha2::Sha256::new();
                hasher.update(head);
                State::Sha256(hasher)
            }
        };
        Self { alg, head, state, lines: 0 }
    }

    /// Adds whole lines (each with its `\n`).
    pub fn update(&mut self, bytes: &[u8], lines: u64) {
        match &mut self.state {
            State::Blake3(hasher) => {
                hasher.update(bytes);
            }
            State::Sha256(hasher) => hasher.update(bytes),
        }
        self.lines += lines;
    }

    /// Lines in it so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The hash of the seal it follows.
    pub fn head(&self) -> &Hash {
        &self.head
    }

    /// Its algorithm.
    pub fn alg(&self) -> ChainAlg {
        self.alg
    }

    /// Its hash, as the seal closing it carries.
    pub fn finish(&self) -> Hash {
        match &self.state {
            State::Blake3(hasher) => *hasher.finalize().as_bytes(),
            State::Sha256(hasher) => hasher.clone().finalize().into(),
        }
    }

    /// Whether a seal declaring `lines` lines and the hex hash `hash_hex` closes exactly this
    /// segment (what `audit verify` checks of every seal, in the files and in a sink's copy).
    pub(crate) fn is_sealed_by(&self, lines: u64, hash_hex: &str) -> bool {
        self.lines == lines && hex(&self.finish()) == hash_hex
    }

    /// What a seal closing it says: `"chain":{…}` (no leading comma), with a checkpoint when
    /// there is a key; `alg` is the seal line's own (its hash, the next head, is made with it).
    pub(crate) fn push_seal_field(&self, alg: ChainAlg, key: Option<&[u8]>, out: &mut Vec<u8>) {
        let hash = self.finish();
        out.extend_from_slice(b"\"chain\":{\"alg\":\"");
        out.extend_from_slice(alg.as_str().as_bytes());
        out.extend_from_slice(b"\",\"prev\":\"");
        push_hex(out, &self.head);
        out.extend_from_slice(b"\",\"lines\":");
        push_u64(out, self.lines);
        out.extend_from_slice(b",\"hash\":\"");
        push_hex(out, &hash);
        out.push(b'"');
        if let Some(key) = key {
            out.extend_from_slice(b",\"key_id\":\"");
            out.extend_from_slice(checkpoint_key_id(key).as_bytes());
            out.extend_from_slice(b"\",\"hmac\":\"");
            out.extend_from_slice(checkpoint_hmac(key, &hex(&hash)).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
}

/// A checkpoint's HMAC: HMAC-SHA256(key, the hex text of the hash it vouches for), in hex.
pub(crate) fn checkpoint_hmac(key: &[u8], hash_hex: &str) -> String {
    use hmac::Mac as _;
    let mut mac =
        <hmac::Hmac<sha2::Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(hash_hex.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Identifies a checkpoint key without revealing it: the first 16 hex digits of its SHA-256.
pub(crate) fn checkpoint_key_id(key: &[u8]) -> String {
    hex_sha256(key)[..16].to_owned()
}

/// What the first line of a `/2` file starts with (the `file_open` names the schema).
pub(crate) const V2_FILE_PREFIX: &[u8] = b"{\"schema\":\"redis-audit/2\"";
/// What every line of a `/1` file starts with.
pub(crate) const V1_PREFIX: &[u8] = b"{\"schema\":\"redis-audit/1\"";

/// The `alg` of a seal-bearing line (a `/2` `file_open` or `seal`), or `None` for any other
/// line. Lines that a client's strings could imitate are told apart by parsing: a client's
/// quote is always escaped, so the raw pattern only appears in the writer's own fields.
pub(crate) fn seal_alg(line: &[u8]) -> Option<ChainAlg> {
    // Built once: `audit verify` and the sinks ask this of every line.
    static SEAL: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"\"kind\":\"system\",\"action\":\"seal\""));
    let is_seal = line.starts_with(V2_FILE_PREFIX) || SEAL.find(line).is_some();
    if !is_seal {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    ChainAlg::from_name(value.get("chain")?.get("alg")?.as_str()?)
}

/// The longest line [`tail_of`] reads: the writer's lines are far shorter (keys are cut at 16
/// KiB); a longer one is not the writer's, and ends what is read of the file.
const MAX_LINE_BYTES: u64 = 64 << 20;

/// Reads where the chain stands at the end of `path`, for the writer that continues it (`None`
/// for a file without a complete line): after a `/1` file, the SHA-256 of its last line and
/// nothing open; after a `/2` file, the hash of its last seal and the lines after it (the
/// segment left open), hashed with that seal's `alg`. A torn last line is in no segment. `alg`
/// is used when the file has no seal (a file that is not the writer's). Reads the file once,
/// holding one line at a time.
pub(crate) fn tail_of(path: &Path, alg: ChainAlg) -> io::Result<Option<Segment>> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut line = Vec::new();
    // (offset after the last seal, its hash, its alg) and the end of the last complete line.
    let mut last_seal: Option<(u64, Hash, ChainAlg)> = None;
    let mut last_line = Vec::new();
    let (mut offset, mut complete_end) = (0u64, 0u64);
    let mut v1 = false;
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break; // the end, a torn line, or a line too long to be the writer's
        }
        offset += read as u64;
        complete_end = offset;
        let text = &line[..line.len() - 1];
        if complete_end == read as u64 {
            v1 = text.starts_with(V1_PREFIX);
        }
        if let (false, Some(seal)) = (v1, seal_alg(text)) {
            last_seal = Some((offset, seal.hash(text), seal));
        } else if v1 || last_seal.is_none() {
            last_line.clear();
            last_line.extend_from_slice(text);
        }
    }
    if complete_end == 0 {
        return Ok(None);
    }
    let Some((sealed_end, head, seal)) = last_seal.filter(|_| !v1) else {
        // After a `/1` file (or one that is not the writer's): its last line's SHA-256.
        return Ok(Some(Segment::new(alg, ChainAlg::Sha256.hash(&last_line))));
    };
    let mut segment = Segment::new(seal, head);
    let mut file = reader.into_inner();
    file.seek(SeekFrom::Start(sealed_end))?;
    let mut rest = vec![0u8; 1 << 16];
    let mut left = complete_end - sealed_end;
    while left > 0 {
        let take = rest.len().min(left as usize);
        file.read_exact(&mut rest[..take])?;
        let lines = memchr::memchr_iter(b'\n', &rest[..take]).count() as u64;
        segment.update(&rest[..take], lines);
        left -= take as u64;
    }
    Ok(Some(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_hashes_its_head_then_its_lines() {
        for alg in [ChainAlg::Blake3, ChainAlg::Sha256] {
            let mut segment = Segment::new(alg, [7; 32]);
            segment.update(b"a\n", 1);
            segment.update(b"b\n", 1);
            let mut whole = vec![7u8; 32];
            whole.extend_from_slice(b"a\nb\n");
            assert_eq!(segment.finish(), alg.hash(&whole));
            assert_eq!(segment.lines(), 2);
            assert!(segment.is_sealed_by(2, &hex(&alg.hash(&whole))));
            assert!(!segment.is_sealed_by(1, &hex(&alg.hash(&whole))), "a line fewer");
            assert!(!segment.is_sealed_by(2, &hex(&alg.hash(b"other"))));
        }
    }

    #[test]
    fn seal_fields_name_the_head_the_count_and_the_hash() {
        let mut segment = Segment::new(ChainAlg::Blake3, GENESIS);
        segment.update(b"{}\n", 1);
        let mut out = b"{".to_vec();
        segment.push_seal_field(ChainAlg::Sha256, Some(b"0123456789abcdef"), &mut out);
        out.push(b'}');
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let chain = &value["chain"];
        assert_eq!(chain["alg"], "sha256");
        assert_eq!(chain["prev"], "0".repeat(64));
        assert_eq!(chain["lines"], 1);
        assert_eq!(chain["hash"], hex(&segment.finish()));
        assert_eq!(
            chain["hmac"],
            checkpoint_hmac(b"0123456789abcdef", chain["hash"].as_str().unwrap())
        );
    }

    #[test]
    fn a_file_s_tail_is_what_follows_its_last_seal_without_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("rap-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.log");
        let open = br#"{"schema":"redis-audit/2","kind":"system","action":"file_open","chain":{"alg":"blake3"}}"#;
        let seal = br#"{"time":"t","kind":"system","action":"seal","outcome":"success","chain":{"alg":"sha256"}}"#;
        let mut file = Vec::new();
        for line in [&open[..], b"{\"a\":1}", seal, b"{\"b\":2}", b"{\"c\":3}"] {
            file.extend_from_slice(line);
            file.push(b'\n');
        }
        file.extend_from_slice(b"{\"torn");
        std::fs::write(&path, &file).unwrap();
        let segment = tail_of(&path, ChainAlg::Blake3).unwrap().unwrap();
        let mut expected = Segment::new(ChainAlg::Sha256, ChainAlg::Sha256.hash(seal));
        expected.update(b"{\"b\":2}\n{\"c\":3}\n", 2);
        assert_eq!((segment.alg(), segment.lines()), (ChainAlg::Sha256, 2));
        assert_eq!(segment.finish(), expected.finish());

        // A `/1` file: the head is its last line's SHA-256, nothing open.
        let v1 = br#"{"schema":"redis-audit/1","kind":"system"}"#;
        std::fs::write(&path, [&v1[..], b"\n"].concat()).unwrap();
        let segment = tail_of(&path, ChainAlg::Blake3).unwrap().unwrap();
        assert_eq!((segment.head(), segment.lines()), (&ChainAlg::Sha256.hash(v1), 0));
        std::fs::write(&path, b"{\"torn").unwrap();
        assert!(tail_of(&path, ChainAlg::Blake3).unwrap().is_none(), "no complete line");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_writers_own_seal_lines_count_as_seals() {
        let seal = br#"{"time":"t","kind":"system","action":"seal","outcome":"success","chain":{"alg":"blake3","prev":"0","lines":0,"hash":"0"}}"#;
        assert_eq!(seal_alg(seal), Some(ChainAlg::Blake3));
        let key =
            br#"{"time":"t","kind":"command","keys":["\"kind\":\"system\",\"action\":\"seal\""]}"#;
        assert_eq!(seal_alg(key), None, "a key cannot hold an unescaped quote");
    }
}
