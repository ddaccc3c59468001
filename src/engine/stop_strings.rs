//! Stop strings (`--stop`, OpenAI's `stop`): generated text is released as it streams, except a
//! tail that could still be the start of a stop string; when a stop string is completed, the
//! text before it is the last released and the stop string itself never is (llama.cpp's server
//! and vLLM drop it the same way). The stop that completes first wins, however the text was cut
//! into pieces.

/// Text-level stop matching over a stream of decoded pieces.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String, // text received but not released: a possible start of a stop string
    hit: bool,
}

impl StopStrings {
    /// Stop at the first occurrence of any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            hit: false,
        }
    }

    /// Whether a stop string has been seen (nothing more is released after it).
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Take the next piece of text; returns the text that can be released now. After a hit,
    /// returns the text before the stop string once and then nothing.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        let start = self.held.len();
        self.held.push_str(piece);
        // The first stop string to be completed, scanning the new text's ends in order (the
        // held text before it completed none); at one end, the longest stop that ends there.
        let ends = (start + 1..=self.held.len()).filter(|&e| self.held.is_char_boundary(e));
        for end in ends {
            let head = &self.held[..end];
            if let Some(len) = self
                .stops
                .iter()
                .filter(|s| head.ends_with(s.as_str()))
                .map(String::len)
                .max()
            {
                self.hit = true;
                let out = self.held[..end - len].to_string();
                self.held.clear();
                return out;
            }
        }
        // Hold back the longest tail of the text that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// The end of the stream: whatever is still held back (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`, on
/// character boundaries of both.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
