//! Label selectors: upstream's `labels.Parse` grammar, requirement checks,
//! matching and canonical `String()` form, plus `metav1.LabelSelector`
//! objects (`matchLabels` / `matchExpressions`) as controllers use them.

use std::fmt;

use serde_json::{Map, Value};

use super::SelectorError;
use crate::validation::names::{label_value, qualified_name};

/// A requirement's operator; `==` is kept apart from `=` only so the
/// canonical string round-trips as upstream's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key op values` term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: LabelOp,
    /// Sorted and de-duplicated, as upstream keeps them (a string set).
    values: Vec<String>,
}

impl Requirement {
    /// Checks the key, the values and their count for the operator the way
    /// upstream's `labels.NewRequirement` does.
    pub fn new(key: &str, op: LabelOp, values: Vec<String>) -> Result<Self, SelectorError> {
        let mut errs = Vec::new();
        let key_errs = qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "key: Invalid value: {}: {}",
                quote(key),
                key_errs.join("; ")
            ));
        }
        let count_err = match op {
            LabelOp::In | LabelOp::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            LabelOp::Equals | LabelOp::DoubleEquals | LabelOp::NotEquals if values.len() != 1 => {
                Some("exact-match compatibility requires one single value")
            }
            LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            LabelOp::GreaterThan | LabelOp::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            _ => None,
        };
        if let Some(detail) = count_err {
            errs.push(format!(
                "values: Invalid value: {}: {detail}",
                go_string_slice(&values)
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if matches!(op, LabelOp::GreaterThan | LabelOp::LessThan) && v.parse::<i64>().is_err() {
                errs.push(format!(
                    "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                    quote(v)
                ));
            }
            let v_errs = label_value(v);
            if !v_errs.is_empty() {
                errs.push(format!(
                    "values[{i}]: Invalid value: {}: {}",
                    quote(v),
                    v_errs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            // Upstream aggregates: one error bare, several in brackets.
            let msg = if errs.len() == 1 {
                errs.remove(0)
            } else {
                format!("[{}]", errs.join(", "))
            };
            return Err(SelectorError::Requirement(msg));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_string(),
            op,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn op(&self) -> LabelOp {
        self.op
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label value (`None` = label absent) satisfies this term.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            LabelOp::Equals | LabelOp::DoubleEquals | LabelOp::In => value.is_some_and(has),
            LabelOp::NotEquals | LabelOp::NotIn => !value.is_some_and(has),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let (Some(v), [want]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(have), Ok(want)) = (v.parse::<i64>(), want.parse::<i64>()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == LabelOp::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.op {
            LabelOp::Equals => ("=", false),
            LabelOp::DoubleEquals => ("==", false),
            LabelOp::NotEquals => ("!=", false),
            LabelOp::In => (" in ", true),
            LabelOp::NotIn => (" notin ", true),
            LabelOp::GreaterThan => (">", false),
            LabelOp::LessThan => ("<", false),
            LabelOp::Exists | LabelOp::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A conjunction of requirements. `nothing` is upstream's `labels.Nothing()`
/// (what a null `metav1.LabelSelector` means): it matches no object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object.
    pub fn nothing() -> Self {
        Self {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the `labelSelector` query syntax; an empty string matches
    /// everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut p = Parser { tokens, pos: 0 };
        let reqs = p.parse()?;
        Ok(Self::from_requirements(reqs))
    }

    /// Builds a selector from already-checked requirements, sorted by key as
    /// upstream keeps them.
    pub fn from_requirements(mut reqs: Vec<Requirement>) -> Self {
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            reqs,
            nothing: false,
        }
    }

    /// A `metav1.LabelSelector` object. Null matches nothing, `{}` matches
    /// everything (upstream's `LabelSelectorAsSelector`).
    pub fn from_label_selector_json(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            _ => {
                return Err(SelectorError::Malformed(
                    "label selector must be an object".into(),
                ));
            }
        };
        let mut reqs = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        SelectorError::Malformed(format!(
                            "matchLabels[{k}]: value must be a string"
                        ))
                    })?;
                    reqs.push(Requirement::new(k, LabelOp::Equals, vec![v.to_string()])?);
                }
            }
            Some(_) => {
                return Err(SelectorError::Malformed(
                    "matchLabels must be an object".into(),
                ));
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    reqs.push(expression(i, e)?);
                }
            }
            Some(_) => {
                return Err(SelectorError::Malformed(
                    "matchExpressions must be a list".into(),
                ));
            }
        }
        Ok(Self::from_requirements(reqs))
    }

    /// Equality on every pair of a plain label map (a Service's or a
    /// ReplicationController's `selector`), as upstream's `SelectorFromSet`.
    pub fn from_map(m: &Map<String, Value>) -> Self {
        let reqs = m
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: LabelOp::Equals,
                values: vec![v.as_str().unwrap_or("").to_string()],
            })
            .collect();
        Self::from_requirements(reqs)
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }

    /// True when the selector matches everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// True for the match-nothing selector of a null `metav1.LabelSelector`.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// Matches against labels looked up by key.
    pub fn matches_fn<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(get(&r.key)))
    }

    /// Matches against a `metadata.labels` map.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.matches_fn(|k| labels.get(k).and_then(Value::as_str))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Upstream's `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when
/// empty.
pub fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

fn expression(i: usize, e: &Value) -> Result<Requirement, SelectorError> {
    let malformed = |what: &str| SelectorError::Malformed(format!("matchExpressions[{i}]: {what}"));
    let key = e
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("key must be a string"))?;
    let op = e
        .get("operator")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("operator must be a string"))?;
    let op = match op {
        "In" => LabelOp::In,
        "NotIn" => LabelOp::NotIn,
        "Exists" => LabelOp::Exists,
        "DoesNotExist" => LabelOp::DoesNotExist,
        other => return Err(SelectorError::Operator(other.to_string())),
    };
    let values = match e.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("values must be strings"))?,
        Some(_) => return Err(malformed("values must be a list")),
    };
    Requirement::new(key, op, values)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// How Go's `%#v` prints a `[]string`, which upstream's messages embed.
fn go_string_slice(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

// ---- lexer -----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    End,
    OpenPar,
    ClosedPar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Gt,
    Lt,
    In,
    NotIn,
    Ident(String),
}

impl Tok {
    /// The literal upstream quotes in "found '...'" messages.
    fn literal(&self) -> &str {
        match self {
            Tok::End => "",
            Tok::OpenPar => "(",
            Tok::ClosedPar => ")",
            Tok::Comma => ",",
            Tok::Bang => "!",
            Tok::Equals => "=",
            Tok::DoubleEquals => "==",
            Tok::NotEquals => "!=",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Ident(s) => s,
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn special(s: &str) -> Option<Tok> {
    Some(match s {
        "(" => Tok::OpenPar,
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::Bang,
        "=" => Tok::Equals,
        "==" => Tok::DoubleEquals,
        "!=" => Tok::NotEquals,
        ">" => Tok::Gt,
        "<" => Tok::Lt,
        _ => return None,
    })
}

/// Splits the whole input into tokens up front; every character is either
/// whitespace, a special symbol or part of an identifier, so lexing cannot
/// fail.
fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_special(c) {
            // Longest run of specials that still forms a token (`!=`, `==`).
            let mut best = (1, special(&c.to_string()));
            let mut j = i + 1;
            while j < chars.len() && is_special(chars[j]) {
                let cand: String = chars[i..=j].iter().collect();
                match special(&cand) {
                    Some(t) => best = (j - i + 1, Some(t)),
                    None => break,
                }
                j += 1;
            }
            if let Some(t) = best.1 {
                out.push(t);
            }
            i += best.0;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_ascii_whitespace() && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident(word),
            });
        }
    }
    out.push(Tok::End);
    out
}

// ---- parser ----------------------------------------------------------------

/// Where a token is read: in value positions `in`/`notin` are plain words.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

fn syntax(msg: String) -> SelectorError {
    SelectorError::Syntax(msg)
}

impl Parser {
    fn peek(&self, ctx: Ctx) -> Tok {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Tok::End);
        Self::in_ctx(t, ctx)
    }

    fn next(&mut self, ctx: Ctx) -> Tok {
        let t = self.peek(ctx);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn in_ctx(t: Tok, ctx: Ctx) -> Tok {
        match (ctx, t) {
            (Ctx::Values, Tok::In) => Tok::Ident("in".into()),
            (Ctx::Values, Tok::NotIn) => Tok::Ident("notin".into()),
            (_, t) => t,
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek(Ctx::Values) {
                Tok::Ident(_) | Tok::Bang => {
                    reqs.push(self.requirement()?);
                    match self.next(Ctx::Values) {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let t = self.peek(Ctx::Values);
                            if !matches!(t, Tok::Ident(_) | Tok::Bang) {
                                return Err(syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                )));
                            }
                        }
                        t => {
                            return Err(syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            )));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return Err(syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    )));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut t = self.next(Ctx::Values);
        let negated = t == Tok::Bang;
        if negated {
            t = self.next(Ctx::Values);
        }
        let Tok::Ident(key) = t else {
            return Err(syntax(format!(
                "found '{}', expected: identifier",
                t.literal()
            )));
        };
        // Upstream checks the key before looking at the operator.
        let key_errs = qualified_name(&key);
        if !key_errs.is_empty() {
            return Err(SelectorError::Requirement(format!(
                "key: Invalid value: {}: {}",
                quote(&key),
                key_errs.join("; ")
            )));
        }
        // A bare key (or `!key`) ends at a comma or the end of input.
        if negated {
            return Requirement::new(&key, LabelOp::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(Ctx::Values), Tok::End | Tok::Comma) {
            return Requirement::new(&key, LabelOp::Exists, Vec::new());
        }
        let op = match self.next(Ctx::KeyAndOperator) {
            Tok::In => LabelOp::In,
            Tok::NotIn => LabelOp::NotIn,
            Tok::Equals => LabelOp::Equals,
            Tok::DoubleEquals => LabelOp::DoubleEquals,
            Tok::NotEquals => LabelOp::NotEquals,
            Tok::Gt => LabelOp::GreaterThan,
            Tok::Lt => LabelOp::LessThan,
            t => {
                return Err(syntax(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                )));
            }
        };
        let values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let t = self.next(Ctx::Values);
        if t != Tok::OpenPar {
            return Err(syntax(format!("found '{}' expected: '('", t.literal())));
        }
        match self.peek(Ctx::Values) {
            Tok::Ident(_) | Tok::Comma => {
                let vals = self.identifiers()?;
                let t = self.next(Ctx::Values);
                if t != Tok::ClosedPar {
                    return Err(syntax(format!("found '{}', expected: ')'", t.literal())));
                }
                Ok(vals)
            }
            Tok::ClosedPar => {
                // `()` is the set holding only the empty string, as upstream.
                self.next(Ctx::Values);
                Ok(vec![String::new()])
            }
            t => Err(syntax(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.literal()
            ))),
        }
    }

    /// The inside of `( ... )`; empty entries (`(a,,b)`, `(,a)`) are the empty
    /// string, as upstream reads them.
    fn identifiers(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut vals: Vec<String> = Vec::new();
        loop {
            match self.next(Ctx::Values) {
                Tok::Ident(v) => {
                    vals.push(v);
                    match self.peek(Ctx::Values) {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(vals),
                        t => {
                            return Err(syntax(format!(
                                "found '{}', expected: ',' or ')'",
                                t.literal()
                            )));
                        }
                    }
                }
                Tok::Comma => {
                    if vals.is_empty() {
                        vals.push(String::new());
                    }
                    match self.peek(Ctx::Values) {
                        Tok::ClosedPar => {
                            vals.push(String::new());
                            return Ok(vals);
                        }
                        Tok::Comma => {
                            self.next(Ctx::Values);
                            vals.push(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(syntax(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    )));
                }
            }
        }
    }

    fn exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        if matches!(self.peek(Ctx::Values), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next(Ctx::Values) {
            Tok::Ident(v) => Ok(vec![v]),
            t => Err(syntax(format!(
                "found '{}', expected: identifier",
                t.literal()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn canon(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => sel.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn parses_all_operators_into_canonical_form() {
        assert_eq!(canon("a=b"), "a=b");
        assert_eq!(canon("a==b"), "a==b");
        assert_eq!(canon("a!=b"), "a!=b");
        assert_eq!(canon("a in (y,x)"), "a in (x,y)");
        assert_eq!(canon("a notin (x)"), "a notin (x)");
        assert_eq!(canon("a"), "a");
        assert_eq!(canon("!a"), "!a");
        assert_eq!(canon("a>5"), "a>5");
        assert_eq!(canon("a<5"), "a<5");
        // Sorted by key; whitespace anywhere between tokens.
        assert_eq!(
            canon("  z = 1 , app in ( web , api ),  !gone,env"),
            "app in (api,web),env,!gone,z=1"
        );
        assert_eq!(canon("a="), "a=");
        assert_eq!(canon("a in ()"), "a in ()");
        assert_eq!(canon("a in (,x)"), "a in (,x)");
        // `in` is an ordinary word in value positions.
        assert_eq!(canon("in=notin"), "in=notin");
        assert_eq!(
            canon("example.com/tier=front-end"),
            "example.com/tier=front-end"
        );
    }

    #[test]
    fn empty_matches_everything() {
        for s in ["", "   "] {
            let sel = LabelSelector::parse(s).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches(&Map::new()));
            assert_eq!(sel.to_string(), "");
        }
    }

    #[test]
    fn syntax_errors_read_like_upstream() {
        assert_eq!(
            canon("a=b,"),
            "ERR found '', expected: identifier after ','"
        );
        assert_eq!(
            canon("a=b=c"),
            "ERR found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            canon(",a"),
            "ERR found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(canon("a in x"), "ERR found 'x' expected: '('");
        assert_eq!(canon("a in (x"), "ERR found '', expected: ',' or ')'");
        assert_eq!(
            canon("a (x)"),
            "ERR found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            canon("!a=b"),
            "ERR found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(canon("a=(b)"), "ERR found '(', expected: identifier");
        assert!(canon("a>x").starts_with("ERR values[0]: Invalid value: \"x\": for 'Gt', 'Lt'"));
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let e = canon("a b=c");
        assert!(e.starts_with("ERR found 'b'"), "{e}");
        let e = canon("-a=b");
        assert!(
            e.starts_with("ERR key: Invalid value: \"-a\": name part must consist of"),
            "{e}"
        );
        let e = canon(&format!("a={}", "x".repeat(64)));
        assert!(e.contains("must be no more than 63 characters"), "{e}");
        let e = canon("a=b_");
        assert!(
            e.starts_with("ERR values[0]: Invalid value: \"b_\": a valid label"),
            "{e}"
        );
        let e = canon("a/b/c");
        assert!(e.contains("a qualified name must consist of"), "{e}");
    }

    #[test]
    fn matching() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "7"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app=api"));
        assert!(m("app!=api"));
        assert!(m("missing!=x"), "absent label satisfies !=");
        assert!(m("app in (api,web)"));
        assert!(!m("app notin (web)"));
        assert!(m("missing notin (web)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(!m("missing"));
        assert!(m("n>5") && m("n<8") && !m("n>7") && !m("app>1"));
        assert!(m("app=web,tier in (front)"));
        assert!(!m("app=web,tier in (back)"));
        let sel = LabelSelector::parse("app=web").unwrap();
        assert!(sel.matches_fn(|k| (k == "app").then_some("web")));
        // Lookups borrowing from a cache entry, as the apiserver does.
        struct Entry(Vec<(String, String)>);
        impl Entry {
            fn label(&self, k: &str) -> Option<&str> {
                self.0.iter().find(|(l, _)| l == k).map(|(_, v)| v.as_str())
            }
        }
        let e = Entry(vec![("app".into(), "web".into())]);
        assert!(sel.matches_fn(|k| e.label(k)));
        assert!(!sel.matches_fn(|_| None));
    }

    #[test]
    fn metav1_label_selector_objects() {
        let sel = LabelSelector::from_label_selector_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "Exists"},
            ]
        }))
        .unwrap();
        assert_eq!(sel.to_string(), "app=web,!canary,env,tier in (a,b)");
        assert!(sel.matches(&labels(json!({"app": "web", "tier": "a", "env": ""}))));
        assert!(!sel.matches(&labels(json!({"app": "web", "tier": "a"}))));

        let all = LabelSelector::from_label_selector_json(&json!({})).unwrap();
        assert!(all.is_empty() && all.matches(&Map::new()));
        let none = LabelSelector::from_label_selector_json(&Value::Null).unwrap();
        assert!(!none.is_empty() && !none.matches(&Map::new()));

        let e = LabelSelector::from_label_selector_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"Equals\" is not a valid label selector operator"
        );
        let e = LabelSelector::from_label_selector_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
        }))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        let e = LabelSelector::from_label_selector_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
        }))
        .unwrap_err();
        assert!(e.to_string().contains("values set must be empty"), "{e}");
        assert!(LabelSelector::from_label_selector_json(&json!("x")).is_err());
        assert!(
            LabelSelector::from_label_selector_json(&json!({"matchLabels": {"a": 1}})).is_err()
        );
    }

    #[test]
    fn format_labels_sorts() {
        assert_eq!(format_labels(None), "<none>");
        let m = labels(json!({"b": "2", "a": "1"}));
        assert_eq!(format_labels(Some(&m)), "a=1,b=2");
        assert_eq!(LabelSelector::from_map(&m).to_string(), "a=1,b=2");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "!",
            "!!",
            "(",
            ")",
            "a in",
            "a in (",
            "a notin (,,)",
            "==",
            "a!",
            "a!==b",
            "é=ü",
            "a in ((b))",
            ",",
            "a,,b",
            "a=b c",
            "\u{0}",
            "a>",
            "a<b<c",
        ] {
            let _ = LabelSelector::parse(s);
        }
        // Upstream quirk kept: `(,,)` is an error but `(,)` is the empty value.
        assert_eq!(
            canon("a notin (,,)"),
            "ERR found ')', expected: ',', or identifier"
        );
        assert_eq!(canon("a notin (,)"), "a notin ()");
    }
}
