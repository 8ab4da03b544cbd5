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
                    match (lookup(name).filter(|v| fallback.is_none() || !v.is_empty()), fallback) {
                        (Some(value), _) => out.push_str(&escape_for_toml_string(&value)),
                        (None, Some(fallback)) => out.push_str(&escape_for_toml_string(fallback)),
                        (None, None) => {
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

/// Values land inside TOML strings, so quotes and backslashes are escaped to keep the document's shape.
fn escape_for_toml_string(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Splits a line at the first `#` that is not inside a TOML string.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return line.split_at(i),
            None => {}
        }
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
