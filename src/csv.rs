//! CSV text as RFC 4180 defines it: fields with a comma, a quote or a line break are quoted, a
//! quote inside doubled. tenpak writes tables (`analyze`, `eval sweep`) and reads other tools'
//! points (`eval sweep --reference-points`) this way, so that codec specs such as
//! `grid:n=16,group=32` stay one field.
//!
//! Hand-written: the `csv` crate is not among this build's vendored dependencies, and a quoted
//! field writer plus a record reader are all tenpak needs.

use std::borrow::Cow;

/// `v` as one CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break.
pub fn field(v: &str) -> Cow<'_, str> {
    if v.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", v.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(v)
    }
}

/// The records of CSV `text`, each with the line it starts on (1-based). Line ends may be LF or
/// CRLF; a quoted field may span lines. A quote that opens or closes in the wrong place is an
/// error naming the line.
pub fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut fieldbuf = String::new();
    let (mut line, mut start) = (1usize, 1usize);
    let mut quoted = false; // inside a quoted field
    let mut was_quoted = false; // the current field was quoted (only a separator may follow)
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    fieldbuf.push('"');
                }
                '"' => {
                    quoted = false;
                    was_quoted = true;
                }
                '\n' => {
                    line += 1;
                    fieldbuf.push(c);
                }
                _ => fieldbuf.push(c),
            }
            continue;
        }
        match c {
            '"' if fieldbuf.is_empty() && !was_quoted => quoted = true,
            ',' => {
                record.push(std::mem::take(&mut fieldbuf));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut fieldbuf));
                out.push((start, std::mem::take(&mut record)));
                was_quoted = false;
                line += 1;
                start = line;
            }
            _ if was_quoted => {
                return Err(format!("line {line}: text after a closing quote"));
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            _ => fieldbuf.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start}: a quoted field is not closed"));
    }
    if !fieldbuf.is_empty() || !record.is_empty() || was_quoted {
        record.push(fieldbuf);
        out.push((start, record));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let row = [
            "grid:n=16,group=32",
            "say \"hi\"",
            "plain",
            "two\nlines",
            "",
        ];
        let text: Vec<String> = row.iter().map(|f| field(f).into_owned()).collect();
        let text = format!("a,b\r\n{}\n", text.join(","));
        let r = records(&text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (1, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(r[1].0, 2);
        assert_eq!(
            r[1].1,
            row.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        assert!(records("\"open,1\n").unwrap_err().contains("line 1"));
        assert!(records("x\n\"a\"b,1\n").unwrap_err().contains("line 2"));
        assert!(records("a\"b\n").is_err());
    }
}
