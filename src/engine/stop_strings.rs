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
