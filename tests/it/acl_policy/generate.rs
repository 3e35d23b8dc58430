//! The generators: the names they draw from (commands, subcommands, categories), random
//! users' rules (passwords, keys, channels, categories, selectors), random commands.

use super::*;

pub(super) struct Names {
    /// Every top-level command.
    pub(super) commands: Vec<String>,
    /// Every subcommand (`config|get`).
    pub(super) subcommands: Vec<String>,
    /// `ACL CAT`.
    pub(super) categories: Vec<String>,
    /// The commands and subcommands the command generator draws from.
    pub(super) generated: Vec<Arc<CommandInfo>>,
    /// The [`FAVOURITES`] the table knows.
    favourites: Vec<Arc<CommandInfo>>,
}

impl Names {
    pub(super) fn new(table: &CommandTable) -> Self {
        let mut top: Vec<&Arc<CommandInfo>> = table.commands().collect();
        top.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subcommands = Vec::new();
        let mut generated = Vec::new();
        for info in &top {
            let mut subs: Vec<&Arc<CommandInfo>> = info.subcommands.values().collect();
            subs.sort_by(|a, b| a.name.cmp(&b.name));
            subcommands.extend(subs.iter().map(|sub| sub.name.clone()));
            if NOT_GENERATED.contains(&info.name.as_str()) {
                continue;
            }
            if subs.is_empty() {
                generated.push(Arc::clone(info));
            } else {
                generated.extend(subs.into_iter().cloned());
            }
        }
        let favourites = FAVOURITES
            .iter()
            .filter_map(|name| {
                let args: Vec<Bytes> = name.split('|').map(Bytes::from).collect();
                table.resolve(&args).cloned()
            })
            .collect();
        Self {
            commands: top.iter().map(|info| info.name.clone()).collect(),
            subcommands,
            categories: table.categories.clone(),
            generated,
            favourites,
        }
    }
}

/// Upper case, sometimes: rule words and command names are case-insensitive.
fn cased(rng: &mut Rng, word: &str) -> String {
    if rng.chance(10) {
        word.to_uppercase()
    } else {
        word.to_owned()
    }
}

/// The rules of one user (each one argument of `ACL SETUSER`).
pub(super) fn user_rules(rng: &mut Rng, names: &Names) -> Vec<String> {
    let count = 1 + rng.below(9);
    let mut rules = Vec::with_capacity(count);
    // Most users may run something: start many of them from a category or everything.
    if rng.chance(60) {
        rules.push(if rng.chance(40) {
            "+@all".to_owned()
        } else {
            category_rule(rng, names, "+")
        });
    }
    for _ in 0..count {
        rules.push(user_rule(rng, names));
    }
    rules
}

/// One rule of `ACL SETUSER`.
fn user_rule(rng: &mut Rng, names: &Names) -> String {
    match rng.below(100) {
        0..=3 => cased_pick(rng, &["on", "off"]),
        4..=8 => password_rule(rng),
        9 => cased(rng, "reset"),
        10 => cased(rng, "clearselectors"),
        11..=21 => selector(rng, names),
        22 | 23 => (*rng.pick(INVALID)).to_owned(),
        _ => selector_rule(rng, names),
    }
}

fn rng_pick_str<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len())]
}

/// One of `items`, sometimes in upper case.
fn cased_pick(rng: &mut Rng, items: &[&str]) -> String {
    let word = rng_pick_str(rng, items);
    cased(rng, word)
}

fn password_rule(rng: &mut Rng) -> String {
    // Removing a password the user does not have is an error: rarer than adding one.
    match rng.below(8) {
        0 => cased(rng, "nopass"),
        1 => cased(rng, "resetpass"),
        2 | 3 => format!(">{}", rng.pick(PASSWORDS)),
        4 | 5 => format!("#{}", rng.pick(HASHES)),
        6 => format!("<{}", rng.pick(PASSWORDS)),
        _ => format!("!{}", rng.pick(HASHES)),
    }
}

/// `( ... )`: selector rules only, now and then one that is not allowed in a selector.
fn selector(rng: &mut Rng, names: &Names) -> String {
    let count = rng.below(5);
    let mut tokens: Vec<String> = (0..count).map(|_| selector_rule(rng, names)).collect();
    if rng.chance(5) {
        let bad = rng_pick_str(rng, &["on", "reset", ">pw1", "nopass", "clearselectors"]);
        tokens.push(bad.to_owned());
    }
    format!("({})", tokens.join(" "))
}

fn category_rule(rng: &mut Rng, names: &Names, sign: &str) -> String {
    let category = if rng.chance(50) {
        (*rng.pick(FAVOURITE_CATEGORIES)).to_owned()
    } else {
        rng.pick(&names.categories).clone()
    };
    cased(rng, &format!("{sign}@{category}"))
}

/// A rule valid inside a selector as well as at the root.
fn selector_rule(rng: &mut Rng, names: &Names) -> String {
    match rng.below(100) {
        0..=21 => {
            let pattern = rng.pick(KEY_PATTERNS);
            let prefix = match rng.below(10) {
                0..=4 => "~",
                5 => "%R~",
                6 => "%W~",
                7 => "%RW~",
                8 => "%WR~",
                _ => rng_pick_str(rng, &["%r~", "%w~", "%rw~"]),
            };
            format!("{prefix}{pattern}")
        }
        22..=27 => cased_pick(rng, &["allkeys", "~*", "resetkeys"]),
        28..=37 => format!("&{}", rng.pick(CHANNEL_PATTERNS)),
        38..=41 => cased_pick(rng, &["allchannels", "&*", "resetchannels"]),
        42..=51 => {
            let name = if rng.chance(70) {
                rng.pick(&names.favourites).name.clone()
            } else {
                rng.pick(&names.commands).clone()
            };
            cased(rng, &format!("+{name}"))
        }
        52..=56 => {
            let name = if rng.chance(60) {
                rng.pick(&names.favourites).name.clone()
            } else {
                rng.pick(&names.commands).clone()
            };
            cased(rng, &format!("-{name}"))
        }
        57..=62 => {
            let name = if rng.chance(60) {
                (*rng.pick(FAVOURITE_SUBCOMMANDS)).to_owned()
            } else {
                rng.pick(&names.subcommands).clone()
            };
            let sign = if rng.chance(70) { "+" } else { "-" };
            cased(rng, &format!("{sign}{name}"))
        }
        63..=70 => {
            let command = *rng.pick(FIRST_ARG_COMMANDS);
            format!("+{}|{}", cased(rng, command), first_arg(rng, command))
        }
        71..=82 => category_rule(rng, names, "+"),
        83..=88 => category_rule(rng, names, "-"),
        _ => cased_pick(rng, &["allcommands", "nocommands", "+@all", "-@all"]),
    }
}

/// A first argument for `command` (from the pools its arguments come from).
fn first_arg(rng: &mut Rng, command: &str) -> String {
    // Mostly from short lists, so that rules and commands name the same first argument.
    let common = rng.chance(80);
    let arg = match command {
        "select" if common => *rng.pick(&["0", "1"]),
        "select" => *rng.pick(NUMBERS),
        "publish" | "subscribe" if common => *rng.pick(&["ch1", "a"]),
        "publish" | "subscribe" => *rng.pick(CHANNELS),
        "psubscribe" if common => *rng.pick(&["ch*", "a"]),
        "psubscribe" => *rng.pick(CHANNEL_PATTERNS),
        _ if common => *rng.pick(&["a", "k:1", "x"]),
        _ => *rng.pick(KEYS),
    };
    // First arguments compare case-insensitively.
    cased(rng, arg)
}

/// One generated command: its arguments (the name first) and what the proxy knows of it.
pub(super) struct Case {
    pub(super) args: Vec<Bytes>,
    /// `None` when the table does not resolve it (then Redis must refuse it too).
    pub(super) info: Option<Arc<CommandInfo>>,
    pub(super) keys: Keys,
    /// The arguments as RESP bulk strings, to follow `ACL DRYRUN <user>`.
    pub(super) encoded: Vec<u8>,
}

pub(super) fn random_command(rng: &mut Rng, names: &Names, table: &CommandTable) -> Case {
    let args: Vec<String> = match rng.below(100) {
        0..=29 => {
            let info = Arc::clone(rng.pick(&names.favourites));
            command_args(rng, &info, None)
        }
        30..=44 => pubsub_args(rng),
        45..=57 => {
            let command = *rng.pick(FIRST_ARG_COMMANDS);
            let args: Vec<Bytes> = vec![Bytes::from(command)];
            let first = first_arg(rng, command);
            match table.resolve(&args) {
                Some(info) => command_args(rng, info, Some(first)),
                None => vec![command.to_owned(), first],
            }
        }
        _ => {
            let info = Arc::clone(rng.pick(&names.generated));
            command_args(rng, &info, None)
        }
    };
    let args: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
    let info = table.resolve(&args).cloned();
    let mut keys = Keys::new();
    if let Some(info) = &info {
        extract_keys(info, &args, &mut keys);
    }
    let mut encoded = Vec::new();
    for arg in &args {
        encoded.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        encoded.extend_from_slice(arg);
        encoded.extend_from_slice(b"\r\n");
    }
    Case { args, info, keys, encoded }
}

/// Arguments satisfying the arity of `info`, with `first` as argument 1 when given; a
/// `numkeys` argument is often right for the arguments that follow.
fn command_args(rng: &mut Rng, info: &CommandInfo, first: Option<String>) -> Vec<String> {
    let mut args: Vec<String> = info.name.split('|').map(|part| cased(rng, part)).collect();
    args.extend(first);
    let min = info.arity.unsigned_abs() as usize;
    let argc = if info.arity > 0 { min } else { min + rng.below(5) }.max(args.len());
    while args.len() < argc {
        let arg = match rng.below(100) {
            0..=59 => rng.pick(KEYS),
            60..=79 => rng.pick(NUMBERS),
            80..=89 => rng.pick(WORDS),
            _ => rng.pick(CHANNELS),
        };
        args.push((*arg).to_owned());
    }
    for spec in &info.key_specs {
        let (BeginSearch::Index(begin), FindKeys::Keynum { keynumidx, firstkey, .. }) =
            (&spec.begin_search, &spec.find_keys)
        else {
            continue;
        };
        let (count_at, first_key) = ((begin + keynumidx) as usize, (begin + firstkey) as usize);
        if count_at < args.len() && rng.chance(75) {
            let room = args.len().saturating_sub(first_key);
            let count =
                if room == 0 || rng.chance(10) { rng.below(3) } else { 1 + rng.below(room) };
            args[count_at] = count.to_string();
        }
    }
    args
}

/// PUBLISH / SPUBLISH / SUBSCRIBE / SSUBSCRIBE / PSUBSCRIBE (and the unsubscribes, which
/// have no channel permissions to check).
fn pubsub_args(rng: &mut Rng) -> Vec<String> {
    let command = match rng.below(20) {
        0..=5 => "publish",
        6..=7 => "spublish",
        8..=11 => "subscribe",
        12..=13 => "ssubscribe",
        14..=17 => "psubscribe",
        _ => rng_pick_str(rng, &["unsubscribe", "punsubscribe", "sunsubscribe"]),
    };
    let mut args = vec![cased(rng, command)];
    if command.ends_with("publish") {
        args.push((*rng.pick(CHANNELS)).to_owned());
        args.push("message".to_owned());
        return args;
    }
    for _ in 0..1 + rng.below(3) {
        let pool =
            if command == "psubscribe" && rng.chance(70) { CHANNEL_PATTERNS } else { CHANNELS };
        args.push((*rng.pick(pool)).to_owned());
    }
    args
}
