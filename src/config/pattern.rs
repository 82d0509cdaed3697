//! A namespace's `channel_regex`: Go regexp (RE2) syntax, compiled once when the config is
//! read and evaluated with the `regex` crate. Where the two syntaxes mean different things the
//! pattern is rewritten first, so a pattern matches what it matches in Centrifugo:
//!
//! * `\d`, `\w`, `\s` (and their negations) and `\b`/`\B` are ASCII-only in Go, Unicode-aware
//!   in the crate: they become explicit ASCII classes (Go's `\s` is `[\t\n\f\r ]`, without
//!   `\v`);
//! * `\Q...\E` quotes literal text in Go (the crate has no such syntax);
//! * `\<` and `\>` are the literal characters in Go, word boundaries in the crate;
//! * inside a bracket class Go takes `[` (other than `[:name:]`), `&&`, `~~` and `--`
//!   literally, where the crate nests classes or applies set operations;
//! * octal escapes (`\012`) are Go syntax; a lone `\1`..`\7` is a backreference, refused.
//!
//! The match is a search (unanchored), as Go's `MatchString`: anchor with `^...$`.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A compiled `channel_regex` (`None` when the option is empty): the configured (Go) text,
/// which the config serializes back to, and the compiled translation.
#[derive(Debug, Clone, Default)]
pub struct ChannelRegex(Option<(String, regex::Regex)>);

impl ChannelRegex {
    /// Compiles a Go-syntax pattern; "" means no pattern.
    pub fn new(pattern: &str) -> Result<ChannelRegex, String> {
        if pattern.is_empty() {
            return Ok(ChannelRegex(None));
        }
        let translated = translate(pattern)?;
        let re = regex::RegexBuilder::new(&translated)
            .octal(true)
            .build()
            .map_err(|e| format!("invalid channel regex {pattern:?}: {e}"))?;
        Ok(ChannelRegex(Some((pattern.to_string(), re))))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The pattern as configured (Go syntax).
    pub fn as_str(&self) -> &str {
        self.0.as_ref().map(|(p, _)| p.as_str()).unwrap_or("")
    }

    /// The compiled translation; `None` when no pattern is set.
    pub fn regex(&self) -> Option<&regex::Regex> {
        self.0.as_ref().map(|(_, re)| re)
    }

    /// Whether `text` contains a match; `None` when no pattern is set.
    pub fn is_match(&self, text: &str) -> Option<bool> {
        self.0.as_ref().map(|(_, re)| re.is_match(text))
    }
}

impl PartialEq for ChannelRegex {
    fn eq(&self, other: &ChannelRegex) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for ChannelRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChannelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ChannelRegex, D::Error> {
        let pattern = String::deserialize(d)?;
        ChannelRegex::new(&pattern).map_err(de::Error::custom)
    }
}

/// Rewrites a Go pattern into the crate's syntax (see the module docs).
fn translate(p: &str) -> Result<String, String> {
    let mut out = String::with_capacity(p.len() + 16);
    let mut it = p.chars().peekable();
    // Inside a bracket class; `class_first`: at its first item, where `]` is a literal.
    let mut in_class = false;
    let mut class_first = false;
    while let Some(c) = it.next() {
        let first = std::mem::replace(&mut class_first, false);
        match c {
            '\\' => {
                let Some(n) = it.next() else {
                    return Err(format!("invalid channel regex {p:?}: trailing backslash"));
                };
                match n {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    's' => out.push_str(r"[\t\n\x0C\r ]"),
                    'S' => out.push_str(r"[^\t\n\x0C\r ]"),
                    'b' | 'B' if !in_class => {
                        out.push_str("(?-u:\\");
                        out.push(n);
                        out.push(')');
                    }
                    '<' | '>' => out.push(n),
                    'Q' if !in_class => {
                        let mut lit = String::new();
                        while let Some(q) = it.next() {
                            if q == '\\' && it.peek() == Some(&'E') {
                                it.next();
                                break;
                            }
                            lit.push(q);
                        }
                        out.push_str(&regex::escape(&lit));
                    }
                    '1'..='7' if !it.peek().is_some_and(char::is_ascii_digit) => {
                        return Err(format!("invalid channel regex {p:?}: backreferences are not supported"));
                    }
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_first = true;
                out.push('[');
                if it.peek() == Some(&'^') {
                    it.next();
                    out.push('^');
                }
            }
            '[' => {
                if it.peek() == Some(&':') {
                    // A POSIX class `[:alpha:]` (ASCII in both syntaxes): copied up to `:]`.
                    let rest: String = it.clone().collect();
                    if let Some(end) = rest.find(":]") {
                        out.push('[');
                        for _ in 0..end + 2 {
                            out.push(it.next().expect("counted above"));
                        }
                        continue;
                    }
                }
                out.push_str("\\[");
            }
            ']' if in_class && !first => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            '-' if in_class && out.ends_with('-') && !out.ends_with("\\-") => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        ChannelRegex::new(pattern).unwrap().is_match(text).unwrap()
    }

    #[test]
    fn empty_is_no_pattern() {
        let r = ChannelRegex::new("").unwrap();
        assert!(r.is_empty());
        assert_eq!(r.is_match("x"), None);
        assert_eq!(r.as_str(), "");
    }

    #[test]
    fn search_not_full_match() {
        assert!(m("[0-9]", "abc1"));
        assert!(!m("^[0-9]+$", "abc1"));
        assert!(m("^[a-z]+$", "abc"));
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        assert!(m(r"^\w+$", "abc_1"));
        assert!(!m(r"^\w+$", "café"));
        assert!(!m(r"^\d+$", "١٢٣"));
        assert!(m(r"^\D+$", "١٢٣"));
        assert!(m(r"^\W$", "é"));
        assert!(m(r"^\s$", " "));
        assert!(!m(r"^\s$", "\u{0B}"), "Go's \\s has no vertical tab");
        assert!(!m(r"^\s$", "\u{A0}"));
        assert!(m(r"^[\w-]+$", "a-b"));
        assert!(!m(r"^[\w-]+$", "ü"));
        assert!(m(r"^[^\d]+$", "abc"));
        assert!(!m(r"^[^\d]+$", "a1"));
        // Non-ASCII letters are non-word characters for Go's `\b`.
        assert!(!m(r"é\b", "éé"));
        assert!(m(r"é\b", "éa"));
        assert!(m(r"\Bé", "éé"));
    }

    #[test]
    fn unicode_properties_and_dot() {
        assert!(m(r"^\p{L}+$", "日本語"));
        assert!(m(r"^.{3}$", "日本語"));
        assert!(m(r"^(?i)abc$", "ABC"));
    }

    #[test]
    fn go_only_syntax() {
        assert!(m(r"^\Qa.b\E$", "a.b"));
        assert!(!m(r"^\Qa.b\E$", "axb"));
        assert!(m(r"^\Q[x]", "[x]"));
        assert!(m(r"^a\<b\>$", "a<b>"));
        assert!(m(r"^\101$", "A"), "octal escape");
        assert!(m(r"^[a[]+$", "a[a"), "[ inside a class is a literal");
        assert!(m(r"^[a&&b]+$", "a&b"));
        assert!(m(r"^[a~~b]+$", "~"));
        assert!(m(r"^[+--]+$", ","), "a range from + to -");
        assert!(m(r"^[[:alpha:]]+$", "abc"));
        assert!(!m(r"^[[:alpha:]]+$", "é"));
        assert!(m(r"^[]a]+$", "]a"));
        assert!(m(r"^[^]a]+$", "b"));
        assert!(m(r"^a\.b$", "a.b"));
    }

    #[test]
    fn invalid_patterns_refused() {
        for bad in ["(", "[a-", "a{2,1}", r"\1", "x\\", "[z-a]", "(?P<n>a)(?P<n>b)"] {
            assert!(ChannelRegex::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_go_text() {
        let r: ChannelRegex = serde_json::from_str(r#""^\\w+$""#).unwrap();
        assert_eq!(r.as_str(), r"^\w+$");
        assert_eq!(serde_json::to_string(&r).unwrap(), r#""^\\w+$""#);
        let e = serde_json::from_str::<ChannelRegex>(r#""(""#).unwrap_err().to_string();
        assert!(e.contains("invalid channel regex"), "{e}");
    }
}
