//! Stop strings (src/engine/stop_strings.rs): text held back while it may still become a stop
//! string, the stop never printed, across token boundaries.

use proptest::prelude::*;
use tinfer::engine::stop_strings::*;

/// The slow twin: the whole text, cut before the stop string completed first (the longest
/// of those that complete at the same place).
fn reference(text: &str, stops: &[String]) -> (String, bool) {
    let stops: Vec<&String> = stops.iter().filter(|s| !s.is_empty()).collect();
    let first = stops
        .iter()
        .filter_map(|s| {
            text.find(s.as_str())
                .map(|at| (at + s.len(), std::cmp::Reverse(s.len())))
        })
        .min();
    match first {
        Some((end, std::cmp::Reverse(len))) => (text[..end - len].to_string(), true),
        None => (text.to_string(), false),
    }
}

fn stream(pieces: &[String], stops: &[String]) -> (String, bool) {
    let mut m = StopStrings::new(stops);
    let mut out = String::new();
    for p in pieces {
        out += &m.push(p);
    }
    out += &m.finish();
    (out, m.hit())
}

#[test]
fn holds_back_a_partial_stop_and_drops_the_stop() {
    let stops = vec!["\nUser:".to_string()];
    let mut m = StopStrings::new(&stops);
    assert_eq!(m.push("Hello"), "Hello");
    assert_eq!(m.push(" world\nUs"), " world", "the tail \\nUs may begin the stop");
    assert_eq!(
        m.push("er: hi"),
        "",
        "the stop string and what follows are never released"
    );
    assert!(m.hit());
    assert_eq!(m.push("more"), "");
    let mut m = StopStrings::new(&stops);
    assert_eq!(m.push("a\nU"), "a");
    assert_eq!(m.push("nix"), "\nUnix", "a false start is released");
    assert_eq!(m.finish(), "");
}

#[test]
fn multibyte_text_and_stops() {
    let stops = vec!["ü!".to_string(), "日本".to_string()];
    assert_eq!(
        stream(&["grüß ü".into(), "!x".into()], &stops),
        ("grüß ".to_string(), true)
    );
    assert_eq!(
        stream(&["日".into(), "曜日".into()], &stops),
        ("日曜日".to_string(), false)
    );
}

proptest! {
    /// Any split of any text into pieces gives what cutting the whole text gives.
    #[test]
    fn streaming_equals_cutting_the_whole_text(
        text in "[ab\\nü]{0,40}",
        stops in prop::collection::vec("[ab\\nü]{0,4}", 0..3),
        cuts in prop::collection::vec(0usize..41, 0..8),
    ) {
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len() && text.is_char_boundary(c)).collect();
        bounds.extend([0, text.len()]);
        bounds.sort();
        bounds.dedup();
        let pieces: Vec<String> = bounds.windows(2).map(|w| text[w[0]..w[1]].to_string()).collect();
        prop_assert_eq!(stream(&pieces, &stops), reference(&text, &stops));
    }
}
