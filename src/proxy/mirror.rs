//! Mirrored upstream users (`auth.mirror_users`, proxy auth mode): a Redis user per proxy
//! user, with the same rules, that each client's upstream connection logs in as — so the work
//! Redis does on the server side (script bodies, FCALL, SORT BY/GET) is checked as the
//! client's user, not as the service user.
//!
//! Each mirror is `<prefix><name>` with a password derived from the service password (HMAC),
//! so several proxies in front of one Redis provision the same secrets. They are provisioned
//! by the service login with `ACL SETUSER <mirror> reset on|off #<hash> <rules>` at start and on
//! every policy change; mirrors of users the policy no longer has are deleted.
//!
//! The mirrors in force name only users whose Redis mirror exists with the rules of the
//! policy in force: a policy swap first narrows them to the users it keeps unchanged, and a
//! provisioning adds its users only once Redis has them. A client whose user is not among them
//! runs as the service user, with the gate refusing what Redis would check as the client;
//! a login as a mirror Redis no longer has would otherwise close the client's connection.

use std::collections::HashMap;

use bytes::Bytes;
use hmac::Mac;
use sha2::Sha256;

use crate::acl::user::{Selector, User};
use crate::acl::Policy;
use crate::config::Config;
use crate::proxy::upstream::{self, FetchTableError, UpstreamStream};
use crate::resp::encode;

/// The mirrors provisioned for one policy.
#[derive(Clone)]
pub(crate) struct Mirrors {
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// Each mirrored user's name and the `ACL SETUSER` rules its mirror was given.
    users: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl std::fmt::Debug for Mirrors {
    // The key derives every mirror's password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirrors").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

/// Why mirrors could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MirrorError {
    /// No connection, or the service login failed.
    #[error(transparent)]
    Upstream(#[from] FetchTableError),
    /// Redis refused `ACL SETUSER` / `ACL DELUSER` (not permitted, an older Redis, ...).
    #[error("the upstream refused {command} for '{user}': {message}")]
    Refused {
        /// The ACL subcommand.
        command: &'static str,
        /// The mirror concerned.
        user: String,
        /// Redis's error.
        message: String,
    },
}

impl Mirrors {
    /// The mirrors of every user of `policy` (not yet provisioned).
    fn of_policy(prefix: &[u8], key: &[u8], policy: &Policy) -> Self {
        let mut mirrors =
            Self { prefix: prefix.to_vec(), key: key.to_vec(), users: HashMap::new() };
        for user in policy.users().iter() {
            let rules = mirrors.rules(user);
            mirrors.users.insert(user.name.clone(), rules);
        }
        mirrors
    }

    /// The mirror's name and password for `user`, when it is provisioned.
    pub(crate) fn login(&self, user: &[u8]) -> Option<(Bytes, String)> {
        self.users.contains_key(user).then(|| (self.name(user), self.password(user)))
    }

    /// The mirrors still exact under `policy`: those of the users it has, with the same rules.
    pub(crate) fn still_exact(&self, policy: &Policy) -> Self {
        let users = policy.users();
        let users = self
            .users
            .iter()
            .filter(|(name, rules)| users.get(name).is_some_and(|user| self.rules(user) == **rules))
            .map(|(name, rules)| (name.clone(), rules.clone()))
            .collect();
        Self { prefix: self.prefix.clone(), key: self.key.clone(), users }
    }

    /// The `ACL SETUSER` rules of `user`'s mirror.
    fn rules(&self, user: &User) -> Vec<Vec<u8>> {
        let hash = crate::util::hex::hex_sha256(self.password(&user.name).as_bytes());
        setuser_tokens(user, &hash)
    }

    fn name(&self, user: &[u8]) -> Bytes {
        let mut name = self.prefix.clone();
        name.extend_from_slice(user);
        Bytes::from(name)
    }

    fn password(&self, user: &[u8]) -> String {
        let mut mac =
            <hmac::Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"redis-audit-proxy mirrored user\0");
        mac.update(user);
        crate::util::hex::hex(&mac.finalize().into_bytes())
    }
}

/// The key mirror passwords derive from: the service password, or (without one) random bytes
/// of this process.
pub(crate) fn derivation_key(config: &Config) -> Vec<u8> {
    if let Some((_, password)) = &config.auth.upstream_login {
        return password.0.clone();
    }
    crate::util::id::random_bytes::<32>().unwrap_or_default().to_vec()
}

/// Provisions a mirror of every user of `policy` (and deletes stale ones) through the service
/// login.
pub(crate) async fn provision(
    config: &Config,
    address: &str,
    key: &[u8],
    policy: &Policy,
) -> Result<Mirrors, MirrorError> {
    let login = config.auth.upstream_login.as_ref().map(|(user, pw)| (user.as_str(), &pw.0[..]));
    let mut stream = upstream::connect_as(address, &config.upstream, login).await?;
    let mirrors = Mirrors::of_policy(config.auth.mirror_prefix.as_bytes(), key, policy);
    let work = async {
        for (user, rules) in &mirrors.users {
            let name = mirrors.name(user);
            let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", &name];
            args.extend(rules.iter().map(Vec::as_slice));
            call(&mut stream, "ACL SETUSER", &name, &encode::command(&args)).await?;
        }
        let listed =
            upstream::read_reply(&mut stream, b"*2\r\n$3\r\nACL\r\n$5\r\nUSERS\r\n").await?;
        for stale in stale_mirrors(&listed, &mirrors) {
            let command = encode::command(&[b"ACL", b"DELUSER", &stale]);
            call(&mut stream, "ACL DELUSER", &stale, &command).await?;
        }
        Ok::<_, MirrorError>(())
    };
    tokio::time::timeout(config.upstream.connect_timeout * 5, work)
        .await
        .map_err(|_| FetchTableError::Io("provisioning mirrored users timed out".into()))??;
    Ok(mirrors)
}

/// Sends one ACL command; an error reply is a [`MirrorError::Refused`].
async fn call(
    stream: &mut UpstreamStream,
    command: &'static str,
    user: &[u8],
    request: &[u8],
) -> Result<(), MirrorError> {
    let reply = upstream::read_reply(stream, request).await?;
    if reply.first() == Some(&b'-') {
        return Err(MirrorError::Refused {
            command,
            user: String::from_utf8_lossy(user).into_owned(),
            message: String::from_utf8_lossy(&reply[1..]).trim_end().to_owned(),
        });
    }
    Ok(())
}

/// The `ACL SETUSER` rules that make a mirror of `user`: reset, `on`/`off`, the mirror's
/// password hash, the payload flag, the root selector's rules, then each other selector as one
/// `( ... )` argument. Built from the raw patterns, so binary ones mirror exactly.
fn setuser_tokens(user: &User, password_hash: &str) -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = vec![b"reset".to_vec()];
    tokens.push(if user.enabled { b"on".to_vec() } else { b"off".to_vec() });
    tokens.push(format!("#{password_hash}").into_bytes());
    match user.sanitize_payload {
        Some(false) => tokens.push(b"skip-sanitize-payload".to_vec()),
        Some(true) => tokens.push(b"sanitize-payload".to_vec()),
        None => {}
    }
    tokens.extend(selector_tokens(user.root()));
    for selector in &user.selectors[1..] {
        let mut group = b"(".to_vec();
        group.extend(selector_tokens(selector).join(&b' '));
        group.push(b')');
        tokens.push(group);
    }
    tokens
}

/// One selector's rules: keys, channels, then the command rules in order.
fn selector_tokens(selector: &Selector) -> Vec<Vec<u8>> {
    let mut tokens = Vec::new();
    if selector.all_keys {
        tokens.push(b"~*".to_vec());
    } else {
        for pattern in &selector.keys {
            let mut token = match pattern.permissions {
                crate::acl::user::KEY_READ => b"%R~".to_vec(),
                crate::acl::user::KEY_WRITE => b"%W~".to_vec(),
                _ => b"~".to_vec(),
            };
            token.extend_from_slice(&pattern.pattern);
            tokens.push(token);
        }
    }
    if selector.all_channels {
        tokens.push(b"&*".to_vec());
    } else {
        tokens.push(b"resetchannels".to_vec());
        for channel in &selector.channels {
            let mut token = b"&".to_vec();
            token.extend_from_slice(channel);
            tokens.push(token);
        }
    }
    tokens.extend(selector.describe_commands().split(' ').map(|rule| rule.as_bytes().to_vec()));
    tokens
}

/// Users in an `ACL USERS` reply that carry the mirror prefix but mirror no proxy user.
fn stale_mirrors(reply: &[u8], mirrors: &Mirrors) -> Vec<Vec<u8>> {
    let Ok(Some((frame, _))) =
        redis_protocol::resp2::decode::decode(&bytes::Bytes::copy_from_slice(reply))
    else {
        return Vec::new();
    };
    let redis_protocol::resp2::types::OwnedFrame::Array(names) = frame else { return Vec::new() };
    names
        .into_iter()
        .filter_map(|name| match name {
            redis_protocol::resp2::types::OwnedFrame::BulkString(name) => Some(name),
            _ => None,
        })
        .filter(|name| {
            name.strip_prefix(&mirrors.prefix[..])
                .is_some_and(|user| !mirrors.users.contains_key(user))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;
    use crate::config::AclMode;

    #[test]
    fn mirrors_carry_the_same_rules_and_a_derived_password() {
        let policy = Policy::compile(
            b"user alice on >pw %R~r:* ~app:* &chan -@all +@read +set (~s* +get)\nuser bob off",
            &CommandTable::embedded(),
            AclMode::Enforce,
            &[],
        )
        .unwrap();
        let alice = policy.users().get(b"alice").unwrap();
        let tokens: Vec<String> = setuser_tokens(alice, "ab")
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        assert_eq!(
            tokens,
            [
                "reset",
                "on",
                "#ab",
                "%R~r:*",
                "~app:*",
                "resetchannels",
                "&chan",
                "-@all",
                "+@read",
                "+set",
                "(~s* resetchannels -@all +get)"
            ]
        );
        let mirrors = Mirrors::of_policy(b"rap:", b"service", &policy);
        let (name, password) = mirrors.login(b"alice").unwrap();
        assert_eq!(&name[..], b"rap:alice");
        assert_eq!(password.len(), 64);
        assert_ne!(password, mirrors.password(b"bob"));
        assert!(mirrors.login(b"carol").is_none());
        let listed = b"*3\r\n$9\r\nrap:alice\r\n$7\r\nrap:old\r\n$7\r\ndefault\r\n";
        assert_eq!(stale_mirrors(listed, &mirrors), [b"rap:old".to_vec()]);
    }

    #[test]
    fn a_policy_swap_keeps_only_the_mirrors_whose_rules_it_keeps() {
        let compile = |text: &[u8]| {
            Policy::compile(text, &CommandTable::embedded(), AclMode::Enforce, &[]).unwrap()
        };
        let before = compile(
            b"user alice on >pw ~a:* +get\nuser bob on >pw ~b:* +get\nuser carol on >pw ~* +@all",
        );
        let mirrors = Mirrors::of_policy(b"rap:", b"service", &before);
        // bob's rules change, carol is deleted, dave is new, alice's password changes (her
        // mirror's does not).
        let after = compile(b"user alice on >other ~a:* +get\nuser bob on >pw ~b:* +get +set\nuser dave on >pw ~* +@all");
        let kept = mirrors.still_exact(&after);
        let names = |m: &Mirrors| {
            let mut names: Vec<String> =
                m.users.keys().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(names(&kept), ["alice", "default"]);
        assert_eq!(kept.login(b"alice"), mirrors.login(b"alice"));
        assert!(kept.login(b"bob").is_none() && kept.login(b"dave").is_none());
        assert_eq!(names(&mirrors.still_exact(&before)), ["alice", "bob", "carol", "default"]);
    }
}
