//! Redis Sentinel: which primary the proxy connects to. It asks the sentinels at start
//! (`SENTINEL GET-MASTER-ADDR-BY-NAME`), follows `+switch-master` on one of them, and asks
//! again after every reconnection and every `sentinel_check_interval_ms`. A switch points new
//! upstream connections at the new primary and closes the ones made to the old
//! ([`Target::switch`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::sentinel::SentinelConfig;
use crate::event::{EventSink, SystemEvent};
use crate::proxy::upstream::Target;
use crate::resp::encode;
use crate::resp::value::Value;

/// Largest reply read from a sentinel (its answers are a few hundred bytes).
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why no sentinel named the primary.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SentinelError {
    /// No connection, a refused login, or bytes that are not RESP.
    #[error("sentinel {address}: {message}")]
    Failed {
        /// The sentinel.
        address: String,
        /// What went wrong (Redis's error text, never a password).
        message: String,
    },
    /// The sentinel monitors no primary of that name.
    #[error("sentinel {address} knows no primary named '{master}'")]
    UnknownMaster {
        /// The sentinel.
        address: String,
        /// `upstream.master_name`.
        master: String,
    },
}

/// One connection to a sentinel, reading whole replies.
struct Conn {
    address: String,
    stream: TcpStream,
    input: BytesMut,
}

impl Conn {
    /// Connects (and logs in) within `connect_timeout`.
    async fn open(address: &str, config: &SentinelConfig) -> Result<Self, SentinelError> {
        let failed =
            |message: String| SentinelError::Failed { address: address.to_owned(), message };
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| failed("connect timed out".to_owned()))?
            .map_err(|error| failed(error.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self { address: address.to_owned(), stream, input: BytesMut::new() };
        if let Some((user, password)) = &config.login {
            let login = encode::command(&[b"AUTH", user.as_bytes(), &password.0]);
            let reply = tokio::time::timeout(config.connect_timeout, conn.request(&login))
                .await
                .map_err(|_| failed("login timed out".to_owned()))??;
            if let Value::Line(b'-', text) = reply {
                // Redis's words, which never hold the password.
                return Err(failed(format!("login refused: {}", String::from_utf8_lossy(&text))));
            }
        }
        Ok(conn)
    }

    async fn request(&mut self, request: &[u8]) -> Result<Value, SentinelError> {
        self.stream.write_all(request).await.map_err(|error| self.failed(error.to_string()))?;
        self.next().await
    }

    /// The next whole reply or message.
    async fn next(&mut self) -> Result<Value, SentinelError> {
        loop {
            if let Some((value, used)) = Value::parse(&self.input) {
                self.input.advance(used);
                return Ok(value);
            }
            if self.input.len() > MAX_REPLY_BYTES {
                return Err(self.failed("reply too large, or not RESP".to_owned()));
            }
            let read = self.stream.read_buf(&mut self.input).await;
            match read {
                Ok(0) => return Err(self.failed("connection closed".to_owned())),
                Ok(_) => {}
                Err(error) => return Err(self.failed(error.to_string())),
            }
        }
    }

    fn failed(&self, message: String) -> SentinelError {
        SentinelError::Failed { address: self.address.clone(), message }
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the primary's `host:port` (IPv6 in brackets).
    async fn primary(&mut self, config: &SentinelConfig) -> Result<String, SentinelError> {
        let ask = encode::command(&[
            b"SENTINEL",
            b"GET-MASTER-ADDR-BY-NAME",
            config.master_name.as_bytes(),
        ]);
        let mut reply = tokio::time::timeout(config.connect_timeout, self.request(&ask))
            .await
            .map_err(|_| self.failed("no answer".to_owned()))??;
        let unknown = || SentinelError::UnknownMaster {
            address: self.address.clone(),
            master: config.master_name.clone(),
        };
        if let Value::Line(b'-', text) = &reply {
            return Err(self.failed(String::from_utf8_lossy(text).into_owned()));
        }
        let items = reply.items_mut();
        let (Some(host), Some(port)) = (
            items.first().and_then(Value::text),
            items.get(1).and_then(Value::text).and_then(|port| port.parse::<u16>().ok()),
        ) else {
            return Err(unknown());
        };
        Ok(host_port(&host, port))
    }
}

/// `host:port`, with an IPv6 address in brackets (as a socket address is written).
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Asks each sentinel in turn for the primary; the first answer wins.
pub(crate) async fn ask_primary(config: &SentinelConfig) -> Result<String, SentinelError> {
    let mut last = None;
    for address in &config.sentinels {
        let answer = async { Conn::open(address, config).await?.primary(config).await };
        match answer.await {
            Ok(primary) => return Ok(primary),
            Err(error) => {
                tracing::warn!(%error, "sentinel did not name the primary");
                last = Some(error);
            }
        }
    }
    Err(last.unwrap_or_else(|| SentinelError::Failed {
        address: String::new(),
        message: "no sentinel configured".to_owned(),
    }))
}

/// Points `target` at `primary`; a change is logged and recorded as a `primary_switch` system
/// event.
fn switch(target: &Target, primary: &str, config: &SentinelConfig, sink: &dyn EventSink) {
    let previous = target.address();
    if !target.switch(primary) {
        return;
    }
    tracing::warn!(from = %previous, to = primary, master = %config.master_name, "the primary moved: new upstream connections go to the new one");
    sink.system(SystemEvent {
        action: "primary_switch",
        time: SystemTime::now(),
        detail: serde_json::json!({
            "master_name": &config.master_name,
            "from": &*previous,
            "to": primary,
        }),
    });
}

/// Follows the primary until `stop`: subscribed to `+switch-master` on the first sentinel that
/// answers (the next one when it goes away), and asking again on every (re)subscription and
/// every `check_interval`.
pub async fn follow(
    config: SentinelConfig,
    target: Arc<Target>,
    sink: Arc<dyn EventSink>,
    retry: Duration,
    stop: CancellationToken,
) {
    let mut next = 0;
    loop {
        let address = &config.sentinels[next % config.sentinels.len()];
        next += 1;
        let watched = tokio::select! {
            () = stop.cancelled() => return,
            result = watch_one(address, &config, &target, sink.as_ref()) => result,
        };
        if let Err(error) = watched {
            tracing::warn!(%error, "lost the sentinel; trying the next");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// Subscribes to `+switch-master` on one sentinel and follows it until the connection fails.
async fn watch_one(
    address: &str,
    config: &SentinelConfig,
    target: &Target,
    sink: &dyn EventSink,
) -> Result<(), SentinelError> {
    let mut events = Conn::open(address, config).await?;
    let subscribe = encode::command(&[b"SUBSCRIBE", b"+switch-master"]);
    events.request(&subscribe).await?;
    // Anything missed while not subscribed: ask now.
    let mut asker = Conn::open(address, config).await?;
    switch(target, &asker.primary(config).await?, config, sink);
    let mut check = tokio::time::interval(config.check_interval);
    check.reset();
    loop {
        tokio::select! {
            message = events.next() => {
                if let Some(primary) = switched_to(&message?, &config.master_name) {
                    switch(target, &primary, config, sink);
                }
            }
            _ = check.tick() => match asker.primary(config).await {
                Ok(primary) => switch(target, &primary, config, sink),
                // This sentinel no longer knows the primary: another may.
                Err(SentinelError::UnknownMaster { .. }) => {}
                Err(error) => return Err(error),
            },
        }
    }
}

/// From a `+switch-master` message (`<name> <old-ip> <old-port> <new-ip> <new-port>`) for
/// `master`, the new primary's `host:port`.
fn switched_to(message: &Value, master: &str) -> Option<String> {
    let Value::Aggregate(_, items) = message else { return None };
    let [kind, channel, payload] = items.as_slice() else { return None };
    if kind.text().as_deref() != Some("message")
        || channel.text().as_deref() != Some("+switch-master")
    {
        return None;
    }
    let payload = payload.text()?;
    let words: Vec<&str> = payload.split(' ').collect();
    let [name, _, _, host, port] = words.as_slice() else { return None };
    if *name != master {
        return None;
    }
    Some(host_port(host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel: &str, payload: &str) -> Value {
        let mut bytes = Vec::new();
        encode::header(&mut bytes, b'*', 3);
        for part in ["message", channel, payload] {
            encode::bulk(&mut bytes, part.as_bytes());
        }
        Value::parse(&bytes).unwrap().0
    }

    #[test]
    fn switch_messages_name_the_new_primary_of_our_master_only() {
        let ours = message("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380");
        assert_eq!(switched_to(&ours, "mymaster").as_deref(), Some("127.0.0.1:6380"));
        assert_eq!(switched_to(&ours, "other"), None);
        let v6 = message("+switch-master", "mymaster ::1 6379 ::1 6381");
        assert_eq!(switched_to(&v6, "mymaster").as_deref(), Some("[::1]:6381"));
        assert_eq!(switched_to(&message("+sdown", "mymaster x 1 y 2"), "mymaster"), None);
        assert_eq!(switched_to(&message("+switch-master", "mymaster 1 2"), "mymaster"), None);
    }
}
