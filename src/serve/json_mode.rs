//! `response_format: {"type": "json_object"}`: constrained decoding to one JSON object (RFC 8259).
//! Before each sampled token, every token whose text would make the output stop being the
//! start of a JSON object is masked; once the object closes only the end token (or whitespace)
//! may follow. A pushdown automaton over characters (`Parser`) decides; each token's text is
//! decoded once when the server starts.

use std::sync::Arc;

use tinfer::engine::Constraint;
use tinfer::tokenizer::Tokenizer;

/// Where the parser stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum At {
    Start,                         // before the top-level '{'
    KeyOrClose,                    // after '{': a key or '}'
    Key,                           // after ',' in an object: a key
    Colon,                         // after a key
    Value,                         // after ':' or ',' in an array: a value
    ValueOrClose,                  // after '[': a value or ']'
    After,                         // after a value: ',', or the closing bracket
    Str { key: bool, escape: u8 }, // in a string; escape: 1 after '\', 2..=5 hex digits left + 1
    Num(u8),                       // in a number (see `number`)
    Word(&'static [u8], u8),       // in true / false / null, this many letters read
    Done,                          // the object closed
}

/// A JSON-object prefix checker: feed characters; `false` when one cannot continue a valid text.
#[derive(Clone, Debug)]
struct Parser {
    at: At,
    stack: Vec<u8>, // open '{' and '['
    ws: usize,      // whitespace characters in a row outside strings (capped: see MAX_WS)
}

/// Most whitespace characters in a row outside strings (a newline and an indent; before the
/// object, 2), so that a model cannot pad forever (llama.cpp's JSON grammar caps it too).
const MAX_WS: usize = 24;

// number states: 0 after '-', 1 a leading 0, 2 integer digits, 3 after '.', 4 fraction digits,
// 5 after e/E, 6 after its sign, 7 exponent digits; 1, 2, 4, 7 may end the number
fn number(state: u8, c: char) -> Option<u8> {
    let digit = c.is_ascii_digit();
    Some(match (state, c) {
        (0, '0') => 1,
        (0, _) if digit => 2,
        (2, _) if digit => 2,
        (1 | 2, '.') => 3,
        (3 | 4, _) if digit => 4,
        (1 | 2 | 4, 'e' | 'E') => 5,
        (5, '+' | '-') => 6,
        (5..=7, _) if digit => 7,
        _ => return None,
    })
}

impl Parser {
    fn new() -> Self {
        Parser {
            at: At::Start,
            stack: vec![],
            ws: 0,
        }
    }

    fn value_done(&mut self) {
        self.at = if self.stack.is_empty() { At::Done } else { At::After };
    }

    fn feed(&mut self, c: char) -> bool {
        let ws = matches!(c, ' ' | '\t' | '\n' | '\r');
        if !ws {
            self.ws = 0;
        }
        match self.at {
            At::Str { key, escape } => {
                self.at = match (escape, c) {
                    (0, '"') if key => At::Colon,
                    (0, '"') => {
                        self.value_done();
                        return true;
                    }
                    (0, '\\') => At::Str { key, escape: 1 },
                    (0, c) if (c as u32) < 0x20 => return false,
                    (0, _) => At::Str { key, escape: 0 },
                    (1, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => At::Str { key, escape: 0 },
                    (1, 'u') => At::Str { key, escape: 5 },
                    (2..=5, c) if c.is_ascii_hexdigit() => At::Str {
                        key,
                        escape: if escape == 2 { 0 } else { escape - 1 },
                    },
                    _ => return false,
                };
                true
            }
            At::Num(n) => match number(n, c) {
                Some(n) => {
                    self.at = At::Num(n);
                    true
                }
                None if matches!(n, 1 | 2 | 4 | 7) => {
                    self.value_done();
                    self.feed(c)
                }
                None => false,
            },
            At::Word(w, i) => {
                if w.get(i as usize) != Some(&(c as u8)) || !c.is_ascii() {
                    return false;
                }
                if i as usize + 1 == w.len() {
                    self.value_done();
                } else {
                    self.at = At::Word(w, i + 1);
                }
                true
            }
            _ if ws => {
                self.ws += 1;
                self.ws <= if self.at == At::Start { 2 } else { MAX_WS }
            }
            At::Start | At::Done if c != '{' || self.at == At::Done => false,
            At::KeyOrClose | At::Key if c == '"' => {
                self.at = At::Str { key: true, escape: 0 };
                true
            }
            At::Colon if c == ':' => {
                self.at = At::Value;
                true
            }
            At::After if c == ',' => {
                self.at = if self.stack.last() == Some(&b'{') {
                    At::Key
                } else {
                    At::Value
                };
                true
            }
            At::KeyOrClose | At::ValueOrClose | At::After if matches!(c, '}' | ']') => {
                let want = if c == '}' { b'{' } else { b'[' };
                if self.stack.pop() != Some(want)
                    || (self.at == At::KeyOrClose && c != '}')
                    || (self.at == At::ValueOrClose && c != ']')
                {
                    return false;
                }
                self.value_done();
                true
            }
            At::Start | At::Value | At::ValueOrClose => {
                self.at = match c {
                    '{' => {
                        self.stack.push(b'{');
                        At::KeyOrClose
                    }
                    '[' => {
                        self.stack.push(b'[');
                        At::ValueOrClose
                    }
                    '"' => At::Str { key: false, escape: 0 },
                    '-' => At::Num(0),
                    '0'..='9' => At::Num(number(0, c).unwrap()),
                    't' => At::Word(b"true", 1),
                    'f' => At::Word(b"false", 1),
                    'n' => At::Word(b"null", 1),
                    _ => return false,
                };
                true
            }
            _ => false,
        }
    }
}

/// The constraint: each token's text, and the end tokens (allowed only once the object closed).
pub struct JsonObject {
    pieces: Vec<String>,
    eos: Vec<u32>,
}

impl JsonObject {
    pub fn new(tok: &Tokenizer, vocab: usize, eos: &[u32]) -> Arc<Self> {
        let pieces = (0..vocab as u32)
            .map(|id| tok.decode(&[id], false).unwrap_or_default())
            .collect();
        Arc::new(JsonObject {
            pieces,
            eos: eos.to_vec(),
        })
    }
}

impl Constraint for JsonObject {
    fn mask(&self, output: &[u32], logits: &mut [f32]) {
        let mut p = Parser::new();
        for &t in output {
            for c in self.pieces.get(t as usize).map_or("", String::as_str).chars() {
                p.feed(c);
            }
        }
        for (id, l) in logits.iter_mut().enumerate() {
            if *l == f32::NEG_INFINITY {
                continue;
            }
            let ok = if self.eos.contains(&(id as u32)) {
                p.at == At::Done
            } else {
                let piece = &self.pieces[id];
                let mut q = p.clone();
                !piece.is_empty() && piece.chars().all(|c| q.feed(c))
            };
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_ok(s: &str) -> Option<bool> {
        let mut p = Parser::new();
        s.chars().all(|c| p.feed(c)).then_some(p.at == At::Done)
    }

    #[test]
    fn json_objects_and_their_prefixes() {
        for whole in [
            r#"{}"#,
            r#" {"a": 1}"#,
            r#"{"a": [1, -2.5e+3, 0, true, false, null, "x\"\u00e9"], "b": {"c": []}}"#,
            "{\"k\": \"multi word \\n text\"}\n",
        ] {
            assert_eq!(prefix_ok(whole), Some(true), "{whole}");
            for cut in 0..whole.len() {
                if whole.is_char_boundary(cut) && !whole[cut..].trim().is_empty() {
                    assert_eq!(prefix_ok(&whole[..cut]), Some(false), "prefix {:?}", &whole[..cut]);
                }
            }
        }
        for bad in [
            "[1]",
            "1",
            "\"a\"",
            "{a",
            "{\"a\" 1",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":01}",
            "{\"a\":1]",
            "{\"a\":[1}",
            "{\"a\":tru}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":1}x",
            "{\"a\":\"\\x\"}",
            "{\"a\":-}",
            "{\"a\":1.}",
        ] {
            assert_ne!(prefix_ok(bad), Some(true), "{bad:?} accepted");
        }
        assert_eq!(prefix_ok("{\"a\":tru}"), None);
        assert_eq!(prefix_ok("{\"a\":1.5"), Some(false), "a number that may go on");
        assert_eq!(prefix_ok("   {"), None, "padding before the object");
        assert_eq!(
            prefix_ok(&format!("{{\"a\":{}1}}", " ".repeat(MAX_WS + 1))),
            None,
            "padding"
        );
        assert_eq!(
            prefix_ok(&format!("{{\"a\":\"{}\"}}", " ".repeat(99))),
            Some(true),
            "spaces in a string"
        );
    }
}
