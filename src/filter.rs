//! Tags filters: a subscriber's server-side filter over the `tags` of the publications of its
//! channel (the subscribe request's `tf`, allowed per namespace by `allow_tags_filter`).
//!
//! A filter is a tree as the client protocol carries it ([`FilterNode`]: `op`, `key`, `cmp`,
//! `val`, `vals`, `nodes`). It is checked once at subscribe time ([`Filter::compile`]: a
//! malformed tree is refused there) and kept compiled: numeric operands are parsed once, and
//! matching a publication's tags allocates nothing.
//!
//! Semantics, as Centrifugo evaluates them:
//! * `op` is `""` (a leaf), `"and"`, `"or"` (at least one child each) or `"not"` (exactly one
//!   child); an empty `and` never occurs (refused), `and`/`or` short-circuit.
//! * Leaf `cmp`: `eq` (the tag is present and equal), `neq` (absent or different), `in` /
//!   `nin` (the tag's value, `""` when absent, is / is not one of `vals`), `ex` / `nex` (the
//!   key is present / absent), `sw` / `ew` / `ct` (present and starts with / ends with /
//!   contains `val`), `gt` / `gte` / `lt` / `lte` (present, both sides decimal numbers, and
//!   the comparison holds; anything that is not a number never matches).
//! * `eq`, `neq`, `sw`, `ew`, `ct` and the numeric comparisons need a non-empty `val` and no
//!   `vals`; `in` / `nin` need non-empty `vals` and no `val`; `ex` / `nex` take neither. Every
//!   leaf but `ex` / `nex` needs a `key`.
//! * Numbers are decimals as `[+-]digits[.digits]`: no exponent, no leading or trailing dot,
//!   at most 19 digits after the dot and 200 characters in all.
//!
//! Gyre adds one bound of its own: a tree nests at most [`MAX_DEPTH`] levels (a deeper one is
//! refused like any malformed filter), so that checking and matching never recurse without
//! limit.

use std::cmp::Ordering;

/// The deepest a filter tree may nest (the root is level 1).
pub const MAX_DEPTH: usize = 64;

/// A filter as decoded from a subscribe request, not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterNode {
    pub op: String,
    pub key: String,
    pub cmp: String,
    pub val: String,
    pub vals: Vec<String>,
    pub nodes: Vec<FilterNode>,
}

/// [`FilterNode`] as the client protocol's protobuf carries it (`FilterNode` of `client.proto`;
/// prost bounds how deep nested messages may go when decoding).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbFilterNode {
    #[prost(string, tag = "1")]
    pub op: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub cmp: String,
    #[prost(string, tag = "4")]
    pub val: String,
    #[prost(string, repeated, tag = "5")]
    pub vals: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub nodes: Vec<PbFilterNode>,
}

impl PbFilterNode {
    pub fn into_node(self) -> FilterNode {
        FilterNode {
            op: self.op,
            key: self.key,
            cmp: self.cmp,
            val: self.val,
            vals: self.vals,
            nodes: self.nodes.into_iter().map(PbFilterNode::into_node).collect(),
        }
    }
}

/// Why a filter was refused (the client gets error 107 whatever the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// A checked filter, ready to match publications' tags.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<[Filter]>),
    Or(Box<[Filter]>),
    Not(Box<Filter>),
    Leaf { key: Box<str>, test: Test },
}

/// A leaf's comparison, with its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Eq(Box<str>),
    Neq(Box<str>),
    In(Box<[Box<str>]>),
    Nin(Box<[Box<str>]>),
    Exists,
    NotExists,
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Contains(Box<str>),
    /// A numeric comparison: holds when the tag's number compares to the operand as asked
    /// (`None`: the operand is not a number, so it never holds).
    Num(Option<Box<str>>, NumCmp),
}

/// Which orderings of `tag` against the operand a numeric comparison accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumCmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl NumCmp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            NumCmp::Gt => o == Ordering::Greater,
            NumCmp::Gte => o != Ordering::Less,
            NumCmp::Lt => o == Ordering::Less,
            NumCmp::Lte => o != Ordering::Greater,
        }
    }
}

impl Filter {
    /// Checks a decoded filter and compiles it. See the module docs for what is refused.
    pub fn compile(node: &FilterNode) -> Result<Filter, Invalid> {
        compile(node, 1)
    }

    /// Whether publications with these tags pass the filter (no tags: every key is absent).
    pub fn matches(&self, tags: &[(Box<str>, Box<str>)]) -> bool {
        match self {
            Filter::And(nodes) => nodes.iter().all(|n| n.matches(tags)),
            Filter::Or(nodes) => nodes.iter().any(|n| n.matches(tags)),
            Filter::Not(node) => !node.matches(tags),
            Filter::Leaf { key, test } => {
                let value = tags.iter().find(|(k, _)| **k == **key).map(|(_, v)| &**v);
                test.holds(value)
            }
        }
    }
}

impl Test {
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Test::Eq(v), Some(t)) => t == &**v,
            (Test::Neq(v), Some(t)) => t != &**v,
            (Test::Neq(_), None) => true,
            (Test::In(vals), t) => vals.iter().any(|v| **v == *t.unwrap_or("")),
            (Test::Nin(vals), t) => !vals.iter().any(|v| **v == *t.unwrap_or("")),
            (Test::Exists, t) => t.is_some(),
            (Test::NotExists, t) => t.is_none(),
            (Test::StartsWith(v), Some(t)) => t.starts_with(&**v),
            (Test::EndsWith(v), Some(t)) => t.ends_with(&**v),
            (Test::Contains(v), Some(t)) => t.contains(&**v),
            (Test::Num(Some(operand), cmp), Some(t)) => match (Decimal::parse(t), Decimal::parse(operand)) {
                (Some(n), Some(o)) => cmp.holds(n.cmp(&o)),
                _ => false,
            },
            _ => false,
        }
    }
}

fn compile(n: &FilterNode, depth: usize) -> Result<Filter, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid(format!("filter nests deeper than {MAX_DEPTH} levels")));
    }
    let children =
        |n: &FilterNode| -> Result<Box<[Filter]>, Invalid> { n.nodes.iter().map(|c| compile(c, depth + 1)).collect() };
    match n.op.as_str() {
        "" => leaf(n),
        "and" | "or" => {
            if n.nodes.is_empty() {
                return Err(Invalid(format!("{} node must have at least one child", n.op)));
            }
            let nodes = children(n)?;
            Ok(if n.op == "and" { Filter::And(nodes) } else { Filter::Or(nodes) })
        }
        "not" => {
            if n.nodes.len() != 1 {
                return Err(Invalid("not node must have exactly one child".into()));
            }
            Ok(Filter::Not(Box::new(compile(&n.nodes[0], depth + 1)?)))
        }
        op => Err(Invalid(format!("invalid op: {op}"))),
    }
}

fn leaf(n: &FilterNode) -> Result<Filter, Invalid> {
    let cmp = n.cmp.as_str();
    let val = || -> Result<Box<str>, Invalid> {
        if n.val.is_empty() {
            return Err(Invalid(format!("{cmp} comparison requires val")));
        }
        if !n.vals.is_empty() {
            return Err(Invalid(format!("{cmp} comparison must not use vals")));
        }
        Ok(n.val.as_str().into())
    };
    let vals = || -> Result<Box<[Box<str>]>, Invalid> {
        if n.vals.is_empty() {
            return Err(Invalid(format!("{cmp} comparison requires non-empty vals")));
        }
        if !n.val.is_empty() {
            return Err(Invalid(format!("{cmp} comparison must not use val")));
        }
        Ok(n.vals.iter().map(|v| v.as_str().into()).collect())
    };
    let num = |c: NumCmp| val().map(|v| Test::Num(Decimal::parse(&v).is_some().then_some(v), c));
    let test = match cmp {
        "" => return Err(Invalid("leaf node must have cmp set".into())),
        "eq" => Test::Eq(val()?),
        "neq" => Test::Neq(val()?),
        "sw" => Test::StartsWith(val()?),
        "ew" => Test::EndsWith(val()?),
        "ct" => Test::Contains(val()?),
        "gt" => num(NumCmp::Gt)?,
        "gte" => num(NumCmp::Gte)?,
        "lt" => num(NumCmp::Lt)?,
        "lte" => num(NumCmp::Lte)?,
        "in" => Test::In(vals()?),
        "nin" => Test::Nin(vals()?),
        "ex" | "nex" => {
            if !n.val.is_empty() || !n.vals.is_empty() {
                return Err(Invalid(format!("{cmp} comparison must not use val or vals")));
            }
            if cmp == "ex" {
                Test::Exists
            } else {
                Test::NotExists
            }
        }
        other => return Err(Invalid(format!("unknown comparison operator: {other}"))),
    };
    if n.key.is_empty() && !matches!(test, Test::Exists | Test::NotExists) {
        return Err(Invalid("leaf node requires key".into()));
    }
    Ok(Filter::Leaf { key: n.key.as_str().into(), test })
}

/// A decimal number for the numeric comparisons (borrowed from its text, no allocation),
/// normalized so that equal numbers are equal values: no leading zeros in `int`, no trailing
/// zeros in `frac`, zero never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal<'a> {
    neg: bool,
    int: &'a str,
    frac: &'a str,
}

impl<'a> Decimal<'a> {
    /// Parses `[+-]digits[.digits]` (at most 19 fraction digits, 200 characters in all).
    pub fn parse(s: &'a str) -> Option<Decimal<'a>> {
        if s.is_empty() || s.len() > 200 {
            return None;
        }
        let (neg, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = match rest.split_once('.') {
            Some((i, f)) => (i, f),
            None => (rest, ""),
        };
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 19 {
            return None;
        }
        if rest.len() > int.len() && frac.is_empty() {
            return None; // "1." has a dot and nothing after it
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let neg = neg && !(int.is_empty() && frac.is_empty());
        Some(Decimal { neg, int, frac })
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(other.int))
            .then_with(|| self.frac.cmp(other.frac))
    }
}

impl Ord for Decimal<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
        FilterNode { key: key.into(), cmp: cmp.into(), val: val.into(), ..Default::default() }
    }

    fn set(key: &str, cmp: &str, vals: &[&str]) -> FilterNode {
        FilterNode {
            key: key.into(),
            cmp: cmp.into(),
            vals: vals.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    fn node(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
        FilterNode { op: op.into(), nodes, ..Default::default() }
    }

    fn tags(t: &[(&str, &str)]) -> Vec<(Box<str>, Box<str>)> {
        t.iter().map(|(k, v)| (Box::from(*k), Box::from(*v))).collect()
    }

    fn check(f: &FilterNode, t: &[(&str, &str)]) -> bool {
        Filter::compile(f).unwrap().matches(&tags(t))
    }

    #[test]
    fn leaves() {
        let t = [("team", "eng"), ("price", "10.50"), ("path", "/a/b/c")];
        assert!(check(&leaf("team", "eq", "eng"), &t));
        assert!(!check(&leaf("team", "eq", "ops"), &t));
        assert!(!check(&leaf("missing", "eq", "eng"), &t));
        assert!(check(&leaf("team", "neq", "ops"), &t));
        assert!(!check(&leaf("team", "neq", "eng"), &t));
        assert!(check(&leaf("missing", "neq", "x"), &t), "neq holds for an absent key");
        assert!(check(&set("team", "in", &["ops", "eng"]), &t));
        assert!(!check(&set("team", "in", &["ops"]), &t));
        assert!(check(&set("team", "nin", &["ops"]), &t));
        assert!(!check(&set("team", "nin", &["eng"]), &t));
        // An absent key's value is "" for the set comparisons.
        assert!(check(&set("missing", "in", &["", "x"]), &t));
        assert!(!check(&set("missing", "in", &["x"]), &t));
        assert!(check(&set("missing", "nin", &["x"]), &t));
        assert!(check(&FilterNode { key: "team".into(), cmp: "ex".into(), ..Default::default() }, &t));
        assert!(!check(&FilterNode { key: "x".into(), cmp: "ex".into(), ..Default::default() }, &t));
        assert!(check(&FilterNode { key: "x".into(), cmp: "nex".into(), ..Default::default() }, &t));
        assert!(!check(&FilterNode { key: "team".into(), cmp: "nex".into(), ..Default::default() }, &t));
        assert!(check(&leaf("path", "sw", "/a/"), &t));
        assert!(!check(&leaf("path", "sw", "/b"), &t));
        assert!(check(&leaf("path", "ew", "b/c"), &t));
        assert!(!check(&leaf("path", "ew", "/a"), &t));
        assert!(check(&leaf("path", "ct", "/b/"), &t));
        assert!(!check(&leaf("path", "ct", "/d"), &t));
        assert!(!check(&leaf("missing", "ct", "a"), &t));
        assert!(!check(&leaf("missing", "sw", "a"), &t));
        // No tags at all: every key is absent.
        assert!(check(&leaf("team", "neq", "eng"), &[]));
        assert!(!check(&leaf("team", "eq", "eng"), &[]));
    }

    #[test]
    fn numbers() {
        let t = [("price", "10.50"), ("neg", "-3"), ("word", "ten"), ("big", "123456789012345678901234567890")];
        assert!(check(&leaf("price", "gt", "10"), &t));
        assert!(check(&leaf("price", "gt", "10.4999"), &t));
        assert!(!check(&leaf("price", "gt", "10.5"), &t));
        assert!(check(&leaf("price", "gte", "10.5"), &t));
        assert!(check(&leaf("price", "gte", "+10.500"), &t));
        assert!(check(&leaf("price", "lte", "010.5"), &t));
        assert!(!check(&leaf("price", "lt", "10.5"), &t));
        assert!(check(&leaf("price", "lt", "11"), &t));
        assert!(check(&leaf("neg", "lt", "-2.5"), &t));
        assert!(check(&leaf("neg", "gt", "-3.01"), &t));
        assert!(!check(&leaf("neg", "gt", "0"), &t));
        assert!(check(&leaf("big", "gt", "123456789012345678901234567889"), &t));
        assert!(check(&leaf("big", "lt", "1234567890123456789012345678900"), &t));
        // Not numbers: never a match, whichever side.
        assert!(!check(&leaf("word", "gt", "1"), &t));
        assert!(!check(&leaf("word", "lte", "1"), &t));
        assert!(!check(&leaf("price", "gt", "abc"), &t));
        assert!(!check(&leaf("price", "lt", "1e3"), &t));
        assert!(!check(&leaf("missing", "lt", "5"), &t));
        // Zero has no sign.
        assert!(check(&leaf("z", "gte", "0"), &[("z", "-0.0")]));
        assert!(check(&leaf("z", "lte", "-0"), &[("z", "0")]));
    }

    #[test]
    fn decimal_syntax() {
        for ok in ["0", "-1", "+1", "00012", "1.5", "-0.000", "12.3456789012345678901"] {
            assert!(Decimal::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "-",
            "+",
            ".5",
            "-.5",
            "5.",
            "1.2.3",
            "1e3",
            " 1",
            "1 ",
            "--1",
            "0x10",
            "1_000",
            "½",
            "1.12345678901234567890",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
        assert!(Decimal::parse(&"1".repeat(200)).is_some());
        assert!(Decimal::parse(&"1".repeat(201)).is_none());
    }

    #[test]
    fn nodes() {
        let t = [("a", "1"), ("b", "2")];
        let a1 = leaf("a", "eq", "1");
        let b3 = leaf("b", "eq", "3");
        assert!(!check(&node("and", vec![a1.clone(), b3.clone()]), &t));
        assert!(check(&node("or", vec![a1.clone(), b3.clone()]), &t));
        assert!(check(&node("not", vec![b3.clone()]), &t));
        assert!(!check(&node("not", vec![node("or", vec![a1.clone(), b3.clone()])]), &t));
        assert!(check(&node("and", vec![a1.clone(), node("not", vec![b3])]), &t));
    }

    #[test]
    fn refused() {
        let bad = [
            FilterNode::default(),
            leaf("a", "", "1"),
            leaf("a", "eq", ""),
            leaf("", "eq", "1"),
            leaf("a", "like", "1"),
            leaf("a", "gt", ""),
            FilterNode { vals: vec!["x".into()], ..leaf("a", "eq", "1") },
            set("a", "in", &[]),
            FilterNode { val: "x".into(), ..set("a", "in", &["y"]) },
            leaf("a", "ex", "1"),
            set("a", "nex", &["1"]),
            node("and", vec![]),
            node("or", vec![]),
            node("not", vec![]),
            node("not", vec![leaf("a", "eq", "1"), leaf("a", "eq", "2")]),
            node("xor", vec![leaf("a", "eq", "1")]),
            node("and", vec![leaf("a", "eq", "1"), FilterNode::default()]),
            FilterNode { op: "AND".into(), nodes: vec![leaf("a", "eq", "1")], ..Default::default() },
        ];
        for f in bad {
            assert!(Filter::compile(&f).is_err(), "{f:?}");
        }
        // `ex`/`nex` need no key; an unparsable numeric operand is accepted (never matches).
        assert!(Filter::compile(&FilterNode { cmp: "ex".into(), ..Default::default() }).is_ok());
        assert!(Filter::compile(&leaf("a", "gt", "abc")).is_ok());
    }

    #[test]
    fn depth_bound() {
        let mut f = leaf("a", "eq", "1");
        for _ in 1..MAX_DEPTH {
            f = node("not", vec![f]);
        }
        assert!(Filter::compile(&f).is_ok());
        let f = node("not", vec![f]);
        assert!(Filter::compile(&f).is_err());
    }
}
