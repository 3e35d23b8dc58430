//! Which arguments of a command may be written to the trail when argument capture is on:
//! every argument that carries a secret (passwords in AUTH, HELLO, MIGRATE, ACL SETUSER, the
//! sensitive CONFIG SET and SENTINEL parameters, and those of the command an ACL DRYRUN names)
//! is replaced, whatever its case or position.

use bytes::Bytes;

/// One argument as the trail may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShownArg {
    /// The argument (possibly cut to fit the record's argument budget).
    Clear(Bytes),
    /// A secret, never written.
    Redacted,
}

/// CONFIG parameters whose values are secrets.
fn is_secret_parameter(name: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_slice(),
        b"requirepass" | b"masterauth" | b"masteruser" | b"primaryauth" | b"primaryuser"
    ) || (name.starts_with(b"tls-") && name.ends_with(b"-pass"))
        || name.ends_with(b"-password")
}

/// SENTINEL SET options whose values are secrets.
fn is_secret_sentinel_option(name: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_slice(), b"auth-pass" | b"auth-user")
}

/// Positions (in `args`, the name at 0) that hold secrets.
pub(crate) fn secret_positions(args: &[Bytes]) -> Vec<usize> {
    let is = |index: usize, word: &str| {
        args.get(index).is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    let mut secret = Vec::new();
    let Some(name) = args.first() else { return secret };
    let name = name.to_ascii_lowercase();
    match name.as_slice() {
        // AUTH pass | AUTH user pass: the user is not secret, but AUTH with one argument has
        // only the password.
        b"auth" => secret.extend(if args.len() >= 3 { 2..args.len() } else { 1..args.len() }),
        b"hello" => {
            // From 1: `HELLO AUTH user pass` (no version) is an error Redis answers, but the
            // password is still on the line. An AUTH with one word after it has only that word.
            let mut i = 1;
            while let Some(option) = args.get(i) {
                if option.eq_ignore_ascii_case(b"auth") {
                    secret.push(if i + 2 < args.len() { i + 2 } else { i + 1 });
                    i += 3;
                } else if option.eq_ignore_ascii_case(b"setname") {
                    i += 2;
                } else {
                    i += 1;
                }
            }
        }
        b"migrate" => {
            let mut i = 6;
            while let Some(option) = args.get(i) {
                if option.eq_ignore_ascii_case(b"auth") {
                    secret.push(i + 1);
                    i += 2;
                } else if option.eq_ignore_ascii_case(b"auth2") {
                    secret.push(i + 2);
                    i += 3;
                } else if option.eq_ignore_ascii_case(b"keys") {
                    break;
                } else {
                    i += 1;
                }
            }
        }
        b"acl" if is(1, "setuser") => {
            // Password tokens: >pass, <pass, #hash, !hash (selectors in parentheses too).
            for (i, arg) in args.iter().enumerate().skip(3) {
                if arg.iter().any(|b| matches!(b, b'>' | b'<' | b'#' | b'!')) {
                    secret.push(i);
                }
            }
        }
        // ACL DRYRUN user command args...: the command's own secrets (a dry run of AUTH).
        b"acl" if is(1, "dryrun") => {
            let command = args.get(3..).unwrap_or_default();
            secret.extend(secret_positions(command).into_iter().map(|i| i + 3));
        }
        b"config" if is(1, "set") => secret_values(args, 2, is_secret_parameter, &mut secret),
        b"sentinel" if is(1, "config") && is(2, "set") => {
            // SENTINEL CONFIG SET sentinel-pass | sentinel-user <value> ...
            let is_secret = |name: &[u8]| {
                let name = name.to_ascii_lowercase();
                matches!(name.as_slice(), b"sentinel-pass" | b"sentinel-user")
            };
            secret_values(args, 3, is_secret, &mut secret);
        }
        b"sentinel" if is(1, "set") => {
            secret_values(args, 3, is_secret_sentinel_option, &mut secret);
        }
        _ => {}
    }
    secret.retain(|&i| i < args.len());
    secret
}

/// In `name value name value ...` pairs from `args[first]` on, the positions of the values whose
/// name `is_secret` says holds a secret.
fn secret_values(
    args: &[Bytes],
    first: usize,
    is_secret: impl Fn(&[u8]) -> bool,
    secret: &mut Vec<usize>,
) {
    let pairs = args.get(first..).unwrap_or_default().chunks_exact(2);
    for (pair, name_and_value) in pairs.enumerate() {
        if is_secret(&name_and_value[0]) {
            secret.push(first + 2 * pair + 1);
        }
    }
}

/// The arguments after the name as the trail may show them: secrets redacted, the rest cut to
/// `max_bytes` in all. Returns them and whether anything was cut.
pub(crate) fn shown_args(args: &[Bytes], max_bytes: usize) -> (Vec<ShownArg>, bool) {
    let secrets = secret_positions(args);
    let mut left = max_bytes;
    let mut truncated = false;
    let mut shown = Vec::with_capacity(args.len().saturating_sub(1));
    for (index, arg) in args.iter().enumerate().skip(1) {
        if secrets.contains(&index) {
            shown.push(ShownArg::Redacted);
            continue;
        }
        let take = arg.len().min(left);
        truncated |= take < arg.len();
        left -= take;
        shown.push(ShownArg::Clear(Bytes::copy_from_slice(&arg[..take])));
    }
    (shown, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
    }

    #[test]
    fn every_secret_position_is_found() {
        let cases: &[(&str, &[usize])] = &[
            ("AUTH pw", &[1]),
            ("auth alice pw", &[2]),
            ("HELLO 3 AUTH alice pw SETNAME app", &[4]),
            ("hello 3 setname app auth bob pw", &[6]),
            ("MIGRATE h 6379 k 0 100 COPY AUTH pw", &[8]),
            ("MIGRATE h 6379  0 100 AUTH2 u pw KEYS a b", &[8]),
            ("ACL SETUSER alice on >pw1 ~* #abcd (~x >pw2) nopass", &[4, 6, 8]),
            ("CONFIG SET requirepass pw maxmemory 10", &[3]),
            ("config set MASTERAUTH pw tls-key-file-pass kp", &[3, 5]),
            ("SENTINEL SET mymaster auth-pass pw quorum 2", &[4]),
            ("SENTINEL CONFIG SET sentinel-pass pw resolve-hostnames yes", &[4]),
            ("HELLO AUTH alice pw", &[3]),
            ("HELLO 3 AUTH pw", &[3]),
            ("SET k v", &[]),
            ("CONFIG GET requirepass", &[]),
            // Each AUTH of a line has its password, however the options before it run.
            ("HELLO 3 AUTH u p AUTH u2 p2", &[4, 7]),
            ("HELLO 3 AUTH u p SETNAME n AUTH u2 p2", &[4, 9]),
            ("MIGRATE h 6379  0 100 AUTH pw AUTH2 u pw2", &[7, 10]),
            ("MIGRATE h 6379  0 100 AUTH2 u pw AUTH pw2", &[8, 10]),
            // Look-alikes that hold no secret.
            ("CONFIG SET tls-port 6380 repl-backlog-pass x", &[]),
            ("CONFIG GET requirepass masterauth", &[]),
            ("ACL DRYRUN alice SET k >v", &[]),
            ("ACL DRYRUN alice AUTH bob pw", &[5]),
            ("acl dryrun alice CONFIG SET masterauth pw", &[6]),
            ("ACL DRYRUN alice", &[]),
            ("ACL DELUSER a AUTH pw", &[]),
            ("SENTINEL SIMULATE-FAILURE x auth-pass y", &[]),
            ("SENTINEL CONFIG GET sentinel-pass sentinel-user", &[]),
            ("CONFIG SET maxmemory 1 appendonly no requirepass pw", &[7]),
            // An option that ends the line names no argument.
            ("HELLO 3 AUTH", &[]),
        ];
        for (line, expected) in cases {
            assert_eq!(secret_positions(&args(line)), *expected, "{line}");
        }
    }

    #[test]
    fn shown_args_redact_and_cut() {
        let (shown, truncated) = shown_args(&args("AUTH alice secret"), 100);
        assert_eq!(shown, [ShownArg::Clear(Bytes::from_static(b"alice")), ShownArg::Redacted]);
        assert!(!truncated);
        let (shown, truncated) = shown_args(&args("SET key value"), 5);
        assert_eq!(
            shown,
            [
                ShownArg::Clear(Bytes::from_static(b"key")),
                ShownArg::Clear(Bytes::from_static(b"va"))
            ]
        );
        assert!(truncated);
    }
}
