//! Denials really sent: the proxy's `-NOPERM` reply and its ACL LOG entry must be Redis's
//! own, for every denial reason.

use super::*;

/// Denials of each reason really sent to Redis (an even spread of those DRYRUN gives).
const PER_REASON: usize = 2000;
/// Denials of each reason that must be compared, at the least.
const MIN_PER_REASON: usize = 20;
/// Denials that must be compared, at the least.
const MIN_DENIALS: usize = 300;

/// The fields of the newest entry of an `ACL LOG` reply (Redis 7.0: `count`, `reason`,
/// `context`, `object`, `username`, `age-seconds`, `client-info`); `Err` with the reply when
/// it is not a non-empty list of such entries.
fn newest_log_entry(reply: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use redis_protocol::resp2::types::OwnedFrame;
    let value = |frame: &OwnedFrame| match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => b.clone(),
        OwnedFrame::Integer(i) => i.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    };
    let unexpected = || format!("ACL LOG replied {}", show(reply));
    let Ok(Some((OwnedFrame::Array(entries), _))) = redis_protocol::resp2::decode::decode(reply)
    else {
        return Err(unexpected());
    };
    let Some(OwnedFrame::Array(items)) = entries.first() else { return Err(unexpected()) };
    Ok(items
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (String::from_utf8_lossy(&value(&pair[0])).into_owned(), value(&pair[1])))
        .collect())
}

/// What Redis answers a command it refuses with `noperm` (the `-NOPERM` error of
/// [`Policy::noperm_reply`]): that error, except for EXEC, which Redis 7.0 refuses with
/// `-EXECABORT Transaction discarded because of: <error>` inside MULTI or not
/// (`rejectCommand` calls `execCommandAbort` for any EXEC).
fn denied_reply(noperm: &[u8], full_name: &str) -> Vec<u8> {
    match noperm.strip_prefix(b"-") {
        Some(error) if full_name == "exec" => {
            [&b"-EXECABORT Transaction discarded because of: "[..], error].concat()
        }
        _ => noperm.to_vec(),
    }
}

/// A denial as a log entry shows it: `reason=... context=... object=... username=...`.
fn shown_entry(entry: &BTreeMap<String, Vec<u8>>) -> String {
    ["count", "reason", "context", "object", "username"]
        .iter()
        .map(|field| {
            let value = entry.get(*field).map_or_else(|| "<missing>".to_owned(), |v| show(v));
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

crate::on_every_server!(
    denials_match_redis_acl_log_and_noperm_reply,
    denials_match_redis_acl_log_and_noperm_reply_on_redis_7_2,
    denials_match_redis_acl_log_and_noperm_reply_on_valkey_8_0
        => denials_match_redis_acl_log_and_noperm_reply_on
);

async fn denials_match_redis_acl_log_and_noperm_reply_on(server: Server) {
    crate::require_server!(server);
    let mut setup = Setup::new(server).await;
    let seed = setup.seed;

    // A twin of each user: its rules, then `on nopass` (flags and passwords only, not
    // permissions), so that a connection can authenticate as it. Both sides use the twin's
    // name: it is in the ACL LOG entry.
    let twins: Vec<(String, Vec<String>)> = setup
        .accepted
        .iter()
        .map(|user| {
            let mut rules = user.rules.clone();
            rules.extend(["on".to_owned(), "nopass".to_owned()]);
            (format!("{}-twin", user.name), rules)
        })
        .collect();
    let count = twins.len();
    let created = create_users(&mut setup.client, &setup.table, twins, false).await;
    assert!(
        created.mismatches.is_empty() && created.accepted.len() == count,
        "seed {seed}: {} of {count} twins accepted by both sides; disagreements:\n{}",
        created.accepted.len(),
        created.mismatches.join("\n")
    );
    let twins = created.accepted;
    let policy = compile_users(&twins, &setup.table, seed);

    // The denials, by DRYRUN's reason: only those are sent for real (Redis refuses them
    // before running anything). Errors and allowed commands are left out.
    let mut denials: [Vec<(usize, usize)>; 3] = Default::default();
    dryrun_all(&mut setup.client, &setup.cases, &twins, |case, user, answer| {
        let reason = match answer {
            Answer::Command(_) => 0,
            Answer::Key(_) => 1,
            Answer::Channel(_) => 2,
            _ => return,
        };
        denials[reason].push((case, user));
    })
    .await;
    let sample: Vec<(usize, usize, usize)> = denials
        .iter()
        .enumerate()
        .flat_map(|(reason, all)| {
            let taken = all.len().min(PER_REASON);
            (0..taken).map(move |i| {
                let (case, user) = all[i * all.len() / taken];
                (reason, case, user)
            })
        })
        .collect();
    let commands: std::collections::BTreeSet<&str> = sample
        .iter()
        .filter_map(|&(_, case, _)| setup.cases[case].info.as_ref().map(|info| info.name.as_str()))
        .collect();

    // Each denial: ACL LOG RESET (so that no entry groups with an older one), the command
    // on the twin's connection, then ACL LOG 1.
    let reset = encode_command(&[b"ACL", b"LOG", b"RESET"]);
    let mut newest_and_reset = encode_command(&[b"ACL", b"LOG", b"1"]);
    newest_and_reset.extend_from_slice(&reset);
    setup.client.send(&reset).await;
    assert_eq!(setup.client.read_reply().await, b"+OK\r\n", "ACL LOG RESET");
    let mut connections: BTreeMap<usize, RawClient> = BTreeMap::new();
    let mut compared = [0usize; 3];
    let mut exec = 0;
    let mut mismatches = Vec::new();
    for &(reason, case_index, user) in &sample {
        let (case, twin) = (&setup.cases[case_index], &twins[user]);
        let connection = match connections.entry(user) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let mut connection =
                    RawClient::connect(setup.client.stream.peer_addr().unwrap()).await;
                let reply = connection.call(&[b"AUTH", twin.name.as_bytes(), b"x"]).await;
                assert_eq!(reply, b"+OK\r\n", "AUTH {}", twin.name);
                entry.insert(connection)
            }
        };
        let mut command = format!("*{}\r\n", case.args.len()).into_bytes();
        command.extend_from_slice(&case.encoded);
        connection.send(&command).await;
        let redis_reply = connection.read_reply().await;
        setup.client.send(&newest_and_reset).await;
        let log = setup.client.read_reply().await;
        assert_eq!(setup.client.read_reply().await, b"+OK\r\n", "ACL LOG RESET");

        // Ours: the reply the proxy gives and the entry it logs.
        let verdict = case
            .info
            .as_ref()
            .map(|info| (info, policy.decide(twin.name.as_bytes(), info, &case.args, &case.keys)));
        let (ours, problems) = match (verdict, newest_log_entry(&log)) {
            (Some((info, Verdict::Deny { denial, .. })), Ok(entry)) => {
                let noperm = policy.noperm_reply(&denial, twin.name.as_bytes(), &info.name);
                let reply = denied_reply(&noperm, &info.name);
                exec += usize::from(reply != noperm);
                let object = denial.object(&info.name, &case.args);
                let expected: [(&str, &[u8]); 5] = [
                    ("count", b"1"),
                    ("reason", denial.reason.as_str().as_bytes()),
                    ("context", b"toplevel"),
                    ("object", object),
                    ("username", twin.name.as_bytes()),
                ];
                let mut problems: Vec<String> = expected
                    .iter()
                    .filter(|(field, value)| entry.get(*field).map(Vec::as_slice) != Some(value))
                    .map(|(field, _)| format!("log {field} differs"))
                    .collect();
                if redis_reply != reply {
                    problems.insert(0, "reply differs".to_owned());
                }
                let fields: Vec<String> = expected
                    .iter()
                    .map(|(field, value)| format!("{field}={}", show(value)))
                    .collect();
                let ours = format!("reply {}, log {}", show(&reply), fields.join(" "));
                (ours, problems)
            }
            (_, Err(error)) => ("-".to_owned(), vec![error]),
            (Some((_, Verdict::Allow)), _) => ("allowed".to_owned(), vec!["ours allows".into()]),
            (None, _) => ("unknown command".to_owned(), vec!["ours does not know it".into()]),
        };
        compared[reason] += 1;
        if !problems.is_empty() {
            let entry = newest_log_entry(&log).map_or_else(|error| error, |e| shown_entry(&e));
            mismatches.push(Mismatch {
                user: twin.name.clone(),
                case: case_index,
                text: format!(
                    "user {} {}\n    command: {}\n    {}\n    redis: reply {}, log {entry}\n    \
                     ours:  {ours}",
                    twin.name,
                    twin.rules.join(" "),
                    shown_args(&case.args),
                    problems.join(", "),
                    show(&redis_reply),
                ),
            });
        }
    }
    let summary = format!(
        "seed {seed}: {} twin users, {} denials by DRYRUN ({} command, {} key, {} channel), {} \
         sent to Redis ({} distinct commands) on {} connections: {} compared ({} command, {} key, \
         {} channel; {exec} EXEC wrapped in EXECABORT), {} mismatches, in {:?}",
        twins.len(),
        denials.iter().map(Vec::len).sum::<usize>(),
        denials[0].len(),
        denials[1].len(),
        denials[2].len(),
        sample.len(),
        commands.len(),
        connections.len(),
        compared.iter().sum::<usize>(),
        compared[0],
        compared[1],
        compared[2],
        mismatches.len(),
        setup.started.elapsed()
    );
    eprintln!("acl_policy: {summary}");
    assert!(mismatches.is_empty(), "{summary}\n{}", shown_mismatches(&mismatches));
    assert!(compared.iter().sum::<usize>() >= MIN_DENIALS, "{summary}: too few denials compared");
    assert!(
        compared.iter().all(|&count| count >= MIN_PER_REASON),
        "{summary}: each reason must be compared {MIN_PER_REASON} times at the least"
    );
}
