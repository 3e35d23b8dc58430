//! The built binary: `check-config` exit codes and one-line errors, a real run in front of
//! Redis stopped by SIGTERM, usage errors, subcommands not yet available, `--version`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::redis::free_port;
use crate::support::KillOnDrop;
use crate::support::RedisServer;

const BINARY: &str = env!("CARGO_BIN_EXE_redis-audit-proxy");

/// Runs the binary to completion with `args` (stdin closed).
fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"))
}

/// Writes `text` to a fresh file under Cargo's test scratch directory and returns its path.
fn config_file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("binary-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("proxy-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the binary on `listen` in front of `upstream`, auditing to `audit_dir` (admin on
/// port 0, so that concurrent tests never collide).
fn start_proxy(
    listen: SocketAddr,
    upstream: SocketAddr,
    audit_dir: &std::path::Path,
    stderr: Stdio,
) -> Child {
    start_proxy_with(listen, upstream, audit_dir, stderr, &[])
}

/// As [`start_proxy`], with more arguments (`--config FILE`).
fn start_proxy_with(
    listen: SocketAddr,
    upstream: SocketAddr,
    audit_dir: &std::path::Path,
    stderr: Stdio,
    extra: &[&str],
) -> Child {
    Command::new(BINARY)
        .args(extra)
        .args(["--listen", &listen.to_string(), "--upstream", &upstream.to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--audit-dir", &audit_dir.display().to_string(), "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the proxy")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits at most `limit` for `child` to exit.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn check_config_accepts_a_valid_file() {
    let example = config_file(include_str!("../../proxy.toml.example"));
    let output = run(&["check-config", "--config", example.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let small = config_file(
        "[proxy]\nlisten = \"127.0.0.1:7000\"\nmax_clients = 5\n\n\
         [proxy.limits]\npipeline_max_depth = 4\n\n[upstream]\naddress = \"redis.internal:6379\"\n",
    );
    let output = run(&["check-config", "--config", small.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    // The sidecars' configuration of docker/compose.cluster.yaml.
    let cluster = config_file(include_str!("../../docker/cluster/proxy.toml"));
    let output = run(&["check-config", "--config", cluster.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

#[test]
fn check_config_rejects_bad_files_with_one_line_naming_file_and_key() {
    let cases = [
        ("unknown key", "[proxy]\nlisten_address = \"127.0.0.1:1\"\n", "proxy.listen_address"),
        (
            "wrong type",
            "[proxy.limits]\npipeline_max_depth = \"deep\"\n",
            "proxy.limits.pipeline_max_depth",
        ),
        ("invalid listen address", "[proxy]\nlisten = \"localhost\"\n", "proxy.listen"),
        (
            "invalid upstream address",
            "[upstream]\naddress = \"no port here\"\n",
            "upstream.address",
        ),
        ("zero max_clients", "[proxy]\nmax_clients = 0\n", "proxy.max_clients"),
        ("not TOML", "[proxy\nlisten = 1\n", "proxy"),
    ];
    for (what, text, key) in cases {
        let path = config_file(text);
        let path_text = path.to_str().unwrap();
        let output = run(&["check-config", "--config", path_text]);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(64), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line expected, got {stderr:?}");
        assert!(stderr.ends_with('\n'), "{what}: {stderr:?}");
        assert!(stderr.contains(path_text), "{what}: the file is not named in {stderr:?}");
        assert!(stderr.contains(key), "{what}: the key {key} is not named in {stderr:?}");
        assert!(
            output.stdout.is_empty(),
            "{what}: stdout {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    // Running the proxy on a bad file fails the same way, before binding anything.
    let path = config_file("[proxy]\nmax_clients = 0\n");
    let output = run(&["--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("proxy.max_clients"), "{stderr:?}");
    // A bad flag value is named by its flag.
    let output = run(&["--upstream", "nonsense", "--listen", "127.0.0.1:0"]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("--upstream") && stderr.contains("upstream.address"), "{stderr:?}");

    let missing = config_file("").with_extension("missing");
    let output = run(&["check-config", "--config", missing.to_str().unwrap()]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr:?}");
}

#[test]
fn an_x509_v1_certificate_is_refused_in_words_that_say_how_to_fix_it() {
    // Redis's own utils/gen-test-certs.sh makes redis.crt v1; Redis takes it, rustls does not.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls-v1");
    let (cert, key) = (fixtures.join("redis.crt"), fixtures.join("redis.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let client_side =
        format!("[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n");
    let redis_side = format!(
        "[upstream]\naddress = \"127.0.0.1:6379\"\n[upstream.tls]\ninsecure_skip_verify = true\n\
         cert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
    );
    for (what, text) in [("[tls]", client_side), ("[upstream.tls]", redis_side)] {
        let path = config_file(&text);
        let output = run(&["check-config", "--config", path.to_str().unwrap()]);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(64), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
        assert!(stderr.contains(&format!("{cert}: an X.509 v1 certificate")), "{what}: {stderr:?}");
        assert!(stderr.contains("reissue it as v3"), "{what}: {stderr:?}");
        assert!(!stderr.contains("does not fit"), "{what}: the key fits; {stderr:?}");
    }
}

/// Sends PING on a new connection to `addr`; the reply bytes.
fn ping(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply)?;
    Ok(reply[..n].to_vec())
}

#[test]
fn runs_in_front_of_redis_and_exits_zero_on_sigterm() {
    runs_and_exits_zero_on_sigterm(&[]);
}

#[test]
fn per_core_runs_in_front_of_redis_and_exits_zero_on_sigterm() {
    let config = config_file("[proxy]\nruntime = \"per_core\"\nthreads = 3\n");
    runs_and_exits_zero_on_sigterm(&["--config", config.to_str().unwrap()]);
}

fn runs_and_exits_zero_on_sigterm(extra: &[&str]) {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let audit_dir = std::env::temp_dir().join(format!("rap-binary-{}", free_port()));
    let _ = std::fs::remove_dir_all(&audit_dir);
    let child = start_proxy_with(listen, redis.addr, &audit_dir, Stdio::piped(), extra);
    let mut child = KillOnDrop(child);

    // Bounded wait for the listener to come up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        match ping(listen) {
            Ok(reply) => break reply,
            Err(error) => {
                assert!(Instant::now() < deadline, "proxy never answered on {listen}: {error}");
                assert!(child.0.try_wait().unwrap().is_none(), "proxy exited early");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(reply, b"+PONG\r\n");

    // An idle client stays connected across the signal; the drain closes it.
    let mut idle = TcpStream::connect(listen).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    idle.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    idle.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    let status =
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("run kill");
    assert!(status.success());
    let exit = wait_with_timeout(&mut child.0, Duration::from_secs(5))
        .expect("the proxy exits within 5 s of SIGTERM");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(exit.code(), Some(0), "exit {exit}; stderr: {stderr}");
    let mut rest = Vec::new();
    let closed = idle.read_to_end(&mut rest);
    assert!(matches!(closed, Ok(0)), "idle client: {closed:?} {rest:?}");
    let _ = idle.shutdown(Shutdown::Both);
    assert!(TcpStream::connect(listen).is_err(), "still listening after exit");

    // The audit trail saw it all, from start to stop.
    let trail = std::fs::read_to_string(audit_dir.join("audit.log")).expect("audit.log written");
    let actions: Vec<&str> = trail
        .lines()
        .map(|line| {
            line.split("\"action\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(actions.first(), Some(&"file_open"), "{trail}");
    assert_eq!(actions.get(1), Some(&"start"), "{trail}");
    // The run's last record, then the seal over everything before it.
    assert_eq!(actions[actions.len() - 2..], ["stop", "seal"], "{trail}");
    let commands = trail.lines().filter(|line| line.contains("\"kind\":\"command\"")).count();
    assert_eq!(commands, 2, "two PINGs: {trail}");
    let _ = std::fs::remove_dir_all(&audit_dir);
}

#[test]
fn sighup_rotates_the_audit_trail() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let audit = crate::support::Scratch::new("sighup");
    let child = start_proxy(listen, redis.addr, audit.path(), Stdio::null());
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ping(listen).is_err() {
        assert!(Instant::now() < deadline, "proxy never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &child.0.id().to_string()]).status().unwrap();
        assert!(status.success());
    };
    signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::support::scratch::rotated_files(audit.path()).is_empty() {
        assert!(Instant::now() < deadline, "no rotation after SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ping(listen).unwrap(), b"+PONG\r\n", "still serving");
    signal("-TERM");
    let exit = wait_with_timeout(&mut child.0, Duration::from_secs(5)).expect("exits");
    assert_eq!(exit.code(), Some(0));
    let output = run(&["audit", "verify", "--dir", &audit.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["--no-such-flag"][..],
        &["--listen"],
        &["--mode", "loud"],
        &["check-config"],
        &["no-such-subcommand"],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {}", stderr_of(&output));
        assert!(!output.stderr.is_empty(), "{args:?}: nothing said on stderr");
    }
}

#[test]
fn explain_works_offline_with_the_embedded_table() {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let output = run(&["explain", "--upstream", &unreachable, "--", "SET", "k", "v", "GET"]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("using the command table embedded in the binary"), "{stderr:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("command:    set\n"), "{stdout}");
    assert!(stdout.contains("class:      write\n"), "{stdout}");
    assert!(stdout.contains("keys:       k (RW access update)\n"), "{stdout}");
    assert!(stdout.contains("table:      embedded (Redis "), "{stdout}");
}

#[test]
fn explain_json_against_a_live_redis() {
    crate::require_redis!();
    let redis = RedisServer::start(&[]);
    let upstream = redis.addr.to_string();
    let output = run(&["explain", "--upstream", &upstream, "--json", "--", "SET", "k", "v", "GET"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one object on one line: {stdout}");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["command"], "set");
    assert_eq!(value["class"], "write");
    assert_eq!(value["categories"], serde_json::json!(["@write", "@string", "@slow"]));
    assert_eq!(
        value["keys"],
        serde_json::json!([{"key": "k", "flags": ["RW", "access", "update"]}])
    );
    assert_eq!(value["channels"], serde_json::json!([]));
    assert_eq!(value["table"], format!("live from {upstream}"));
    assert!(stdout.starts_with("{\"command\":\"set\",\"known\""), "contract field order: {stdout}");
    let output = run(&["explain", "--upstream", &upstream, "--json", "--", "NOSUCH", "x"]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (value["known"].clone(), value["class"].clone()),
        (false.into(), serde_json::Value::Null)
    );
}

#[test]
fn version_exits_zero() {
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), format!("redis-audit-proxy {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn explain_user_prints_the_decision_and_its_reason() {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let users =
        config_file("user alice on nopass ~app:* -@all +@read\nuser legacy on nopass -@all\n");
    let users = users.to_str().unwrap();
    let explain = |user: &str, words: &[&str]| {
        let mut args = vec![
            "explain",
            "--upstream",
            &unreachable,
            "--users",
            users,
            "--user",
            user,
            "--json",
            "--",
        ];
        args.extend_from_slice(words);
        let output = run(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        value["decision"].clone()
    };
    let denied = explain("alice", &["GET", "other"]);
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(
        (denied["reason"].clone(), denied["object"].clone()),
        ("key".into(), "other".into())
    );
    assert_eq!(
        denied["reply"],
        "-NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    assert_eq!(denied["policy_version"].as_str().map(str::len), Some(16));
    assert_eq!(explain("alice", &["GET", "app:1"])["verdict"], "allow");
    assert_eq!(explain("alice", &["DEL", "app:1"])["object"], "del");
    assert_eq!(explain("alice", &["GET"])["verdict"], "not_checked", "arity comes first");
    assert_eq!(explain("nobody", &["PING"])["verdict"], "deny", "unknown users may do nothing");

    let output = run(&[
        "explain",
        "--upstream",
        &unreachable,
        "--users",
        users,
        "--user",
        "alice",
        "--",
        "DEL",
        "k",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "decision:   deny for user alice (command 'del'); enforce: the client gets -NOPERM"
        ),
        "{stdout}"
    );
    let output = run(&["explain", "--upstream", &unreachable, "--user", "alice", "--", "GET", "k"]);
    assert_eq!(output.status.code(), Some(64), "--user without a users file");
}

#[test]
fn hash_password_prints_the_sha256_hex_a_users_file_takes() {
    let mut child = Command::new(BINARY)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n"
    );
}
