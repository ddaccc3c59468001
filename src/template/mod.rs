//! Chat templates rendered as Hugging Face transformers renders them. transformers compiles a
//! template in a jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with
//! the `loopcontrols` extension, its `{% generation %}` tag, the globals `raise_exception` and
//! `strftime_now`, and its own `tojson` (`json.dumps(x, ensure_ascii=False, ...)`). Here the
//! same template runs on minijinja, with what differs from jinja2 put back: values print as
//! Python's `str()` does (`None`, `True`, `{'a': 1}`, `1e+16`), `tojson` is `json.dumps`, string
//! methods follow Python (character offsets, `str.title`, `split()` on whitespace runs), `length`
//! of an undefined value is 0, string literals unescape as Python's (`\<newline>`) and
//! `{% generation %}` renders its body; `replace`, `int`, `float` and `round` take jinja2's
//! arguments (filters.rs). What is left (tests/templates.rs lists each as a known
//! difference): tuples are lists (`(1, 2)` prints `[1, 2]` and equals `[1, 2]`), iterating over
//! `none` gives nothing where Python raises, `tojson` of a generator works, and `~` writes floats,
//! lists and dicts as minijinja does (`1e20` as `100000000000000000000.0`); Python's `'%s' % x`
//! formatting is an error (minijinja has no hook for the operator).
//! tests/templates.rs compares renders byte for byte with jinja2's (scripts/make-template-cases.py).

use anyhow::{anyhow, Result};
use chrono::{NaiveDateTime, Timelike};
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;
use std::fmt::Write;

mod filters;
mod python;
use python::{escape, indent, jinja_title, join, length, py_str, py_strip, python_method, tojson, truncate};

/// Most template instructions one chat render may run before it is stopped as runaway. SmolLM2's
/// ChatML template renders 1000 messages well within it (see tokenizer.rs's test); a nested loop
/// of 10^5 × 10^5 is stopped in well under a second.
const TEMPLATE_FUEL: u64 = 2_000_000;

/// Render `source` with `context` (a JSON object: `messages`, `tools`, `add_generation_prompt`,
/// special tokens, extra variables; key order kept). `now` is what `strftime_now` formats: the
/// local time when `None`, as transformers' `datetime.now()`; a fixed time pins it for tests.
pub fn render(source: &str, context: &Json, now: Option<NaiveDateTime>) -> Result<String> {
    if !context.is_object() {
        return Err(anyhow!(
            "the chat template context must be a JSON object, not {context}"
        ));
    }
    let now = now.unwrap_or_else(|| chrono::Local::now().naive_local());
    let env = environment(now);
    let source = translate_source(source);
    let template = env
        .template_from_str(&source)
        .map_err(|e| anyhow!("the model's chat template does not parse: {e}"))?;
    template
        .render(Value::from_serialize(context))
        .map_err(|e| anyhow!("rendering the chat template failed: {e}"))
}

/// transformers' environment, on minijinja.
fn environment(now: NaiveDateTime) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // A template from a model directory is untrusted: bound the work it may do (a real chat
    // template uses a few thousand instructions per message).
    env.set_fuel(Some(TEMPLATE_FUEL));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(python_method);
    env.set_formatter(|out, _state, value| {
        out.write_str(&py_str(value))
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", move |fmt: &str| strftime(now, fmt));
    env.add_filter("tojson", tojson);
    env.add_filter("string", |v: &Value| py_str(v));
    env.add_filter("join", join);
    env.add_filter("length", length);
    env.add_filter("count", length);
    env.add_filter("title", |s: &str| jinja_title(s));
    env.add_filter("trim", |s: &str, chars: Option<&str>| {
        py_strip(s, chars, true, true).to_string()
    });
    env.add_filter("indent", indent);
    env.add_filter("center", |s: &str, width: Option<usize>| {
        let n = s.chars().count();
        let width = width.unwrap_or(80);
        let pad = width.saturating_sub(n);
        // Python's str.center: the odd space goes left when the width is odd.
        let left = pad / 2 + (pad & width & 1);
        format!("{}{s}{}", " ".repeat(left), " ".repeat(pad - left))
    });
    env.add_filter("wordcount", |s: &str| {
        // jinja2: len(re.findall(r"\w+", s)).
        let word = |c: char| c.is_alphanumeric() || c == '_';
        s.split(|c: char| !word(c)).filter(|w| !w.is_empty()).count()
    });
    // jinja2's tests: a str or a dict is a sequence (it has a length and items); a bool is a number.
    env.add_test("sequence", |v: &Value| {
        matches!(v.kind(), ValueKind::String | ValueKind::Seq | ValueKind::Map)
    });
    env.add_test("number", |v: &Value| {
        matches!(v.kind(), ValueKind::Number | ValueKind::Bool)
    });
    env.add_filter("truncate", truncate);
    env.add_filter("replace", filters::replace);
    env.add_filter("int", filters::int);
    env.add_filter("float", filters::float);
    env.add_filter("round", filters::round);
    env.add_filter("escape", escape);
    env.add_filter("e", escape);
    env
}

/// The two lexical differences between jinja2 and minijinja, translated in the source. Inside
/// a tag's string literals, escapes minijinja reads otherwise are rewritten as Python reads them
/// (`\\<newline>` is nothing, `\\/` keeps its backslash, `\\a` `\\v` `\\U0001F600` are
/// characters). transformers' `{% generation %}…{% endgeneration %}` (the assistant-mask tracker)
/// renders its body unchanged; minijinja has no custom tags, so the two tags become
/// `{% if true %}` and `{% endif %}` with the same whitespace markers, which trim as the originals.
fn translate_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find(['{']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let close = match rest.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => {
                let end = rest.find("#}").map_or(rest.len(), |e| e + 2);
                out.push_str(&rest[..end]);
                rest = &rest[end..];
                continue;
            }
            _ => {
                out.push('{');
                rest = &rest[1..];
                continue;
            }
        };
        // The tag runs to `close` outside string literals.
        let mut tag = String::new();
        let mut chars = rest[2..].char_indices().peekable();
        let mut quote = None;
        let mut end = rest.len();
        let mut closed = false;
        while let Some((i, c)) = chars.next() {
            match quote {
                None if rest[2 + i..].starts_with(close) => {
                    end = 2 + i + 2;
                    closed = true;
                    break;
                }
                None => {
                    if c == '"' || c == '\'' {
                        quote = Some(c);
                    }
                    tag.push(c);
                }
                Some(_) if c == '\\' => match chars.next().map(|(_, d)| d) {
                    Some('\n') => {}
                    Some('/') => tag.push_str("\\\\/"),
                    Some('a') => tag.push_str("\\u0007"),
                    Some('v') => tag.push_str("\\u000b"),
                    Some('U') => {
                        let hex: String = (0..8).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(ch) if hex.len() == 8 => tag.push(ch),
                            _ => {
                                tag.push_str("\\U");
                                tag.push_str(&hex);
                            }
                        }
                    }
                    Some(d) => {
                        tag.push('\\');
                        tag.push(d);
                    }
                    None => tag.push('\\'),
                },
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                    tag.push(c);
                }
            }
        }
        let open = &rest[..2];
        if close == "%}" {
            let inner = tag.strip_prefix(['-', '+']).unwrap_or(&tag);
            let lead = &tag[..tag.len() - inner.len()];
            let body = inner.strip_suffix(['-', '+']).unwrap_or(inner);
            let trail = &inner[body.len()..];
            match body.trim() {
                "generation" => tag = format!("{lead} if true {trail}"),
                "endgeneration" => tag = format!("{lead} endif {trail}"),
                _ => {}
            }
        }
        out.push_str(open);
        out.push_str(&tag);
        if closed {
            out.push_str(close);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Python's `datetime.strftime` on a naive datetime (what `datetime.now()` gives): the C-locale
/// specifiers through chrono, `%f` as microseconds, `%z`/`%Z` empty; glibc's `-`/`_`/`0` padding
/// flags kept. Anything else is a clear error rather than a different text.
fn strftime(now: NaiveDateTime, fmt: &str) -> Result<String, Error> {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::from("%");
        let mut next = chars.next();
        if let Some(flag @ ('-' | '_' | '0')) = next {
            spec.push(flag);
            next = chars.next();
        }
        match next {
            Some('%') if spec.len() == 1 => out.push('%'),
            Some('f') if spec.len() == 1 => write!(out, "{:06}", now.nanosecond() / 1000).unwrap_or(()),
            Some('z' | 'Z') if spec.len() == 1 => {}
            Some(s) if "aAbBcCdDeFgGhHIjklmMnpPrRStTuUVwWxXyY".contains(s) => {
                spec.push(s);
                write!(out, "{}", now.format(&spec)).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("strftime_now: cannot format {spec}"),
                    )
                })?;
            }
            other => {
                let s = other.map(String::from).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: the format {spec}{s} is not supported (in {fmt:?})"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn date() -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2025, 3, 7)
            .unwrap()
            .and_hms_micro_opt(9, 5, 4, 123)
            .unwrap()
    }

    fn run(src: &str, ctx: Json) -> String {
        render(src, &ctx, Some(date())).unwrap_or_else(|e| format!("ERROR: {e}"))
    }

    /// The issue's input: json.dumps keeps `<`, `&`, `>` as they are.
    #[test]
    fn tojson_does_not_escape_html() {
        let ctx = json!({"message": {"content": "Is <b>5 & 6</b> > 4?"}});
        assert_eq!(
            run("{{ message['content'] | tojson }}", ctx),
            "\"Is <b>5 & 6</b> > 4?\""
        );
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let ctx = json!({"x": {"b": 1.0, "a": [1, "é", null, true], "c": {}}});
        assert_eq!(
            run("{{ x|tojson }}", ctx.clone()),
            r#"{"b": 1.0, "a": [1, "é", null, true], "c": {}}"#
        );
        assert_eq!(
            run("{{ x|tojson(indent=2) }}", ctx.clone()),
            "{\n  \"b\": 1.0,\n  \"a\": [\n    1,\n    \"é\",\n    null,\n    true\n  ],\n  \"c\": {}\n}"
        );
        assert_eq!(
            run("{{ x|tojson(sort_keys=true, separators=(',', ':')) }}", ctx.clone()),
            r#"{"a":[1,"é",null,true],"b":1.0,"c":{}}"#
        );
        assert_eq!(
            run("{{ x.a|tojson(ensure_ascii=true) }}", ctx),
            r#"[1, "\u00e9", null, true]"#
        );
        assert_eq!(
            run("{{ [1e16, 1e-5, 0.5, 123456789.0]|tojson }}", json!({})),
            "[1e+16, 1e-05, 0.5, 123456789.0]"
        );
    }

    /// Llama 3's guarded form must take the strftime_now branch, with Python's formatting.
    #[test]
    fn strftime_now_is_defined_and_formats_like_python() {
        let src = "{% if strftime_now is defined %}{{ strftime_now('%d %b %Y') }}{% else %}26 Jul 2024{% endif %}";
        assert_eq!(run(src, json!({})), "07 Mar 2025");
        let all = "{{ strftime_now('%d %B %Y|%b %m %H:%M:%S|%A %a|%e|%j %y|%-d %I%p %f %% %z%Z') }}";
        assert_eq!(
            run(all, json!({})),
            "07 March 2025|Mar 03 09:05:04|Friday Fri| 7|066 25|7 09AM 000123 % "
        );
        assert!(run("{{ strftime_now('%Q') }}", json!({})).contains("%Q is not supported"));
    }

    #[test]
    fn values_print_as_python_str() {
        let ctx = json!({"m": {"content": null, "ok": true, "args": {"city": "Paris", "n": [1, 2.5]}}});
        assert_eq!(
            run(
                "{{ m.content }}|{{ m.ok }}|{{ m.args }}|{{ m.args|string }}|{{ m.nope }}",
                ctx
            ),
            "None|True|{'city': 'Paris', 'n': [1, 2.5]}|{'city': 'Paris', 'n': [1, 2.5]}|"
        );
    }

    #[test]
    fn generation_tags_render_their_body() {
        let src = "{% for m in messages %}{% generation %}\n{{ m }}{%- endgeneration %}\n{% endfor %}";
        assert_eq!(run(src, json!({"messages": ["a", "b"]})), "ab");
    }

    #[test]
    fn raise_exception_is_an_error_with_its_message() {
        let out = run("{{ raise_exception('roles must alternate') }}", json!({}));
        assert!(
            out.starts_with("ERROR") && out.contains("roles must alternate"),
            "{out}"
        );
    }
}
