//! Python's behaviour where templates see it: `str()` and `repr()` of values, `json.dumps`
//! (transformers' `tojson`), the str/list methods templates call, and the jinja2 filters whose
//! minijinja twins differ (`join`, `length`, `title`, `trim`, `indent`, `truncate`, `escape`).

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};
use std::fmt::Write;

/// A Python function's arguments, positional then by keyword, in the order of `names`
/// (undefined where not given); too many, repeated or unknown ones are errors.
fn py_args<const N: usize>(what: &str, mut pos: Vec<Value>, names: [&str; N]) -> Result<[Value; N], Error> {
    let kwargs = match pos.last() {
        Some(v) if v.is_kwargs() => Kwargs::try_from(pos.pop().unwrap_or_default())?,
        _ => Kwargs::try_from(Value::UNDEFINED)?,
    };
    if pos.len() > N {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            format!("{what} takes at most {N} arguments"),
        ));
    }
    let mut opt: [Value; N] = std::array::from_fn(|_| Value::UNDEFINED);
    for (i, name) in names.iter().enumerate() {
        let kw: Option<Value> = kwargs.get(name)?;
        opt[i] = match (pos.get(i), kw) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{what} got {name} twice"),
                ))
            }
            (Some(v), None) => v.clone(),
            (None, Some(v)) => v,
            (None, None) => Value::UNDEFINED,
        };
    }
    kwargs.assert_all_used()?;
    Ok(opt)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, arguments positional or by keyword, in that order.
pub(super) fn tojson(value: &Value, args: Rest<Value>) -> Result<String, Error> {
    let opt = py_args("tojson", args.0, ["ensure_ascii", "indent", "separators", "sort_keys"])?;
    let indent = match &opt[1] {
        v if v.is_undefined() || v.is_none() => None,
        v if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        v => Some(" ".repeat(i64::try_from(v.clone())?.max(0) as usize)),
    };
    let (item_sep, key_sep) = match &opt[2] {
        v if v.is_undefined() || v.is_none() => {
            (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string())
        }
        v => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or("").to_string(),
                    b.as_str().unwrap_or("").to_string(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be two strings",
                    ))
                }
            }
        }
    };
    let json = Dumps {
        ascii: opt[0].is_true(),
        indent,
        item_sep,
        key_sep,
        sort_keys: opt[3].is_true(),
    };
    let mut out = String::new();
    json.value(&mut out, value, 0)?;
    Ok(out)
}

/// The options of one `json.dumps` call.
struct Dumps {
    ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl Dumps {
    fn value(&self, out: &mut String, v: &Value, depth: usize) -> Result<(), Error> {
        match v.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&py_number(v, true)),
            ValueKind::String => json_string(out, v.as_str().unwrap_or(""), self.ascii),
            // A generator (`map`, `selectattr`, `items()`) is not JSON serializable in Python either.
            ValueKind::Seq => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container(out, '[', ']', depth, items.len(), |out, i| {
                    self.value(out, &items[i], depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut pairs: Vec<(String, Value)> = Vec::new();
                for key in v.try_iter()? {
                    let name = match key.kind() {
                        ValueKind::String => key.as_str().unwrap_or("").to_string(),
                        ValueKind::None => "null".into(),
                        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
                        ValueKind::Number => py_number(&key, true),
                        k => return Err(not_serializable(&format!("a dict key of type {k}"))),
                    };
                    pairs.push((name, v.get_item(&key)?));
                }
                if self.sort_keys {
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(out, '{', '}', depth, pairs.len(), |out, i| {
                    json_string(out, &pairs[i].0, self.ascii);
                    out.push_str(&self.key_sep);
                    self.value(out, &pairs[i].1, depth + 1)
                })?;
            }
            ValueKind::Undefined => return Err(not_serializable("Undefined")),
            k => return Err(not_serializable(&k.to_string())),
        }
        Ok(())
    }

    /// `[` items `]` with json.dumps' separators and indentation (`[]` when empty).
    fn container(
        &self,
        out: &mut String,
        open: char,
        close: char,
        depth: usize,
        n: usize,
        mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if n > 0 {
            let newline = |out: &mut String, d: usize| {
                if let Some(ind) = &self.indent {
                    out.push('\n');
                    out.push_str(&ind.repeat(d));
                }
            };
            for i in 0..n {
                if i > 0 {
                    out.push_str(&self.item_sep);
                }
                newline(out, depth + 1);
                item(out, i)?;
            }
            newline(out, depth);
        }
        out.push(close);
        Ok(())
    }
}

fn not_serializable(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: object of type {what} is not JSON serializable"),
    )
}

/// A JSON string as Python's json module writes it: `"` `\` and control characters escaped
/// (`\n`, `\u001b`), everything else kept, or with `ensure_ascii` written as `\uXXXX`.
fn json_string(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    write!(out, "\\u{unit:04x}").unwrap_or(());
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python prints it: integers in full, floats as `repr(float)` (`1.0`, `1e-05`,
/// `1e+16`); non-finite floats as json.dumps (`NaN`, `Infinity`) or str() (`nan`, `inf`) writes them.
fn py_number(v: &Value, json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    let x = f64::try_from(v.clone()).unwrap_or(f64::NAN);
    if x.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if x.is_infinite() {
        let s = if json { "Infinity" } else { "inf" };
        return if x < 0.0 { format!("-{s}") } else { s.into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Python's repr: d.ddde±x.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            s + ".0"
        }
    } else {
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// Python's `str(value)`: strings as they are, `None`, `True`, floats as repr, lists and dicts
/// as their repr (`['a', 1]`, `{'k': None}`); undefined is empty, as jinja2's `Undefined`.
pub(super) fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => v.as_str().unwrap_or("").to_string(),
        _ => py_repr(v),
    }
}

/// Python's `repr(value)` for the values a template holds.
fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number => py_number(v, false),
        ValueKind::String => py_str_repr(v.as_str().unwrap_or("")),
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => format!("[{}]", items.map(|x| py_repr(&x)).collect::<Vec<_>>().join(", ")),
            Err(_) => v.to_string(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => {
                let pairs: Vec<String> = keys
                    .map(|k| format!("{}: {}", py_repr(&k), py_repr(&v.get_item(&k).unwrap_or_default())))
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }
            Err(_) => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; backslash, the quote,
/// `\n` `\r` `\t` and non-printable characters escaped.
fn py_str_repr(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                match n {
                    0..=0xff => write!(out, "\\x{n:02x}"),
                    0x100..=0xffff => write!(out, "\\u{n:04x}"),
                    _ => write!(out, "\\U{n:08x}"),
                }
                .unwrap_or(())
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// Python's `str.isprintable` for one character, for the characters chat text holds: controls,
/// separators other than the space, and format characters (zero-width, bidi marks) are not.
fn py_printable(c: char) -> bool {
    !matches!(c as u32,
        0..=0x1f | 0x7f..=0xa0 | 0xad | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064
        | 0x3000 | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff)
}

/// Python's whitespace (`str.isspace`): Unicode White_Space plus the separators U+001C..U+001F.
pub(super) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip`/`lstrip`/`rstrip`: Python whitespace, or any of `chars`.
pub(super) fn py_strip<'a>(s: &'a str, chars: Option<&str>, left: bool, right: bool) -> &'a str {
    let strip = |c: char| chars.map_or_else(|| py_space(c), |set| set.contains(c));
    let s = if left { s.trim_start_matches(strip) } else { s };
    if right {
        s.trim_end_matches(strip)
    } else {
        s
    }
}

/// jinja2's `title` filter: a word starts after `-`, whitespace, `(`, `{`, `[` or `<`.
pub(super) fn jinja_title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if c == '-' || c.is_whitespace() || "({[<".contains(c) {
            out.push(c);
            start = true;
        } else if start {
            out.extend(c.to_uppercase());
            start = false;
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Python's `str.title`: a cased character after an uncased one is upper-cased, others lowered.
fn py_title(s: &str) -> String {
    let mut out = String::new();
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_lowercase() || c.is_uppercase();
    }
    out
}

/// jinja2's `join(value, d='', attribute=None)`: items (or their attribute) through `str()`.
pub(super) fn join(value: &Value, sep: Option<&str>, kwargs: Kwargs) -> Result<String, Error> {
    let attribute: Option<Value> = kwargs.get("attribute")?;
    kwargs.assert_all_used()?;
    let mut parts = Vec::new();
    for item in value.try_iter()? {
        let item = match &attribute {
            Some(a) => item.get_item(a)?,
            None => item,
        };
        parts.push(py_str(&item));
    }
    Ok(parts.join(sep.unwrap_or("")))
}

/// jinja2's `indent(s, width=4, first=False, blank=False)`: `width` spaces or a string, added
/// before every line but the first (and blank ones) unless asked.
pub(super) fn indent(value: &str, args: Rest<Value>) -> Result<String, Error> {
    let [width, first, blank] = py_args("indent", args.0, ["width", "first", "blank"])?;
    let ind = match width.as_str() {
        Some(s) => s.to_string(),
        None if width.is_undefined() => "    ".into(),
        None => " ".repeat(i64::try_from(width)?.max(0) as usize),
    };
    let text = format!("{value}\n");
    let lines = py_splitlines(&text, false);
    let mut rv = if blank.is_true() {
        lines.join(&format!("\n{ind}"))
    } else {
        let mut rv = lines.first().copied().unwrap_or("").to_string();
        if lines.len() > 1 {
            let rest: Vec<String> = lines[1..]
                .iter()
                .map(|l| {
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!("{ind}{l}")
                    }
                })
                .collect();
            rv = format!("{rv}\n{}", rest.join("\n"));
        }
        rv
    };
    if first.is_true() {
        rv = format!("{ind}{rv}");
    }
    Ok(rv)
}

/// Python's `str.splitlines(keepends)`: lines end at `\n`, `\r\n`, `\r` and the other Unicode breaks.
fn py_splitlines(s: &str, keep: bool) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = s;
    let breaks = [
        '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}', '\u{2029}',
    ];
    while let Some(i) = rest.find(breaks) {
        let brk = if rest[i..].starts_with("\r\n") {
            2
        } else {
            rest[i..].chars().next().map_or(1, char::len_utf8)
        };
        lines.push(&rest[..if keep { i + brk } else { i }]);
        rest = &rest[i + brk..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}

/// jinja2's `truncate(s, length=255, killwords=False, end='...', leeway=5)`: cut at the last
/// space before `length - len(end)` characters (or right there with `killwords`), then `end`.
pub(super) fn truncate(value: &str, args: Rest<Value>) -> Result<String, Error> {
    let [length, killwords, end, leeway] = py_args("truncate", args.0, ["length", "killwords", "end", "leeway"])?;
    let int = |v: Value, d: i64| {
        if v.is_undefined() || v.is_none() {
            Ok(d)
        } else {
            i64::try_from(v)
        }
    };
    let (length, leeway) = (int(length, 255)?, int(leeway, 5)?);
    let end = end.as_str().map_or("...".to_string(), str::to_string);
    let n = value.chars().count() as i64;
    let keep = length - end.chars().count() as i64;
    if keep < 0 || leeway < 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "truncate: length is shorter than end, or leeway < 0",
        ));
    }
    if n <= length + leeway {
        return Ok(value.to_string());
    }
    let head: String = value.chars().take(keep as usize).collect();
    let head = if killwords.is_true() {
        head.as_str()
    } else {
        head.rsplit_once(' ').map_or(head.as_str(), |(h, _)| h)
    };
    Ok(format!("{head}{end}"))
}

/// jinja2's `length`/`count`: 0 for an undefined value (jinja2's `Undefined` has length 0).
pub(super) fn length(value: &Value) -> Result<usize, Error> {
    if value.is_undefined() {
        return Ok(0);
    }
    value.len().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("object of type {} has no length", value.kind()),
        )
    })
}

/// jinja2's `escape` (markupsafe): `&` `<` `>` `"` `'` as `&amp;` `&lt;` `&gt;` `&#34;` `&#39;`.
pub(super) fn escape(value: &Value) -> String {
    let s = py_str(value);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Python's methods on strings, lists and dicts that templates call, where minijinja's pycompat
/// differs from Python (character offsets, whitespace, `title`, `is*`) or lacks them; the rest
/// goes to pycompat.
pub(super) fn python_method(state: &State, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    let arg_str = |i: usize| args.get(i).filter(|v| !v.is_none()).and_then(Value::as_str);
    let arg_int = |i: usize| {
        args.get(i)
            .filter(|v| !v.is_none())
            .map(|v| i64::try_from(v.clone()))
            .transpose()
    };
    if let Some(s) = value.as_str() {
        let char_pos = |b: Option<usize>| b.map_or(-1, |b| s[..b].chars().count() as i64);
        let needle = || {
            arg_str(0).ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("str.{method} needs a string")))
        };
        let cased = |pred: fn(char) -> bool, other: fn(char) -> bool| s.chars().any(pred) && !s.chars().any(other);
        let rv = match method {
            "strip" => Value::from(py_strip(s, arg_str(0), true, true)),
            "lstrip" => Value::from(py_strip(s, arg_str(0), true, false)),
            "rstrip" => Value::from(py_strip(s, arg_str(0), false, true)),
            "split" => py_split(s, arg_str(0), arg_int(1)?.unwrap_or(-1), false)?,
            "rsplit" => py_split(s, arg_str(0), arg_int(1)?.unwrap_or(-1), true)?,
            "splitlines" => {
                let lines = py_splitlines(s, args.first().is_some_and(Value::is_true));
                Value::from(lines.into_iter().map(Value::from).collect::<Vec<_>>())
            }
            "title" => Value::from(py_title(s)),
            "find" => Value::from(char_pos(s.find(needle()?))),
            "rfind" => Value::from(char_pos(s.rfind(needle()?))),
            "index" | "rindex" => {
                let at = if method == "index" {
                    s.find(needle()?)
                } else {
                    s.rfind(needle()?)
                };
                Value::from(char_pos(Some(at.ok_or_else(|| {
                    Error::new(ErrorKind::InvalidOperation, "substring not found")
                })?)))
            }
            "count" => {
                let n = needle()?;
                Value::from(if n.is_empty() {
                    s.chars().count() + 1
                } else {
                    s.matches(n).count()
                })
            }
            "removeprefix" => Value::from(s.strip_prefix(needle()?).unwrap_or(s)),
            "removesuffix" => Value::from(s.strip_suffix(needle()?).unwrap_or(s)),
            "islower" => Value::from(cased(char::is_lowercase, char::is_uppercase)),
            "isupper" => Value::from(cased(char::is_uppercase, char::is_lowercase)),
            "isspace" => Value::from(!s.is_empty() && s.chars().all(py_space)),
            "isalpha" => Value::from(!s.is_empty() && s.chars().all(char::is_alphabetic)),
            "isalnum" => Value::from(!s.is_empty() && s.chars().all(char::is_alphanumeric)),
            "isdigit" | "isnumeric" | "isdecimal" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_numeric())),
            "join" => {
                let mut parts = Vec::new();
                for item in args
                    .first()
                    .ok_or_else(|| Error::from(ErrorKind::MissingArgument))?
                    .try_iter()?
                {
                    match item.as_str() {
                        Some(p) => parts.push(p.to_string()),
                        None => {
                            return Err(Error::new(
                                ErrorKind::InvalidOperation,
                                format!(
                                    "str.join: sequence item {}: expected str instance, {} found",
                                    parts.len(),
                                    item.kind()
                                ),
                            ))
                        }
                    }
                }
                Value::from(parts.join(s))
            }
            _ => return minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
        };
        return Ok(rv);
    }
    if value.kind() == ValueKind::Seq && method == "index" {
        let want = args.first().ok_or_else(|| Error::from(ErrorKind::MissingArgument))?;
        let at = value.try_iter()?.position(|x| &x == want);
        return at
            .map(Value::from)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "list.index: value is not in list"));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// `str.split(sep=None, maxsplit=-1)` / `str.rsplit`: without `sep`, runs of whitespace with the
/// ends stripped; with one, every occurrence (an empty `sep` is an error, as in Python).
fn py_split(s: &str, sep: Option<&str>, maxsplit: i64, from_right: bool) -> Result<Value, Error> {
    let limit = if maxsplit < 0 { usize::MAX } else { maxsplit as usize };
    let mut parts: Vec<String> = Vec::new();
    match sep {
        Some("") => return Err(Error::new(ErrorKind::InvalidOperation, "str.split: empty separator")),
        Some(sep) if from_right => parts = s.rsplitn(limit.saturating_add(1), sep).map(String::from).collect(),
        Some(sep) => parts = s.splitn(limit.saturating_add(1), sep).map(String::from).collect(),
        None => {
            // Split off up to `limit` words from one end; the rest, stripped at that end only, is the last part.
            let chars: Vec<char> = if from_right {
                s.chars().rev().collect()
            } else {
                s.chars().collect()
            };
            let mut i = 0;
            while i < chars.len() {
                while i < chars.len() && py_space(chars[i]) {
                    i += 1;
                }
                if i == chars.len() {
                    break;
                }
                if parts.len() == limit {
                    parts.push(chars[i..].iter().collect());
                    break;
                }
                let start = i;
                while i < chars.len() && !py_space(chars[i]) {
                    i += 1;
                }
                parts.push(chars[start..i].iter().collect());
            }
            if from_right {
                parts = parts.into_iter().map(|p| p.chars().rev().collect()).collect();
            }
        }
    }
    if from_right {
        parts.reverse();
    }
    Ok(Value::from(parts))
}
