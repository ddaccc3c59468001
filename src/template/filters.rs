//! jinja2's filters whose minijinja twins take other arguments or convert differently:
//! `replace(old, new, count)`, `int(default, base)`, `float(default)` and
//! `round(precision, method)`, as jinja2 3.1's `filters.py` defines them on Python's `str.replace`,
//! `int()`, `float()` and `round()`.

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// `s|replace(old, new, count=-1)`: Python's `str.replace` (count < 0: every occurrence).
pub fn replace(s: &str, old: &str, new: &str, count: Option<i64>) -> String {
    match count {
        Some(n) if n >= 0 => s.replacen(old, new, n as usize),
        _ => s.replace(old, new),
    }
}

/// Python's `int(text, base)` for base 10 or 2..=36 (0: from the prefix): surrounding
/// whitespace, a sign, `_` between digits, and a `0x`/`0o`/`0b` prefix when it fits the base.
fn parse_int(text: &str, base: u32) -> Option<i64> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let prefixed = |p: &str, b: u32| (base == b || base == 0) && lower.starts_with(p);
    let (digits, base) = if prefixed("0x", 16) {
        (&t[2..], 16)
    } else if prefixed("0o", 8) {
        (&t[2..], 8)
    } else if prefixed("0b", 2) {
        (&t[2..], 2)
    } else {
        (t, if base == 0 { 10 } else { base })
    };
    let digits = digits
        .strip_prefix('_')
        .filter(|_| digits.len() != t.len())
        .unwrap_or(digits);
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    let v = i64::from_str_radix(&digits.replace('_', ""), base).ok()?;
    Some(if neg { -v } else { v })
}

/// Python's `float(text)`: whitespace, `_` between digits, `inf`/`nan` in any case.
fn parse_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    let t = t.replace('_', "");
    match t.to_ascii_lowercase().trim_start_matches(['+', '-']) {
        "inf" | "infinity" | "nan" => t.to_ascii_lowercase().replace("infinity", "inf").parse().ok(),
        _ if t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => t.parse().ok(),
        _ => None,
    }
}

/// `v|int(default=0, base=10)`: jinja2's `do_int`: a string through `int(v, base)`, else through
/// `int(float(v))`; a number truncated; anything else, or a failure, gives `default`.
pub fn int(v: &Value, default: Option<Value>, base: Option<u32>) -> Result<Value, Error> {
    let default = default.unwrap_or(Value::from(0));
    let base = base.unwrap_or(10);
    if base == 1 || base > 36 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "int() base must be >= 2 and <= 36, or 0",
        ));
    }
    Ok(match v.kind() {
        ValueKind::Bool => Value::from(v.is_true() as i64),
        ValueKind::Number => match i64::try_from(v.clone()) {
            Ok(i) => Value::from(i),
            Err(_) => f64::try_from(v.clone())
                .ok()
                .filter(|f| f.is_finite())
                .map_or(default, |f| Value::from(f.trunc() as i64)),
        },
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            match parse_int(s, base) {
                Some(i) => Value::from(i),
                None if base == 10 => parse_float(s)
                    .filter(|f| f.is_finite())
                    .map_or(default, |f| Value::from(f.trunc() as i64)),
                None => default,
            }
        }
        _ => default,
    })
}

/// `v|float(default=0.0)`: jinja2's `do_float`, Python's `float(v)` or `default`.
pub fn float(v: &Value, default: Option<Value>) -> Value {
    let default = default.unwrap_or(Value::from(0.0));
    match v.kind() {
        ValueKind::Bool => Value::from(v.is_true() as i64 as f64),
        ValueKind::Number => f64::try_from(v.clone()).map_or(default, Value::from),
        ValueKind::String => parse_float(v.as_str().unwrap_or_default()).map_or(default, Value::from),
        _ => default,
    }
}

/// `v|round(precision=0, method='common')`: jinja2's `do_round`. 'common' is Python's `round`
/// (the exact binary value rounded, ties to even: `2.5|round` is 2.0, `2.675|round(2)` 2.67);
/// 'ceil' and 'floor' act on `v * 10**precision`. Always a float.
pub fn round(v: f64, precision: Option<i32>, method: Option<&str>) -> Result<f64, Error> {
    let p = precision.unwrap_or(0);
    let scale = 10f64.powi(p);
    Ok(match method.unwrap_or("common") {
        "common" if p >= 0 && v.is_finite() => format!("{v:.prec$}", prec = p as usize).parse().unwrap_or(v),
        "common" => (v * scale).round_ties_even() / scale,
        "ceil" => (v * scale).ceil() / scale,
        "floor" => (v * scale).floor() / scale,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("round: method must be 'common', 'ceil' or 'floor', not {other:?}"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_conversions() {
        assert_eq!(replace("aXbXc", "X", "-", Some(1)), "a-bXc");
        assert_eq!(replace("abc", "", "-", Some(2)), "-a-bc");
        assert_eq!(replace("abc", "", "-", None), "-a-b-c-");
        let i = |s: &str, base| int(&Value::from(s), None, base).unwrap().to_string();
        assert_eq!(
            [i("x", None), i(" 42 ", None), i("1_000", None), i("-7.9", None)],
            ["0", "42", "1000", "-7"]
        );
        assert_eq!(
            [
                i("ff", Some(16)),
                i("0x1F", Some(0)),
                i("0b101", Some(2)),
                i("1__0", None)
            ],
            ["255", "31", "5", "0"]
        );
        assert_eq!(
            int(&Value::from("x"), Some(Value::from(7)), None).unwrap().to_string(),
            "7"
        );
        assert_eq!(float(&Value::from("abc"), None).to_string(), "0.0");
        assert_eq!(float(&Value::from(" 1_0.5 "), None).to_string(), "10.5");
        assert_eq!(round(2.5, None, None).unwrap(), 2.0);
        assert_eq!(round(3.5, None, None).unwrap(), 4.0);
        assert_eq!(round(2.675, Some(2), None).unwrap(), 2.67);
        assert_eq!(round(2.1, Some(0), Some("ceil")).unwrap(), 3.0);
        assert_eq!(round(-2.1, Some(0), Some("floor")).unwrap(), -3.0);
        assert!(round(1.0, None, Some("up")).is_err());
    }
}
