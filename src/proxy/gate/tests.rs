//! The gate's decisions, one rule at a time.

use super::*;
use crate::command::{extract_keys, CommandTable};

const USERS: &[u8] = b"user default off\n\
    user app on >pw ~app:* -@all +@read +@write +@transaction +@connection +@scripting +client|reply\n\
    user full on >pw ~* &* +@all\n\
    user sorter on >pw ~app:* -@all +sort +sort_ro\n";

fn policy(text: &[u8], mode: AclMode) -> Policy {
    Policy::compile(text, &CommandTable::embedded(), mode, &[]).unwrap()
}

fn view(user: &str) -> View<'_> {
    View {
        user: user.as_bytes(),
        authenticated: user != "default",
        in_multi: false,
        user_unsettled: false,
        multi_unsettled: false,
        resp2_subscribed: false,
        monitor: false,
        pubsub_unsettled: false,
        idle: true,
        auth_mode: AuthMode::Proxy,
        upstream_is_client_user: false,
    }
}

fn decide_line(view: &View<'_>, policy: Option<&Policy>, line: &str) -> Decision {
    let table = CommandTable::embedded();
    let args: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
    let info = table.resolve(&args).map(|info| &**info);
    let mut keys = Keys::new();
    if let Some(info) = info {
        extract_keys(info, &args, &mut keys);
    }
    let effect = Effect::of(&args);
    decide(view, &Command { info, args: &args, keys: &keys, effect: &effect }, policy)
}

#[test]
fn a_login_to_redis_waits_until_nothing_is_in_flight() {
    let mut busy = view("default");
    busy.auth_mode = AuthMode::Passthrough;
    busy.idle = false;
    for line in ["AUTH pw", "AUTH alice pw", "HELLO 3 AUTH alice pw"] {
        assert_eq!(decide_line(&busy, None, line), Decision::Wait, "{line}");
    }
    assert_ne!(decide_line(&busy, None, "HELLO 3"), Decision::Wait);
    busy.idle = true;
    assert_ne!(decide_line(&busy, None, "AUTH pw"), Decision::Wait);
}

fn reply_of(decision: &Decision) -> String {
    match decision {
        Decision::Refuse(refusal) => String::from_utf8_lossy(&refusal.reply).into_owned(),
        other => format!("{other:?}"),
    }
}

#[test]
fn redis_order_arity_then_noauth_then_no_multi_then_the_acl() {
    let policy = policy(USERS, AclMode::Enforce);
    let anonymous = view("default");
    // The review's C1: a wrong-arity MULTI changes nothing, and SAVE meets NOAUTH.
    for (line, reply) in [
        ("MULTI x", "-ERR wrong number of arguments for 'multi' command\r\n"),
        ("SAVE", "-NOAUTH Authentication required.\r\n"),
        ("SYNC", "-NOAUTH Authentication required.\r\n"),
        ("NOSUCHCOMMAND a", "-NOAUTH Authentication required.\r\n"),
    ] {
        assert_eq!(reply_of(&decide_line(&anonymous, Some(&policy), line)), reply, "{line}");
    }
    assert_eq!(
        decide_line(&anonymous, Some(&policy), "AUTH app pw"),
        Decision::Serve(Service::Authenticate)
    );
    let mut app = view("app");
    app.in_multi = true;
    assert_eq!(
        reply_of(&decide_line(&app, Some(&policy), "SAVE")),
        "-ERR Command not allowed inside a transaction\r\n",
        "NO_MULTI comes before the ACL, as in Redis"
    );
    let Decision::Refuse(refusal) = decide_line(&app, Some(&policy), "GET other") else {
        panic!("denied")
    };
    assert_eq!(refusal.abort, Abort::Queued);
    assert_eq!(refusal.denial, Some(Denial { reason: DenyReason::Key, arg_index: 1 }));
}

#[test]
fn unsettled_state_waits_only_where_it_matters() {
    let policy = policy(USERS, AclMode::Enforce);
    let mut app = view("app");
    app.multi_unsettled = true;
    assert_eq!(
        decide_line(&app, Some(&policy), "SET app:1 v"),
        Decision::Forward { observed: None },
        "an allowed command goes whether or not the MULTI took"
    );
    assert_eq!(decide_line(&app, Some(&policy), "GET other"), Decision::Wait);
    assert_eq!(decide_line(&app, Some(&policy), "SAVE"), Decision::Wait);
    assert_eq!(decide_line(&app, Some(&policy), "CLIENT REPLY OFF"), Decision::Wait);
    let mut after_auth = view("app");
    after_auth.user_unsettled = true;
    assert_eq!(decide_line(&after_auth, Some(&policy), "GET app:1"), Decision::Wait);
    assert_eq!(
        decide_line(&after_auth, None, "GET app:1"),
        Decision::Forward { observed: None },
        "without a users file Redis decides everything"
    );
}

#[test]
fn unknown_commands_need_every_right() {
    let policy = policy(USERS, AclMode::Enforce);
    assert_eq!(
        reply_of(&decide_line(&view("app"), Some(&policy), "XFLUSH a")),
        "-ERR unknown command 'XFLUSH', with args beginning with: 'a' \r\n"
    );
    assert_eq!(
        reply_of(&decide_line(&view("app"), Some(&policy), "CONFIG NOSUCH x")),
        "-ERR unknown subcommand 'NOSUCH'. Try CONFIG HELP.\r\n"
    );
    assert_eq!(
        decide_line(&view("full"), Some(&policy), "XFLUSH"),
        Decision::Forward { observed: None }
    );
    let observe = self::policy(USERS, AclMode::Observe);
    assert_eq!(
        decide_line(&view("app"), Some(&observe), "XFLUSH"),
        Decision::Forward { observed: None }
    );
}

#[test]
fn server_side_work_is_checked_when_redis_would_check_the_service_user() {
    let policy = policy(USERS, AclMode::Enforce);
    let script = "EVAL return 0";
    assert!(reply_of(&decide_line(&view("app"), Some(&policy), script)).starts_with("-NOPERM"));
    assert_eq!(
        decide_line(&view("full"), Some(&policy), script),
        Decision::Forward { observed: None }
    );
    let mut mirrored = view("app");
    mirrored.upstream_is_client_user = true;
    assert_eq!(
        decide_line(&mirrored, Some(&policy), script),
        Decision::Forward { observed: None },
        "Redis checks the script as the client's mirrored user"
    );
    assert_eq!(
        reply_of(&decide_line(&view("sorter"), Some(&policy), "SORT app:l BY nosort GET *")),
        "-ERR GET option of SORT denied due to insufficient ACL permissions.\r\n"
    );
    assert_eq!(
        reply_of(&decide_line(&view("sorter"), Some(&policy), "SORT app:l BY w_*")),
        "-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"
    );
    assert_eq!(
        decide_line(&view("sorter"), Some(&policy), "SORT app:l LIMIT x 1 GET *"),
        Decision::Forward { observed: None },
        "Redis answers the LIMIT error first"
    );
}

#[test]
fn exec_refusals_are_execabort_and_unpairable_commands_are_refused_in_multi() {
    let policy = policy(b"user default on nopass ~* -@all +multi +get", AclMode::Enforce);
    let mut anyone = view("default");
    anyone.authenticated = true;
    anyone.in_multi = true;
    let Decision::Refuse(refusal) = decide_line(&anyone, Some(&policy), "EXEC") else {
        panic!("exec is denied")
    };
    assert_eq!(
        String::from_utf8_lossy(&refusal.reply),
        "-EXECABORT Transaction discarded because of: NOPERM this user has no permissions to run the 'exec' command\r\n"
    );
    assert_eq!(refusal.abort, Abort::Exec);
    let full = self::policy(b"user default on nopass ~* &* +@all", AclMode::Enforce);
    for line in ["CLIENT REPLY OFF", "SUBSCRIBE a b", "ACL WHOAMI", "ACL LOG"] {
        assert!(
            reply_of(&decide_line(&anyone, Some(&full), line)).contains("inside MULTI"),
            "{line}"
        );
    }
    assert_eq!(
        decide_line(&anyone, Some(&full), "SUBSCRIBE a"),
        Decision::Forward { observed: None }
    );
    anyone.in_multi = false;
    assert_eq!(decide_line(&anyone, Some(&full), "ACL LOG"), Decision::Serve(Service::AclLog));
}

#[test]
fn an_unauthenticated_client_meets_noauth_unless_redis_decides_in_observe_mode() {
    let (enforce, observe) = (policy(USERS, AclMode::Enforce), policy(USERS, AclMode::Observe));
    let noauth = "-NOAUTH Authentication required.\r\n";
    // auth.mode = "proxy": the proxy is the authority, whatever the mode.
    let anonymous = view("default");
    for policy in [&enforce, &observe] {
        assert_eq!(reply_of(&decide_line(&anonymous, Some(policy), "GET k")), noauth);
    }
    // Passthrough: enforce refuses; observe lets Redis answer (and records what it would do).
    let mut passthrough = view("default");
    passthrough.auth_mode = AuthMode::Passthrough;
    assert_eq!(reply_of(&decide_line(&passthrough, Some(&enforce), "GET k")), noauth);
    assert_eq!(
        decide_line(&passthrough, Some(&observe), "GET k"),
        Decision::Forward { observed: None }
    );
}

#[test]
fn with_proxy_auth_a_login_inside_multi_is_refused_and_hello_without_one_is_queued() {
    let policy = policy(USERS, AclMode::Enforce);
    let mut app = view("app");
    app.in_multi = true;
    for line in ["AUTH app pw", "HELLO 3 AUTH app pw", "hello 3 setname x auth app pw"] {
        assert!(
            reply_of(&decide_line(&app, Some(&policy), line))
                .contains("inside MULTI are not supported"),
            "{line}"
        );
    }
    assert_eq!(decide_line(&app, Some(&policy), "HELLO 3"), Decision::Forward { observed: None });
    assert!(!reply_of(&decide_line(&app, Some(&policy), "RESET")).contains("not supported"));
}

#[test]
fn monitor_and_silencing_commands_are_refused_only_where_replies_could_not_be_paired() {
    let full = policy(b"user default on nopass ~* &* +@all", AclMode::Enforce);
    let mut client = view("default");
    client.authenticated = true;
    assert_eq!(decide_line(&client, Some(&full), "MONITOR"), Decision::Forward { observed: None });
    assert_eq!(
        decide_line(&client, Some(&full), "CLIENT REPLY OFF"),
        Decision::Forward { observed: None }
    );
    client.monitor = true;
    // Redis ignores a second MONITOR without a reply; the proxy answers nothing either.
    assert_eq!(decide_line(&client, Some(&full), "MONITOR"), Decision::Serve(Service::NoReply));
    assert!(reply_of(&decide_line(&client, Some(&full), "CLIENT REPLY OFF"))
        .contains("while in MONITOR is not supported"));
    assert_eq!(
        decide_line(&client, Some(&full), "SUBSCRIBE a b"),
        Decision::Forward { observed: None },
        "a subscription is answered, monitoring or not"
    );
    // A RESP2 subscriber's MONITOR is Redis's to refuse.
    client.resp2_subscribed = true;
    assert_eq!(decide_line(&client, Some(&full), "MONITOR"), Decision::Forward { observed: None });
}

#[test]
fn unknown_command_errors_show_128_characters_of_arguments_as_redis_does() {
    let policy = policy(USERS, AclMode::Enforce);
    let line = format!("NOSUCH aaaaaaaaaa {}", "b".repeat(300));
    let reply = reply_of(&decide_line(&view("app"), Some(&policy), &line));
    // 'aaaaaaaaaa' and its space take 13 of the 128: the next argument gets the 115 left.
    let expected = format!(
        "-ERR unknown command 'NOSUCH', with args beginning with: 'aaaaaaaaaa' '{}' \r\n",
        "b".repeat(115)
    );
    assert_eq!(reply, expected);
}

#[test]
fn sort_ro_patterns_are_checked_as_sorts_are() {
    let policy = policy(USERS, AclMode::Enforce);
    assert_eq!(
        reply_of(&decide_line(&view("sorter"), Some(&policy), "SORT_RO app:l BY w_*")),
        "-ERR BY option of SORT denied due to insufficient ACL permissions.\r\n"
    );
    // An option without its values is Redis's syntax error to answer, as is a STORE in
    // SORT_RO; options without patterns pass.
    for line in [
        "SORT app:l BY",
        "SORT app:l GET",
        "SORT app:l LIMIT 0",
        "SORT app:l ALPHA DESC",
        "SORT app:l BY nosort LIMIT 0 1",
        "SORT_RO app:l STORE app:dst GET *",
    ] {
        assert_eq!(
            decide_line(&view("sorter"), Some(&policy), line),
            Decision::Forward { observed: None },
            "{line}"
        );
    }
    // Each option's values are skipped exactly: the pattern after them is still found, and the
    // denial names it.
    for (line, option, pattern_at) in [
        ("SORT app:l ALPHA BY w_*", "BY", 4),
        ("SORT app:l asc GET #", "GET", 4),
        ("SORT app:l DESC ALPHA GET *", "GET", 5),
        ("SORT app:l LIMIT 0 1 BY w_*", "BY", 6),
        ("SORT app:l ALPHA LIMIT 0 1 BY w_*", "BY", 7),
        ("SORT app:l STORE app:d GET *", "GET", 5),
        ("SORT app:l BY nosort BY w_*", "BY", 5),
    ] {
        let Decision::Refuse(refusal) = decide_line(&view("sorter"), Some(&policy), line) else {
            panic!("{line} is refused")
        };
        assert_eq!(
            String::from_utf8_lossy(&refusal.reply),
            format!("-ERR {option} option of SORT denied due to insufficient ACL permissions.\r\n"),
            "{line}"
        );
        assert_eq!(
            refusal.denial,
            Some(Denial { reason: DenyReason::Key, arg_index: pattern_at }),
            "{line}"
        );
    }
}
