//! Chat templates rendered by tinfer against what jinja2 renders in transformers' environment,
//! byte for byte: real models' templates (tests/fixtures/templates/*.jinja, sources in the README
//! there) on plain, multilingual and tool-calling chats, and one small template per jinja2 feature
//! and Python method that templates use. The expected texts come from
//! scripts/make-template-cases.py (jinja2 3.1.6); no Python, network or ../shared is needed here.

use std::path::Path;

use serde_json::Value as Json;

/// Where two texts first differ, with some context around it, for the failure message.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |s: &str| {
        let (mut lo, mut hi) = (at.saturating_sub(60).min(s.len()), (at + 60).min(s.len()));
        while !s.is_char_boundary(lo) {
            lo -= 1;
        }
        while !s.is_char_boundary(hi) {
            hi += 1;
        }
        format!("{:?}", &s[lo..hi])
    };
    format!(
        "first difference at byte {at} (lengths {} vs {}):\n    tinfer: {}\n    jinja2: {}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    )
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("tests/fixtures/templates/cases.json");
    let cases: Json = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = cases["cases"].as_array().expect("cases.json has a cases array");
    assert!(cases.len() > 50, "cases.json holds only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let source = match (case["template"].as_str(), case["template_file"].as_str()) {
            (Some(t), _) => t.to_string(),
            (None, Some(f)) => {
                std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{name}: cannot read {f}: {e}"))
            }
            _ => panic!("{name}: the case has neither template nor template_file"),
        };
        let now = chrono::NaiveDateTime::parse_from_str(case["now"].as_str().unwrap_or(""), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap_or_else(|e| panic!("{name}: bad now: {e}"));
        let got = tinfer::template::render(&source, &case["context"], Some(now));
        if case["known_difference"].as_bool() == Some(true) {
            // Left unmatched on purpose (see the README there): it must still differ, so the list
            // of differences stays true; a fix moves the case out of it.
            let same = match (&got, case["expected"].as_str()) {
                (Ok(g), Some(w)) => g == w,
                (Err(_), None) => true,
                _ => false,
            };
            if same {
                failures.push(format!(
                    "{name}: listed as a known difference but now renders as jinja2 does"
                ));
            }
            continue;
        }
        match (&got, case["expected"].as_str()) {
            (Ok(got), Some(want)) if got == want => {}
            (Ok(got), Some(want)) => failures.push(format!("{name}: {}", first_difference(got, want))),
            (Err(e), Some(_)) => failures.push(format!("{name}: jinja2 renders it, tinfer fails: {e:#}")),
            (Ok(got), None) => failures.push(format!(
                "{name}: jinja2 fails ({}), tinfer renders {got:?}",
                case["error_kind"].as_str().unwrap_or("?")
            )),
            (Err(e), None) => {
                // raise_exception's message must come through; other jinja2 failures only need to fail.
                if let Some(msg) = case["error"].as_str() {
                    if !format!("{e:#}").contains(msg) {
                        failures.push(format!("{name}: the error {e:#} does not say {msg:?}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from jinja2:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
