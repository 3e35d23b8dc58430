//! `[auth]` validated: who authenticates clients ([`AuthConfig`], [`AuthMode`],
//! [`MirrorUsers`]), the users file, secrets, and the validator of [`RawAuth`].

use std::path::PathBuf;

use super::error::{Invalid, Problem};
use super::raw::RawAuth;
use super::AclMode;

/// Identity.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Who authenticates clients.
    pub mode: AuthMode,
    /// Users file in Redis ACL syntax, and its contents as read at start-up (checked to
    /// compile against the embedded command table).
    pub users_file: Option<UsersFile>,
    /// With [`AuthMode::Proxy`]: the user and password each upstream connection logs in
    /// with (`None`: Redis's default user).
    pub(crate) upstream_login: Option<(String, Secret)>,
    /// Successful authentications become security events.
    pub(crate) record_success: bool,
    /// `auth.mirror_users`: whether clients run upstream as Redis users mirroring theirs.
    pub mirror_users: MirrorUsers,
    /// `auth.mirror_prefix`.
    pub(crate) mirror_prefix: String,
}

/// `auth.mirror_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorUsers {
    /// Mirror when the service user may run `ACL SETUSER`; otherwise refuse what Redis would
    /// check as the service user (scripts, SORT patterns) to users narrower than everything.
    Auto,
    /// Mirror, or refuse to start.
    On,
    /// Never mirror: the refusals above apply.
    Off,
}

impl MirrorUsers {
    /// The name `auth.mirror_users` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// AUTH and HELLO AUTH go to Redis; the proxy learns the user from the reply.
    Passthrough,
    /// The proxy checks credentials against the users file and answers AUTH itself.
    Proxy,
}

impl AuthMode {
    /// The name `auth.mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Proxy => "proxy",
        }
    }
}

/// A value that must never be printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The users file.
#[derive(Debug, Clone)]
pub struct UsersFile {
    /// Where it is (read again on reload).
    pub path: PathBuf,
    /// What it held when the configuration was loaded.
    pub text: Vec<u8>,
}

impl RawAuth {
    /// Checks `[auth]`: reads the users file, and checks that proxy mode has one and that
    /// logins come whole.
    pub fn validate(&self) -> Result<AuthConfig, Invalid> {
        let users_file = self.users_file.as_deref().map(read_users_file).transpose()?;
        if self.mode == AuthMode::Proxy && users_file.is_none() {
            return Err(Invalid::other(
                "auth.mode",
                "\"proxy\" needs auth.users_file (the users the proxy authenticates)",
            ));
        }
        let upstream_login = match (&self.upstream_user, &self.upstream_password) {
            (Some(user), Some(password)) => {
                Some((user.clone(), Secret(password.as_bytes().to_vec())))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(Invalid::new(
                    "auth.upstream_password",
                    Problem::NeededWith("auth.upstream_user"),
                ))
            }
            (None, Some(password)) => {
                Some(("default".to_owned(), Secret(password.as_bytes().to_vec())))
            }
        };
        if crate::acl::user::has_spaces(self.mirror_prefix.as_bytes()) {
            return Err(Invalid::other("auth.mirror_prefix", "must not contain spaces"));
        }
        Ok(AuthConfig {
            mode: self.mode,
            users_file,
            upstream_login,
            record_success: self.record_success,
            mirror_users: self.mirror_users,
            mirror_prefix: self.mirror_prefix.clone(),
        })
    }
}

/// Reads the users file and checks that it compiles against the embedded command table. A
/// command or category name that table does not know is left for the upstream's live table,
/// which the file is compiled against at start-up (the start fails if it does not know it
/// either).
fn read_users_file(path: &str) -> Result<UsersFile, Invalid> {
    let invalid = |error: &dyn std::fmt::Display| {
        Invalid::other("auth.users_file", format!("{path}: {error}"))
    };
    let text = std::fs::read(path).map_err(|error| invalid(&error))?;
    let table = crate::command::CommandTable::embedded();
    match crate::acl::Policy::compile(&text, &table, AclMode::Enforce, &[]) {
        Ok(_) => {}
        Err(error) if error.unknown_name => {}
        Err(error) => return Err(invalid(&error)),
    }
    Ok(UsersFile { path: PathBuf::from(path), text })
}
