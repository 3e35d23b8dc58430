//! Redis's glob matcher (`stringmatchlen`), byte for byte: ACL key and channel patterns
//! must match exactly what Redis matches, quirks included.
//!
//! The quirks kept: an empty string matches no pattern, not even `*`; an unclosed `[` class
//! ends at the end of the pattern; ranges compare C's signed `char`; a backslash escapes
//! the next byte (inside a class too); star nesting deeper than 1000 does not match.

/// Deepest star recursion before giving up, as Redis.
const MAX_NESTING: u32 = 1000;

/// True when `string` matches the glob `pattern` (case-sensitive, as ACL uses it).
pub(crate) fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut give_up = false;
    match_from(pattern, string, &mut give_up, 0)
}

/// `give_up` is set when a star found no match for any suffix: a longer prefix for an outer
/// star cannot match either, which bounds the work on hostile patterns.
fn match_from(mut pattern: &[u8], mut string: &[u8], give_up: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while !pattern.is_empty() && !string.is_empty() {
        match pattern[0] {
            b'*' => {
                while pattern.len() > 1 && pattern[1] == b'*' {
                    pattern = &pattern[1..];
                }
                if pattern.len() == 1 {
                    return true;
                }
                while !string.is_empty() {
                    if match_from(&pattern[1..], string, give_up, nesting + 1) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    string = &string[1..];
                }
                *give_up = true;
                return false;
            }
            b'?' => pattern = &pattern[1..],
            b'[' => {
                let (matched, rest) = match_class(&pattern[1..], string[0]);
                if !matched {
                    return false;
                }
                pattern = rest;
            }
            b'\\' if pattern.len() >= 2 => {
                if pattern[1] != string[0] {
                    return false;
                }
                pattern = &pattern[2..];
            }
            literal => {
                if literal != string[0] {
                    return false;
                }
                pattern = &pattern[1..];
            }
        }
        string = &string[1..];
        if string.is_empty() {
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
            break;
        }
    }
    pattern.is_empty() && string.is_empty()
}

/// Matches `byte` against the class whose body starts at `class` (just past `[`). Returns
/// whether it matched and the pattern after the class (empty when the class is unclosed).
fn match_class(mut class: &[u8], byte: u8) -> (bool, &[u8]) {
    let negate = class.first() == Some(&b'^');
    if negate {
        class = &class[1..];
    }
    let mut matched = false;
    loop {
        match class {
            [b'\\', escaped, rest @ ..] => {
                matched |= *escaped == byte;
                class = rest;
            }
            [b']', rest @ ..] => return (matched != negate, rest),
            [] => return (matched != negate, class),
            [start, b'-', end, rest @ ..] => {
                // C compares `char`, signed on the platforms Redis runs on.
                let (mut low, mut high) = (*start as i8, *end as i8);
                if low > high {
                    std::mem::swap(&mut low, &mut high);
                }
                matched |= (low..=high).contains(&(byte as i8));
                class = rest;
            }
            [literal, rest @ ..] => {
                matched |= *literal == byte;
                class = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_questions_and_literals() {
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"app:*", b"app:1"));
        assert!(!matches(b"app:*", b"ap"));
        assert!(matches(b"a?c", b"abc"));
        assert!(!matches(b"a?c", b"ac"));
        assert!(matches(b"a**b", b"axxb"));
        assert!(matches(b"a*", b"a"), "trailing stars match nothing");
        assert!(!matches(b"*", b""), "an empty string matches no pattern, as in Redis");
        assert!(!matches(b"", b"a"));
    }

    #[test]
    fn classes_ranges_and_escapes() {
        assert!(matches(b"[abc]x", b"bx"));
        assert!(!matches(b"[^abc]x", b"bx"));
        assert!(!matches(b"[abc]", b"d"));
        assert!(matches(b"[^abc]", b"d"));
        assert!(matches(b"[a-c]", b"b"));
        assert!(matches(b"[c-a]", b"b"), "reversed range");
        assert!(matches(b"\\*", b"*"));
        assert!(!matches(b"\\*", b"a"));
        assert!(matches(b"[\\]]", b"]"));
        assert!(matches(b"[ab", b"a"), "an unclosed class ends at the pattern's end");
        assert!(!matches(b"[ab", b"ab"));
        assert!(matches(b"a\\", b"a\\"), "a trailing backslash is literal");
    }

    #[test]
    fn hostile_patterns_end_quickly() {
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        assert!(!matches(pattern, &[b'a'; 200]));
        let deep = [b'*', b'a'].repeat(1100);
        assert!(!matches(&deep, &[b'a'; 1200]), "nesting over 1000 does not match");
        // Each star recurses once here: 1000 stars nest 1000 deep and match, 1001 do not.
        let stars = |n: usize| [b'*', b'a'].repeat(n);
        assert!(matches(&stars(1000), &[b'a'; 1000]));
        assert!(!matches(&stars(1001), &[b'a'; 1001]));
        // Stars in a row are one: `**a` 600 times nests 600 deep, not 1200.
        assert!(matches(&[b'*', b'*', b'a'].repeat(600), &[b'a'; 600]));
    }
}
