//! `${VAR}` expansion of the raw config text.
//!
//! Takes the text of `config.toml` and a lookup function, gives the text with every `${NAME}` outside comments
//! replaced by the variable's value; `${NAME:-fallback}` gives `fallback` when NAME is unset or empty. `$${` stands
//! for a literal `${`. Expansion happens on the text (not on parsed
//! values) so that an unset variable can be reported with its line number, and commented-out lines never require
//! a variable to be set.

use super::problem::ConfigProblem;

/// Expands `${NAME}` references; every unset variable is reported, not just the first.
#[cfg(test)]
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<ConfigProblem>> {
    let (out, problems) = expand_env_all(text, lookup);
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The text with `${VAR}` references replaced, and a problem for each bad one. A bad reference is left as written,
/// so later checks still run on the rest (one run reports every problem of the file) without tripping over an
/// empty value.
pub fn expand_env_all(text: &str, lookup: impl Fn(&str) -> Option<String>) -> (String, Vec<ConfigProblem>) {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = split_comment(line);
        let mut rest = code;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    problems.push(ConfigProblem::at_line(
                        index + 1,
                        "unterminated `${` (write `${NAME}`, or `$${` for a literal `${`)",
                    ));
                    out.push_str(tail);
                    rest = "";
                    continue;
                };
                let (name, fallback) = match after[..end].split_once(":-") {
                    Some((name, fallback)) => (name, Some(fallback)),
                    None => (&after[..end], None),
                };
                if !is_var_name(name) {
                    problems.push(ConfigProblem::at_line(
                        index + 1,
                        format!(
                            "`${{{name}}}` is not a valid environment variable reference (letters, digits and _ only)"
                        ),
                    ));
                } else {
                    let quote = quote_at(code, code.len() - rest.len() + start);
                    let value = lookup(name).filter(|v| fallback.is_none() || !v.is_empty());
                    match value.as_deref().or(fallback) {
                        Some(value) => match for_toml(value, quote) {
                            Ok(text) => out.push_str(&text),
                            Err(why) => {
                                problems.push(ConfigProblem::at_line(
                                    index + 1,
                                    format!("the value of {name} {why}; write `${{{name}}}` in a \"...\" string"),
                                ));
                                out.push_str(&tail[..end + 3]);
                            }
                        },
                        None => {
                            problems.push(ConfigProblem::at_line(
                                index + 1,
                                format!("environment variable {name} is not set; export {name}=... or replace ${{{name}}} with a value"),
                            ));
                            out.push_str(&tail[..end + 3]);
                        }
                    }
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    (out, problems)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as written where its reference stands, keeping the document's shape: in a `"..."` string (or outside
/// any) its backslashes, quotes and control characters are escaped; a `'...'` string takes text as it is, so a value
/// with a `'` or a line break cannot be written there.
fn for_toml(value: &str, quote: Option<char>) -> Result<String, &'static str> {
    if quote == Some('\'') {
        if value.contains('\'') {
            return Err("contains a ', which a '...' string cannot hold");
        }
        if value.contains(['\n', '\r']) {
            return Err("contains a line break, which a '...' string cannot hold");
        }
        return Ok(value.to_owned());
    }
    let mut text = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            c if c.is_control() => text.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => text.push(c),
        }
    }
    Ok(text)
}

/// The quote of the TOML string that `position` of `code` (a line's code, before any comment) is in, if any.
fn quote_at(code: &str, position: usize) -> Option<char> {
    let mut strings = Strings::default();
    code[..position].chars().for_each(|c| strings.read(c));
    strings.quote
}

/// Which TOML string (by its quote) the characters read so far leave the reader in, if any.
#[derive(Default)]
struct Strings {
    quote: Option<char>,
    /// The last character read was a backslash in a `"..."` string.
    escaped: bool,
}

impl Strings {
    fn read(&mut self, c: char) {
        match self.quote {
            Some('"') if self.escaped => self.escaped = false,
            Some('"') if c == '\\' => self.escaped = true,
            Some(q) if c == q => self.quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => self.quote = Some(c),
            None => {}
        }
    }
}

/// Splits a line at the first `#` that is not inside a TOML string.
fn split_comment(line: &str) -> (&str, &str) {
    let mut strings = Strings::default();
    for (i, c) in line.char_indices() {
        if c == '#' && strings.quote.is_none() {
            return line.split_at(i);
        }
        strings.read(c);
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("alice".into()),
            "QUOTED" => Some("a\"b".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables() {
        let out = expand_env("name = \"${USER}\"\n", env).unwrap();
        assert_eq!(out, "name = \"alice\"\n");
    }

    #[test]
    fn fallbacks_apply_when_unset() {
        let out = expand_env("a = \"${NOPE:-dev secret}\"\nb = \"${USER:-x}\"\n", env).unwrap();
        assert_eq!(out, "a = \"dev secret\"\nb = \"alice\"\n");
    }

    /// A `'...'` string takes the value as it is (a backslash stays one); one that cannot hold it (a `'`, a line
    /// break) is a problem, never a different document. In a `"..."` string a line break is an escape, so the line
    /// numbers of what follows stay right.
    #[test]
    fn values_are_written_as_the_string_they_stand_in_takes_them() {
        let lookup = |name: &str| match name {
            "BACKSLASH" => Some("a\\b".to_owned()),
            "QUOTE" => Some("x', '*".to_owned()),
            "LINES" => Some("one\ntwo".to_owned()),
            _ => None,
        };
        assert_eq!(expand_env("p = '${BACKSLASH}'", lookup).unwrap(), "p = 'a\\b'");
        assert_eq!(expand_env("p = \"${BACKSLASH}\"", lookup).unwrap(), "p = \"a\\\\b\"");
        assert_eq!(expand_env("p = \"${LINES}\"", lookup).unwrap(), "p = \"one\\ntwo\"");
        let errors = expand_env("topics = ['${QUOTE}']\nq = '${LINES}'", lookup).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].to_string().contains("QUOTE contains a '"), "{}", errors[0]);
        assert!(errors[1].to_string().contains("line 2"), "{}", errors[1]);
    }

    #[test]
    fn escapes_quotes_in_values() {
        let out = expand_env("p = \"${QUOTED}\"", env).unwrap();
        assert_eq!(out, "p = \"a\\\"b\"");
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let errors = expand_env("a = \"${NOPE}\"\nb = \"${ALSO_NOPE}\"\n", env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].to_string().contains("line 1"), "{}", errors[0]);
        assert!(errors[1].to_string().contains("ALSO_NOPE"), "{}", errors[1]);
    }

    #[test]
    fn ignores_comments_and_keeps_escapes() {
        let out = expand_env("# ${NOPE}\na = \"$${LITERAL}\" # ${NOPE}\nb = \"#${USER}\"", env).unwrap();
        assert_eq!(out, "# ${NOPE}\na = \"${LITERAL}\" # ${NOPE}\nb = \"#alice\"");
    }
}
