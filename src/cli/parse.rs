//! Small parsers of command-line values: sizes with units, llama-cli's escapes.

/// "4096", "64KiB", "256MiB", "2GiB" (also KB/MB/GB, as powers of 1024) -> bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// A string with llama-cli's escapes (`string_process_escapes`): \n, \r, \t, \\, \", \' and
/// \xHH (a byte; the result must be UTF-8); any other backslash stays as it is.
pub fn process_escapes(s: &str) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (byte, len) = match b[i + 1] {
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'\\' => (b'\\', 2),
            b'"' => (b'"', 2),
            b'\'' => (b'\'', 2),
            b'x' => match s.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(byte) => (byte, 4),
                None => (b'\\', 1),
            },
            _ => (b'\\', 1),
        };
        out.push(byte);
        i += len;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: its \\x escapes do not make UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::process_escapes;

    #[test]
    fn llama_cli_escapes() {
        assert_eq!(process_escapes(r"\n\n").unwrap(), "\n\n");
        assert_eq!(process_escapes(r#"a\tb\\c\"d\'e\r"#).unwrap(), "a\tb\\c\"d'e\r");
        assert_eq!(process_escapes(r"\x41\x7a").unwrap(), "Az");
        assert_eq!(
            process_escapes(r"\q \x4 end\").unwrap(),
            r"\q \x4 end\",
            "unknown escapes stay"
        );
        assert_eq!(process_escapes("ü\\n").unwrap(), "ü\n");
        assert!(process_escapes(r"\xff").is_err(), "not UTF-8");
        assert_eq!(process_escapes("").unwrap(), "");
    }
}
