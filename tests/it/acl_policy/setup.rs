//! The set-up: random users created on both sides (those both accept), the policy compiled
//! from them, the Redis and proxy of a run, and `ACL DRYRUN` in batches.

use super::*;

/// A user both sides accepted.
pub(super) struct Accepted {
    pub(super) name: String,
    pub(super) rules: Vec<String>,
}

/// The users of one batch of `ACL SETUSER`, each also compiled alone with `Policy::compile`.
pub(super) struct Created {
    pub(super) accepted: Vec<Accepted>,
    /// Refused by both.
    pub(super) rejected: usize,
    /// Refusals whose message (Redis's `modifier '<op>': <message>`) was compared.
    pub(super) messages_checked: usize,
    /// Users on which the two sides disagree, each with both answers.
    pub(super) mismatches: Vec<String>,
}

/// Creates `users` (name and rules) with pipelined `ACL SETUSER` and compiles each alone:
/// both must accept it, or both refuse it with the same message. With `show`, prints every
/// user with Redis's answer.
pub(super) async fn create_users(
    client: &mut RawClient,
    table: &CommandTable,
    users: Vec<(String, Vec<String>)>,
    show: bool,
) -> Created {
    let mut batch = Vec::new();
    for (name, rules) in &users {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes()];
        args.extend(rules.iter().map(|rule| rule.as_bytes()));
        batch.extend(encode_command(&args));
    }
    client.send(&batch).await;
    let replies = read_replies(client, users.len()).await;
    let mut created =
        Created { accepted: Vec::new(), rejected: 0, messages_checked: 0, mismatches: Vec::new() };
    for ((name, rules), (kind, payload)) in users.into_iter().zip(replies) {
        let line = format!("user {name} {}", rules.join(" "));
        let ours = Policy::compile(line.as_bytes(), table, AclMode::Enforce, &[]);
        let redis = String::from_utf8_lossy(&payload).into_owned();
        if show {
            eprintln!("{line}\n    => {}", if kind == b'+' { "OK" } else { &redis });
        }
        match (kind, ours) {
            (b'+', Ok(_)) => created.accepted.push(Accepted { name, rules }),
            (b'-', Err(error)) => {
                created.rejected += 1;
                let ours = error.to_string();
                // `ERR Error in ACL SETUSER modifier '<op>': <message>`
                let modifier = redis
                    .strip_prefix("ERR Error in ACL SETUSER modifier '")
                    .and_then(|rest| rest.split_once("': "));
                if let Some((op, message)) = modifier {
                    created.messages_checked += 1;
                    // Password rules, and plain words after one (maybe the rest of a password
                    // with a space), are never echoed by the proxy.
                    let op_shown = ours.contains("(password rule, not shown)")
                        || ours.contains("(a word after a password, not shown)")
                        || ours.contains(&format!("'{op}'"));
                    if !ours.ends_with(message) || !op_shown {
                        created
                            .mismatches
                            .push(format!("{line}\n    redis: {redis}\n    ours:  {ours}"));
                    }
                }
            }
            (_, ours) => created.mismatches.push(format!(
                "{line}\n    redis: {}\n    ours:  {}",
                if kind == b'+' { "OK".to_owned() } else { redis },
                match ours {
                    Ok(_) => "compiled".to_owned(),
                    Err(error) => error.to_string(),
                }
            )),
        }
    }
    created
}

/// The users file of `users`, compiled once.
pub(super) fn compile_users(users: &[Accepted], table: &CommandTable, seed: u64) -> Policy {
    let file: String =
        users.iter().map(|user| format!("user {} {}\n", user.name, user.rules.join(" "))).collect();
    Policy::compile(file.as_bytes(), table, AclMode::Enforce, &[])
        .unwrap_or_else(|error| panic!("seed {seed}: the users file does not compile: {error}"))
}

/// What both tests draw from the seed: a Redis, the command table read from it as the proxy
/// reads it, the random users both sides accepted, and the random commands.
pub(super) struct Setup {
    pub(super) seed: u64,
    pub(super) started: Instant,
    /// Runs as long as the test.
    _server: RedisServer,
    /// A connection as `default`, which may run everything.
    pub(super) client: RawClient,
    pub(super) table: CommandTable,
    pub(super) accepted: Vec<Accepted>,
    /// Users refused by both sides.
    pub(super) rejected: usize,
    /// Refusals whose message was compared.
    pub(super) messages_checked: usize,
    pub(super) cases: Vec<Case>,
}

impl Setup {
    /// Starts Redis, reads the table, creates the users (`ACL SETUSER` and `Policy::compile`
    /// must agree on each) and draws the commands.
    pub(super) async fn new(server: Server) -> Self {
        let started = Instant::now();
        let seed =
            std::env::var("ACL_POLICY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED);
        let mut rng = Rng::new(seed);
        let show_users = std::env::var_os("ACL_POLICY_SHOW").is_some();
        let server = RedisServer::start_server(server, &[]);
        let mut client = RawClient::connect(server.addr).await;

        // The table as the proxy reads it from its upstream: COMMAND, ACL CAT, and the
        // version from INFO server (it words the -NOPERM replies).
        let reply = client.call(&[b"COMMAND"]).await;
        let mut table = CommandTable::from_command_reply(&reply).expect("the COMMAND reply parses");
        let categories = client.call(&[b"ACL", b"CAT"]).await;
        table.set_categories_from_reply(&categories).expect("the ACL CAT reply parses");
        let info = client.call(&[b"INFO", b"server"]).await;
        let info = String::from_utf8_lossy(&info).into_owned();
        table.version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .expect("INFO server gives redis_version")
            .trim()
            .to_owned();
        let names = Names::new(&table);

        let users: Vec<(String, Vec<String>)> =
            (0..USERS).map(|i| (format!("u{i}"), user_rules(&mut rng, &names))).collect();
        let created = create_users(&mut client, &table, users, show_users).await;
        assert!(
            created.mismatches.is_empty(),
            "seed {seed}: ACL SETUSER and Policy::compile disagree on {} of {USERS} users:\n{}",
            created.mismatches.len(),
            created.mismatches.join("\n")
        );
        assert!(
            created.accepted.len() >= USERS / 3 && created.rejected > 0,
            "seed {seed}: {} users accepted and {} refused: the generator degenerated",
            created.accepted.len(),
            created.rejected
        );

        let cases: Vec<Case> =
            (0..COMMANDS).map(|_| random_command(&mut rng, &names, &table)).collect();
        Self {
            seed,
            started,
            _server: server,
            client,
            table,
            accepted: created.accepted,
            rejected: created.rejected,
            messages_checked: created.messages_checked,
            cases,
        }
    }
}

/// Puts every case to every user with pipelined `ACL DRYRUN <user> <command>` and hands
/// each answer to `each` with the indexes of the case and the user.
pub(super) async fn dryrun_all(
    client: &mut RawClient,
    cases: &[Case],
    users: &[Accepted],
    mut each: impl FnMut(usize, usize, Answer),
) {
    let pairs: Vec<(usize, usize)> =
        (0..cases.len()).flat_map(|case| (0..users.len()).map(move |user| (case, user))).collect();
    for chunk in pairs.chunks(BATCH) {
        let mut batch = Vec::new();
        for &(case, user) in chunk {
            let (case, name) = (&cases[case], &users[user].name);
            let header = format!(
                "*{}\r\n$3\r\nACL\r\n$6\r\nDRYRUN\r\n${}\r\n{name}\r\n",
                case.args.len() + 3,
                name.len()
            );
            batch.extend_from_slice(header.as_bytes());
            batch.extend_from_slice(&case.encoded);
        }
        client.send(&batch).await;
        let replies = read_replies(client, chunk.len()).await;
        for (&(case, user), (kind, payload)) in chunk.iter().zip(replies) {
            each(case, user, redis_answer(kind, &payload));
        }
    }
}

/// The arguments of a command for a message, `""` for an empty one.
pub(super) fn shown_args(args: &[Bytes]) -> String {
    let shown: Vec<String> =
        args.iter().map(|arg| if arg.is_empty() { "\"\"".to_owned() } else { show(arg) }).collect();
    shown.join(" ")
}

/// Counts of the command phase, by Redis's answer.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) compared: usize,
    pub(super) allowed: usize,
    pub(super) command: usize,
    pub(super) key: usize,
    pub(super) channel: usize,
    pub(super) skipped: usize,
}
