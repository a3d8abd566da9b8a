//! The `.env` syntax, as users of Node's dotenv and of
//! `docker run --env-file` write it, so that one file serves both.
//!
//! Our own parser rather than `dotenvy`'s: dotenvy refuses an unquoted value
//! with a space in it (`DEFAULT_ROOMS=general:General Chat`), expands `$VAR`,
//! and reports a character position without the line number. This one does
//! no IO (the caller reads the file) and never echoes a value in an error,
//! since values may be secrets.
//!
//! The rules, line by line (`\n` or `\r\n` endings; a UTF-8 byte-order mark
//! at the start of the file is skipped):
//!
//! * A blank line, or one whose first non-blank character is `#`, is ignored.
//! * `KEY=value`, optionally preceded by `export ` and with blanks around
//!   the key and the `=`. A key is one or more of `A-Z a-z 0-9 _ . -`.
//! * An unquoted value runs to the end of the line and is trimmed; blanks
//!   inside are kept. A `#` that follows a blank starts a comment; any other
//!   `#` is part of the value (`KEY=a#b` is `a#b`).
//! * A value that starts with `'` or `"` ends at the next identical quote,
//!   and is taken as written: blanks and `#` are kept and a backslash is
//!   just a backslash (no `\n` escapes, as `docker --env-file` and single
//!   quotes in dotenv; none of the server's settings holds a line break).
//!   After the closing quote only blanks and a `#` comment may follow. A
//!   quote left open at the end of the line is an error: values do not
//!   span lines (as with `docker --env-file`).
//! * Every other line is an error, reported with its line number: no `=`,
//!   nothing before the `=`, a key with other characters.
//!
//! A key assigned twice takes the last value, as with dotenv's parser and
//! Docker. Which keys mean something is the caller's business.

use std::fmt;

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The line number, from 1.
    pub line: usize,
    /// The variable name.
    pub key: String,
    /// The value, quotes removed.
    pub value: String,
}

/// A line that is not `.env` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line number, from 1.
    pub line: usize,
    /// The variable the line sets, when that much could be read.
    pub key: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a line. None of these quotes the line: it may hold a
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The line's bytes are not UTF-8.
    NotUtf8,
    /// Neither blank, a comment, nor `KEY=value`.
    NoEquals,
    /// `=value` with nothing before the `=`.
    EmptyKey,
    /// A key with a character other than `A-Z a-z 0-9 _ . -`.
    BadKey,
    /// A quoted value whose quote is not closed on its line.
    UnclosedQuote(char),
    /// Something other than a comment after a quoted value's closing quote.
    TextAfterQuote(char),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("the line is not valid UTF-8"),
            Self::NoEquals => f.write_str("expected KEY=value, a blank line or a # comment"),
            Self::EmptyKey => f.write_str("the variable name before '=' is empty"),
            Self::BadKey => f.write_str(
                "the variable name before '=' may hold only letters, digits, '_', '.' and '-'",
            ),
            Self::UnclosedQuote(q) => write!(
                f,
                "the value's opening {q} is not closed on this line \
                 (a value cannot span lines)"
            ),
            Self::TextAfterQuote(q) => write!(
                f,
                "only a # comment may follow the value's closing {q} \
                 (to keep {q} in a value, quote it with the other quote)"
            ),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "line {} ({key}): {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

impl std::error::Error for LineError {}

/// The UTF-8 byte-order mark some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses a whole `.env` file: every assignment in file order (a key may
/// repeat; the last one wins when they are applied), or the first line that
/// is not `.env` syntax.
pub fn parse(file: &[u8]) -> Result<Vec<Assignment>, LineError> {
    let file = file.strip_prefix(BOM).unwrap_or(file);
    let mut assignments = Vec::new();
    for (index, raw) in file.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| LineError {
            line,
            key: None,
            problem: Problem::NotUtf8,
        })?;
        assignments.extend(parse_line(text, line)?);
    }
    Ok(assignments)
}

/// Line number `line`, without its line break: `None` for a blank or
/// comment line.
fn parse_line(text: &str, line: usize) -> Result<Option<Assignment>, LineError> {
    let error = |key: Option<&str>, problem| LineError {
        line,
        key: key.map(str::to_owned),
        problem,
    };
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let Some((key, raw_value)) = text.split_once('=') else {
        return Err(error(None, Problem::NoEquals));
    };
    let key = strip_export(key.trim());
    if key.is_empty() {
        return Err(error(None, Problem::EmptyKey));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(error(None, Problem::BadKey));
    }
    let value = parse_value(raw_value).map_err(|problem| error(Some(key), problem))?;
    Ok(Some(Assignment {
        line,
        key: key.to_owned(),
        value,
    }))
}

/// `key` without a leading `export` and blanks (`export KEY=…`); a key
/// named `export` stays one.
fn strip_export(key: &str) -> &str {
    match key.strip_prefix("export") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => key,
    }
}

/// The value: everything after the first `=`.
fn parse_value(raw: &str) -> Result<String, Problem> {
    let start = raw.trim_start();
    if let Some(quote) = start.chars().next().filter(|c| matches!(c, '\'' | '"')) {
        let inner = &start[1..];
        let Some(end) = inner.find(quote) else {
            return Err(Problem::UnclosedQuote(quote));
        };
        let rest = inner[end + 1..].trim_start();
        if !(rest.is_empty() || rest.starts_with('#')) {
            return Err(Problem::TextAfterQuote(quote));
        }
        return Ok(inner[..end].to_owned());
    }
    // A comment starts at the first `#` that follows a blank (the blanks
    // right after the `=` count: `KEY= # comment` sets the empty value).
    let mut previous_blank = false;
    let end = raw
        .char_indices()
        .find(|&(_, c)| {
            let comment = c == '#' && previous_blank;
            previous_blank = c.is_whitespace();
            comment
        })
        .map_or(raw.len(), |(at, _)| at);
    Ok(raw[..end].trim().to_owned())
}

/// `value` written so that [`parse`] reads it back exactly: in single
/// quotes, or in double quotes when it holds a `'`, or bare when it holds
/// both (a bare value that reads back). `None` for a value no line can
/// hold: one with a line feed, or with both quotes and a shape a bare
/// value cannot take (blanks at either end, a leading quote, `#` after a
/// blank). Every value [`parse`] returns can be written.
pub fn quote(value: &str) -> Option<String> {
    if value.contains('\n') {
        return None;
    }
    if !value.contains('\'') {
        return Some(format!("'{value}'"));
    }
    if !value.contains('"') {
        return Some(format!("\"{value}\""));
    }
    let bare_reads_back = value.trim() == value
        && !value.starts_with(['\'', '"'])
        && !value
            .char_indices()
            .any(|(at, c)| c == '#' && value[..at].ends_with(char::is_whitespace));
    bare_reads_back.then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The assignments of `file` as (key, value) pairs.
    fn pairs(file: &str) -> Vec<(String, String)> {
        parse(file.as_bytes())
            .unwrap_or_else(|e| panic!("{file:?}: {e}"))
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    /// The one value `file` sets.
    fn value(file: &str) -> String {
        let all = pairs(file);
        assert_eq!(all.len(), 1, "{file:?}: {all:?}");
        all[0].1.clone()
    }

    fn error(file: &str) -> LineError {
        match parse(file.as_bytes()) {
            Ok(all) => panic!("{file:?} parsed: {all:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_value_runs_to_the_end_of_the_line_trimmed() {
        assert_eq!(
            pairs("DEFAULT_ROOMS=general:General Chat\n"),
            [(
                "DEFAULT_ROOMS".to_owned(),
                "general:General Chat".to_owned()
            )]
        );
        assert_eq!(value("A=  two  spaces  inside  \t"), "two  spaces  inside");
        assert_eq!(value("A="), "");
        assert_eq!(value("A=   "), "");
        assert_eq!(value("A=x=y=z"), "x=y=z", "the first = splits");
        assert_eq!(value("A=it's \"quoted\" inside"), "it's \"quoted\" inside");
        assert_eq!(value("A=back\\slash\\n"), "back\\slash\\n");
        assert_eq!(value("A=$HOME ${PATH}"), "$HOME ${PATH}", "no expansion");
        assert_eq!(value("A=`x`"), "`x`", "backticks are not quotes");
    }

    #[test]
    fn quotes_are_removed_and_keep_what_they_hold() {
        assert_eq!(value("A='single'"), "single");
        assert_eq!(value("A=\"double\""), "double");
        assert_eq!(value("A=' padded '"), " padded ");
        assert_eq!(value("A='a # not a comment'"), "a # not a comment");
        assert_eq!(value("A=\"a # not a comment\""), "a # not a comment");
        assert_eq!(value("A=\"it's\""), "it's");
        assert_eq!(value("A='say \"hi\"'"), "say \"hi\"");
        assert_eq!(value("A=''"), "");
        assert_eq!(value("A=\"\""), "");
        assert_eq!(value("A=   'spaced start'   "), "spaced start");
    }

    #[test]
    fn double_quotes_expand_no_escapes() {
        assert_eq!(value(r#"A="line\nbreak""#), r"line\nbreak");
        assert_eq!(value(r#"A="tab\tand\\""#), r"tab\tand\\");
        assert_eq!(value(r"A='c:\dir\'"), r"c:\dir\");
    }

    #[test]
    fn comments() {
        assert_eq!(value("A=value # a comment"), "value");
        assert_eq!(value("A=value\t# a comment"), "value");
        assert_eq!(value("A=value #"), "value");
        assert_eq!(value("A= # only a comment"), "");
        assert_eq!(value("A=a#b"), "a#b", "# not after a blank");
        assert_eq!(value("A=#secret"), "#secret", "# right after =");
        assert_eq!(value("A=a#b #c #d"), "a#b");
        assert_eq!(value("A='quoted' # comment"), "quoted");
        assert_eq!(value("A='quoted'# comment"), "quoted");
        assert_eq!(value("A=\"quoted\"   #"), "quoted");
        assert_eq!(pairs("# A=1\n#B=2\n   # indented comment\n"), []);
    }

    #[test]
    fn export_blank_and_spaced_lines() {
        assert_eq!(value("export A=1"), "1");
        assert_eq!(value("export\tA=1"), "1");
        assert_eq!(value("  export   A = 1  "), "1");
        assert_eq!(pairs("export=1"), [("export".to_owned(), "1".to_owned())]);
        assert_eq!(pairs("export = 1"), [("export".to_owned(), "1".to_owned())]);
        assert_eq!(
            pairs("exported=1"),
            [("exported".to_owned(), "1".to_owned())]
        );
        assert_eq!(value("  A  =  1  "), "1");
        assert_eq!(pairs(""), []);
        assert_eq!(pairs("\n\n   \n\t\n"), []);
        assert_eq!(
            pairs("a.b-c_D9=1"),
            [("a.b-c_D9".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn line_endings_bom_and_line_numbers() {
        let file = "\u{feff}# title\r\nA=1\r\n\r\nB='two words'\r\nC=3";
        let all = parse(file.as_bytes()).expect("parses");
        let got: Vec<_> = all
            .iter()
            .map(|a| (a.line, a.key.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(got, [(2, "A", "1"), (4, "B", "two words"), (5, "C", "3")]);
        // A byte-order mark only counts at the very start.
        assert_eq!(error("A=1\n\u{feff}B=2").problem, Problem::BadKey);
        assert_eq!(value("\u{feff}A=1"), "1");
        // A lone \r inside a line is not a line break.
        assert_eq!(value("A='x\ry'"), "x\ry");
    }

    #[test]
    fn duplicate_keys_are_all_returned_in_order() {
        assert_eq!(
            pairs("A=1\nB=2\nA=3"),
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "2".to_owned()),
                ("A".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn every_error_names_its_line_and_never_the_value() {
        for (file, line, key, problem) in [
            ("A=1\njust words\n", 2, None, Problem::NoEquals),
            ("A=1\n\nexport A\n", 3, None, Problem::NoEquals),
            ("=value", 1, None, Problem::EmptyKey),
            ("  = value", 1, None, Problem::EmptyKey),
            ("MY KEY=1", 1, None, Problem::BadKey),
            ("A:B=1", 1, None, Problem::BadKey),
            ("KÉY=1", 1, None, Problem::BadKey),
            ("# ok\nA='open", 2, Some("A"), Problem::UnclosedQuote('\'')),
            ("A=\"open\nB=1\"", 1, Some("A"), Problem::UnclosedQuote('"')),
            ("A='x' y", 1, Some("A"), Problem::TextAfterQuote('\'')),
            ("A=\"x\"y", 1, Some("A"), Problem::TextAfterQuote('"')),
            ("A='it''s'", 1, Some("A"), Problem::TextAfterQuote('\'')),
        ] {
            let e = error(file);
            assert_eq!(
                (e.line, e.key.as_deref(), e.problem),
                (line, key, problem),
                "{file:?}"
            );
        }
        let e = parse(b"A=1\nB=\xff\xfe\n").expect_err("not UTF-8");
        assert_eq!((e.line, e.problem), (2, Problem::NotUtf8));
        let e = error("JWT_SECRET='s3cret-value");
        let shown = e.to_string();
        assert!(shown.starts_with("line 1 (JWT_SECRET): "), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let shown = error("s3cret-value-pasted-alone").to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            shown,
            "line 1: expected KEY=value, a blank line or a # comment"
        );
    }

    #[test]
    fn quote_writes_what_parse_reads_back() {
        for v in [
            "",
            "plain",
            " padded ",
            "a # b",
            "it's",
            "say \"hi\"",
            "it's \"both\"",
            "#x",
            "a#b",
            "'",
            "\"",
            "\\n",
        ] {
            let line = format!("A={}", quote(v).expect("writable"));
            assert_eq!(value(&line), v, "{line:?}");
        }
        assert_eq!(
            value(&format!("A={}", quote("a\rb").expect("writable"))),
            "a\rb"
        );
        for unwritable in ["a\nb", " it's \"both\" ", "'x\"", "it's \"a\" #b"] {
            assert_eq!(quote(unwritable), None, "{unwritable:?}");
        }
    }
}
