//! Headless Chromium driven through chromedriver's W3C WebDriver protocol (JSON over HTTP), with
//! a tiny HTTP client instead of a WebDriver crate: the console test needs a dozen commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KillOnDrop;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether Chromium and chromedriver are installed.
pub fn chromium_present() -> bool {
    [CHROMIUM, CHROMEDRIVER].iter().all(|path| Path::new(path).exists())
}

/// How to install them.
pub const INSTALL_CHROMIUM: &str =
    "`make test` installs them (scripts/ensure-chromium.sh, or `apt-get install chromium chromium-driver`)";

/// One request to chromedriver; the answer's `value`, or a panic with WebDriver's error.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("chromedriver answers");
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" {
        request.push_str("Content-Type: application/json; charset=utf-8\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.unwrap();
    // chromedriver keeps the connection open whatever `Connection` says: read the answer by
    // its length.
    let payload = tokio::time::timeout(Duration::from_secs(120), read_answer(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("chromedriver took over 120 s on {method} {path}"));
    let answer: Value = serde_json::from_slice(&payload)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&payload)));
    let value = answer["value"].clone();
    if value.get("error").is_some_and(|e| !e.is_null()) {
        panic!("WebDriver {method} {path}: {} — {}", value["error"], value["message"]);
    }
    value
}

/// The body of one HTTP/1.1 answer: by `Content-Length`, chunked, or up to the close.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let mut body_at = None;
    loop {
        if body_at.is_none() {
            body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4);
        }
        if let Some(at) = body_at {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length = head.lines().find_map(|line| {
                line.strip_prefix("content-length:").and_then(|n| n.trim().parse::<usize>().ok())
            });
            if let Some(length) = length {
                if raw.len() >= at + length {
                    return raw[at..at + length].to_vec();
                }
            } else if head.contains("transfer-encoding: chunked") {
                if let Some(body) = dechunk(&raw[at..]) {
                    return body;
                }
            }
        }
        let read = stream.read(&mut buf).await.unwrap();
        if read == 0 {
            return body_at.map(|at| raw[at..].to_vec()).unwrap_or_default();
        }
        raw.extend_from_slice(&buf[..read]);
    }
}

/// The body of a chunked HTTP/1.1 answer, `None` while its last chunk has not arrived.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..end]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(end + 2..end + 2 + size)?);
        raw = raw.get(end + 2 + size + 2..)?;
    }
}

/// A chromedriver process and one browser session, both ended on drop.
#[derive(Debug)]
pub struct Browser {
    addr: SocketAddr,
    session: String,
    _driver: KillOnDrop,
    _profile: super::Scratch,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Self {
        assert!(chromium_present(), "Chromium or chromedriver is missing: {INSTALL_CHROMIUM}");
        let port = super::redis::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = KillOnDrop(driver);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = super::Scratch::new("chromium-profile");
        std::fs::create_dir_all(profile.path()).unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created = call(addr, "POST", "/session", Some(&capabilities)).await;
        let session = created["sessionId"].as_str().expect("a session id").to_owned();
        let browser = Self { addr, session, _driver: driver, _profile: profile };
        browser.resize(width, height).await;
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(self.addr, method, &path, body.as_ref()).await
    }

    /// Sets the window's size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Loads `url` (returns once the page has loaded).
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Runs `script` (a function body: `return ...`) in the page with `args`; its result.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Waits until `script` returns true (panics after 20 s with `what`).
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval(script, json!([])).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css` selects (panics when none).
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned()
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// Replaces the text of the input `css` selects by `text` (typed as keys).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.command("POST", &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    /// Selects `value` in the `<select>` `css` selects, as a user's choice does (a change event).
    pub async fn select(&self, css: &str, value: &str) {
        let script = "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
                      s.dispatchEvent(new Event('change', {bubbles: true})); return s.value;";
        assert_eq!(self.eval(script, json!([css, value])).await, json!(value), "{css}");
    }

    /// Saves a screenshot of the viewport as a PNG at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed after (KillOnDrop). Blocking I/O is
        // fine here: a few milliseconds against a local process.
        use std::io::{Read as _, Write as _};
        if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.session, self.addr
            );
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.write_all(request.as_bytes());
            // One read: the answer is small, and the connection is not closed after it.
            let _ = stream.read(&mut [0u8; 4096]);
        }
    }
}

/// Where screenshots of the console go: `target/console-screenshots/` (beside the test's own
/// `target/tmp`).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots")
}
