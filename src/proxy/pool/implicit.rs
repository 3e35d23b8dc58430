//! The login of a client that has not logged in (passthrough): whether Redis would have logged
//! its connection in as `default` when it connected.
//!
//! Redis decides that once, when a connection is made (`clientSetDefaultAuth`: logged in when
//! the `default` user is on and has `nopass`), and again at `RESET`; a connection made while it
//! did stays logged in after `CONFIG SET requirepass` or `ACL SETUSER default ...` closes the
//! door. A shared connection made then must therefore not serve a client that connected after:
//! that client would run, without a password, what Redis refuses it (`NOAUTH`). So a client that
//! has not logged in gets `Login::Default` only if a probe started after it connected found a new
//! connection logged in; otherwise `Login::Unauthenticated`, whose connections the pool checks
//! are not logged in (Redis then asks each command's client for a login, as directly).

use tokio::time::Instant;

use super::Login;

/// What the last probe found.
#[derive(Debug, Clone, Copy)]
struct Probe {
    started: Instant,
    /// A new connection was logged in as `default`.
    open: bool,
}

/// The pool's memory of the probes, and the lock that makes clients arriving together share one.
#[derive(Debug, Default)]
pub(super) struct Implicit {
    last: tokio::sync::Mutex<Option<Probe>>,
}

impl Implicit {
    /// The login of a client that connected (or ran `RESET`) at `since`: from the last probe if
    /// it started after `since`, or if it found the door closed (connections made while it is
    /// closed serve anyone, as Redis asks their clients for a login for as long as it is);
    /// else from a new probe, which `probe` runs (true: a new connection was logged in).
    pub(super) async fn login<F>(&self, since: Instant, probe: F) -> Login
    where
        F: std::future::Future<Output = bool>,
    {
        let mut last = self.last.lock().await;
        if let Some(found) = *last {
            if !found.open || found.started >= since {
                return login_of(found.open);
            }
        }
        let started = Instant::now();
        let open = probe.await;
        *last = Some(Probe { started, open });
        login_of(open)
    }

    /// A connection made for `Login::Unauthenticated` was logged in: the door is open again,
    /// and the next client that has not logged in probes anew.
    pub(super) async fn reopened(&self) {
        *self.last.lock().await = None;
    }
}

fn login_of(open: bool) -> Login {
    if open {
        Login::Default
    } else {
        Login::Unauthenticated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_door_is_probed_again_for_a_later_client_and_a_closed_one_is_not() {
        let implicit = Implicit::default();
        let first = Instant::now();
        assert_eq!(implicit.login(first, async { true }).await, Login::Default);
        // Connected before that probe started: its answer holds.
        assert_eq!(implicit.login(first, async { false }).await, Login::Default);
        // Connected after: a new probe.
        let later = Instant::now();
        assert_eq!(implicit.login(later, async { false }).await, Login::Unauthenticated);
        // Closed stays closed without probing...
        let after = Instant::now();
        assert_eq!(implicit.login(after, async { true }).await, Login::Unauthenticated);
        // ...until a connection made for it was logged in.
        implicit.reopened().await;
        assert_eq!(implicit.login(Instant::now(), async { true }).await, Login::Default);
    }
}
