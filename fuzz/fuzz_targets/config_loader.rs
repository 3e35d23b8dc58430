//! Fuzz target: the configuration loader (`Config::from_toml_str`: TOML, then the schema,
//! then validation). Its error is the one line an operator sees: it must be one line, name a
//! line of the file that exists, and never show the value of a secret (a `password`, a
//! `secret`, an `api_key`).
//!
//! Inputs whose strings hold a `/` are skipped: validation reads the files the configuration
//! names (users file, key files, certificates), and the fuzzer must not read `/dev/zero`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_audit_proxy::config::{Config, ConfigError};

/// Every string value in `value`, with the key that holds it.
fn strings<'a>(key: &'a str, value: &'a toml::Value, out: &mut Vec<(&'a str, &'a str)>) {
    match value {
        toml::Value::String(text) => out.push((key, text)),
        toml::Value::Array(items) => items.iter().for_each(|item| strings(key, item, out)),
        // Whatever is under a secret's key is the secret's.
        toml::Value::Table(table) => table
            .iter()
            .for_each(|(k, v)| strings(if is_secret_key(key) { key } else { k }, v, out)),
        _ => {}
    }
}

fn is_secret_key(key: &str) -> bool {
    ["password", "secret", "api_key"].iter().any(|word| key.contains(word))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut values = Vec::new();
    let table = toml::from_str::<toml::Table>(text).ok();
    if let Some(table) = &table {
        table.iter().for_each(|(k, v)| strings(k, v, &mut values));
        if values.iter().any(|(_, v)| v.contains('/')) {
            return;
        }
    } else if text.contains('/') {
        return;
    }
    let Err(error) = Config::from_toml_str(text, "p.toml") else { return };
    let shown = error.to_string();
    assert!(!shown.contains('\n'), "more than one line: {shown:?}");
    if let ConfigError::Parse { line, .. } = &error {
        assert!(*line >= 1 && *line <= text.lines().count().max(1) + 1, "{shown}");
    }
    // A secret long enough, and found nowhere else in the file, cannot be in the message by
    // coincidence.
    for (key, value) in &values {
        if is_secret_key(key) && value.len() >= 8 && text.matches(*value).count() == 1 {
            let message = shown.strip_prefix("p.toml").unwrap_or(&shown);
            // What follows "is not one of" is the loader's own list of choices, which a
            // secret may happen to equal (`multi_thread` under a `...secret...` table).
            let message = message.split(" is not one of ").next().unwrap_or(message);
            if message.contains(*value) {
                // The loader's own words may equal a secret too (`unknown ` of "unknown
                // field"): a message shows the secret only if, with another value in the
                // secret's place, it no longer shows it.
                let other = replacement(value);
                let Err(again) = Config::from_toml_str(&text.replacen(*value, &other, 1), "p.toml")
                else {
                    panic!("a secret in {shown:?}, and the file loads without it");
                };
                assert!(again.to_string().contains(*value), "a secret in {shown:?}");
            }
        }
    }
});

/// A value as long as `value` (in characters, so that the file's lines and columns stay) made
/// of one ASCII letter it does not hold.
fn replacement(value: &str) -> String {
    let letter = ['Q', 'X', 'J', 'Z'].into_iter().find(|c| !value.contains(*c)).unwrap_or('K');
    std::iter::repeat_n(letter, value.chars().count()).collect()
}
