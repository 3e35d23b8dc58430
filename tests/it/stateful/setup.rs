//! The set-up: the reference Redis and the proxy's, their users, `ACL DRYRUN` for the policy,
//! flushing between sequences, `INFO commandstats`, and the coverage of situations.

use super::*;

/// The reference Redis, the Redis behind the proxy, the proxy, and admin connections to both.
pub(super) struct Setup {
    _scratch: Scratch,
    pub(super) reference: RedisServer,
    _behind: RedisServer,
    pub(super) proxy: TestProxy,
    pub(super) reference_admin: RawClient,
    pub(super) behind_admin: RawClient,
}

async fn expect_ok(client: &mut RawClient, args: &[&str]) {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let reply = client.call(&args).await;
    assert_eq!(reply, b"+OK\r\n", "{args:?}: {}", show(&reply));
}

pub(super) async fn start(default: DefaultUser) -> Setup {
    let scratch = Scratch::new("stateful");
    std::fs::create_dir_all(scratch.path()).unwrap();
    let users_file = scratch.path().join("users.acl");
    let users = users(default);
    let text: String =
        users.iter().map(|(name, rules)| format!("user {name} {}\n", rules.join(" "))).collect();
    std::fs::write(&users_file, text).unwrap();

    let reference = RedisServer::start(&[]);
    let mut reference_admin = RawClient::connect(reference.addr).await;
    expect_ok(
        &mut reference_admin,
        &["ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all"],
    )
    .await;
    expect_ok(&mut reference_admin, &["AUTH", "admin", "adminpw"]).await;
    for (name, rules) in &users {
        let mut args = vec!["ACL", "SETUSER", *name, "reset"];
        args.extend(rules.iter().copied());
        expect_ok(&mut reference_admin, &args).await;
    }

    let behind = RedisServer::start(&["--requirepass", "service-secret"]);
    let mut behind_admin = RawClient::connect(behind.addr).await;
    expect_ok(&mut behind_admin, &["AUTH", "service-secret"]).await;
    let toml = format!(
        "[auth]\nmode = \"proxy\"\nusers_file = \"{}\"\nupstream_user = \"default\"\nupstream_password = \"service-secret\"\n\
         [audit]\ngroup_refusals_secs = 0\n",
        users_file.display()
    );
    let proxy = TestProxy::start_with(behind.addr, &toml).await;
    Setup { _scratch: scratch, reference, _behind: behind, proxy, reference_admin, behind_admin }
}

/// Asks the reference, with `ACL DRYRUN`, which user may run which command.
pub(super) async fn dry_run(admin: &mut RawClient, default: DefaultUser, kinds: &[Kind]) -> Policy {
    let mut forms: Vec<Cmd> = kinds.iter().flat_map(|k| k.forms.iter().cloned()).collect();
    forms.extend([cmd(&["RESET"]), cmd(&["AUTH", "bob", "b"])]);
    forms.retain(arity_ok);
    forms.sort();
    forms.dedup();
    let mut questions = Vec::new();
    let mut pipeline = Vec::new();
    for user in LOGIN_USERS {
        for form in &forms {
            let mut args: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", user.as_bytes()];
            args.extend(form.iter().map(Vec::as_slice));
            pipeline.extend(encode_command(&args));
            questions.push(((*user).to_owned(), form.clone()));
        }
    }
    admin.send(&pipeline).await;
    let mut allowed = HashMap::new();
    for question in questions {
        let reply = admin.read_reply().await;
        let verdict = match reply.first() {
            Some(b'+') => true,
            Some(b'$') => false,
            _ => panic!("ACL DRYRUN {} {}: {}", question.0, show_cmd(&question.1), show(&reply)),
        };
        allowed.insert(question, verdict);
    }
    Policy { default, allowed }
}

/// Empties databases 0-3 on both sides (FLUSHDB, so that any FLUSHALL in the command
/// statistics is a client's).
pub(super) async fn flush(setup: &mut Setup) {
    let mut pipeline = Vec::new();
    for db in ["0", "1", "2", "3"] {
        pipeline.extend(encode_command(&[b"SELECT", db.as_bytes()]));
        pipeline.extend(encode_command(&[b"FLUSHDB"]));
    }
    for admin in [&mut setup.reference_admin, &mut setup.behind_admin] {
        admin.send(&pipeline).await;
        for _ in 0..8 {
            let reply = admin.read_reply().await;
            assert_eq!(reply, b"+OK\r\n", "flush: {}", show(&reply));
        }
    }
}

pub(super) async fn commandstats(admin: &mut RawClient) -> BTreeMap<String, u64> {
    let reply = admin.call(&[b"INFO", b"commandstats"]).await;
    String::from_utf8_lossy(&reply)
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands the proxy does not forward as sent (it answers AUTH, HELLO AUTH and the ACL
/// commands itself and logs in on its own), the admin connections' INFO, and the proxy's
/// start-up questions.
pub(super) fn not_compared(name: &str) -> bool {
    // `client|reply`: the proxy follows each CLIENT REPLY OFF|SKIP with its own CLIENT REPLY ON.
    // `monitor`: a MONITOR from a client already monitoring, which Redis ignores without a
    // reply, the proxy answers (with nothing) itself.
    matches!(name, "auth" | "hello" | "info" | "client|reply" | "monitor")
        || name.starts_with("acl|")
        || name.starts_with("command")
}

/// Situations the generator must keep producing (counted over a run and printed).
pub(super) const SITUATIONS: &[&str] = &[
    "MULTI refused, then AUTH / CLIENT REPLY / SUBSCRIBE",
    "EXEC applied a queued SELECT",
    "EXEC applied a queued HELLO",
    "EXEC nil after a WATCHed key changed",
    "EXECABORT",
    "state changed under CLIENT REPLY OFF/SKIP",
    "confirmations under CLIENT REPLY OFF/SKIP",
    "RESET reply skipped",
    "AUTH or HELLO AUTH logged in",
    "AUTH or HELLO AUTH refused",
    "refused by the RESP2 pub/sub context",
    "refused with NOPERM",
    "refused with NOAUTH",
    "message push to oneself",
    "pub/sub-looking data reply while subscribed (RESP3)",
    "MONITOR on",
    "monitor line",
    "argument-less UNSUBSCRIBE of several channels",
];

/// Counts the situations of [`SITUATIONS`] one sequence produces.
pub(super) fn coverage(seq: &Sequence, covered: &mut BTreeMap<&'static str, usize>) {
    let mut hit = |what: &'static str| *covered.entry(what).or_default() += 1;
    let mut multi_refused = false;
    for (i, (c, p)) in seq.cmds.iter().zip(&seq.preds).enumerate() {
        let name = upper(&c[0]);
        let next = seq.preds.get(i + 1);
        let error =
            |prefix: &str| matches!(&p.out, Out::Reply(Expect::Err(e)) if e.starts_with(prefix));
        if name == "MULTI" && !p.in_multi && matches!(&p.out, Out::Reply(Expect::Err(_))) {
            multi_refused = true;
        }
        if multi_refused && matches!(name.as_str(), "AUTH" | "CLIENT" | "SUBSCRIBE" | "HELLO") {
            hit("MULTI refused, then AUTH / CLIENT REPLY / SUBSCRIBE");
            multi_refused = false;
        }
        if let (Some(next), "EXEC") = (next, name.as_str()) {
            if matches!(&p.out, Out::Reply(Expect::Exec(_))) && next.db != p.db {
                hit("EXEC applied a queued SELECT");
            }
            if matches!(&p.out, Out::Reply(Expect::Exec(_))) && next.resp != p.resp {
                hit("EXEC applied a queued HELLO");
            }
        }
        if matches!(&p.out, Out::Reply(Expect::Nil)) {
            hit("EXEC nil after a WATCHed key changed");
        }
        if error("EXECABORT") {
            hit("EXECABORT");
        }
        if let Some(next) = next.filter(|_| p.suppressed) {
            let changed = (next.db, &next.user, next.resp, next.in_multi, next.monitor)
                != (p.db, &p.user, p.resp, p.in_multi, p.monitor);
            if changed && name != "RESET" {
                hit("state changed under CLIENT REPLY OFF/SKIP");
            }
            if matches!(p.out, Out::Confirm(_)) {
                hit("confirmations under CLIENT REPLY OFF/SKIP");
            }
        }
        if name == "RESET" && p.suppressed {
            hit("RESET reply skipped");
        }
        if p.record_user != p.user || (name == "AUTH" && p.status() == Some(ReplyStatus::Ok)) {
            hit("AUTH or HELLO AUTH logged in");
        }
        if error("WRONGPASS") {
            hit("AUTH or HELLO AUTH refused");
        }
        if error("ERR Can't execute") {
            hit("refused by the RESP2 pub/sub context");
        }
        if error("NOPERM") {
            hit("refused with NOPERM");
        }
        if error("NOAUTH") {
            hit("refused with NOAUTH");
        }
        let subscribed_to = |channel: &[u8]| {
            p.subscribed > 0 && seq.cmds[..i].iter().any(|c| c.contains(&channel.to_vec()))
        };
        if name == "PUBLISH" && p.resp == 3 && !p.in_multi && subscribed_to(&c[1]) {
            hit("message push to oneself");
        }
        if matches!(name.as_str(), "EVAL" | "LRANGE") && p.resp == 3 && p.subscribed > 0 {
            hit("pub/sub-looking data reply while subscribed (RESP3)");
        }
        if name == "MONITOR" && matches!(&p.out, Out::Reply(Expect::Status("OK"))) {
            hit("MONITOR on");
        }
        if p.monitor && !p.suppressed && !error("") {
            hit("monitor line");
        }
        if c.len() == 1 && name == "UNSUBSCRIBE" && matches!(p.out, Out::Confirm(n) if n > 1) {
            hit("argument-less UNSUBSCRIBE of several channels");
        }
    }
}
