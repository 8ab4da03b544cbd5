//! What is wrong with a JSON request object, in the API's own words: a parsed JSON value and the fields its
//! endpoint takes in, the first problem out (an unknown field, a missing one, a field of the wrong kind), with any
//! echoed input cut short. The endpoints parse with serde for speed and ask this only when that fails, so that a
//! client reads "key must be a string", never serde's "invalid type: integer `5`, expected a string".

use serde_json::{Map, Value};

/// Characters of a client's input quoted back in an error.
pub(crate) const ECHO_CHARS: usize = 40;

/// What a field must hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A string.
    Text,
    /// A string or null.
    TextOrNull,
    /// A whole number from `min` to `max` (or null when `null_ok`).
    Whole { min: i64, max: i64, null_ok: bool },
    /// Any JSON value.
    Any,
    /// A list of objects with these fields (or null when `null_ok`).
    List { fields: &'static [Field], null_ok: bool },
}

/// One field of a request object: its name, what it holds, whether it must be there, and how the API says so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// "must be ..." (the rule, said to a client that sent something else).
    pub rule: &'static str,
}

/// The first problem of `value` as a `what` (e.g. "a message") with `fields`, or `None` if it has none.
pub(crate) fn problem(value: &Value, what: &str, fields: &[Field]) -> Option<String> {
    let Value::Object(object) = value else {
        return Some(format!("{what} must be a JSON object, got {}", kind_of(value)));
    };
    problem_of_object(object, what, fields)
}

fn problem_of_object(object: &Map<String, Value>, what: &str, fields: &[Field]) -> Option<String> {
    if let Some(unknown) = object.keys().find(|key| !fields.iter().any(|f| f.name == key.as_str())) {
        let known: Vec<String> = fields.iter().map(|f| format!("\"{}\"", f.name)).collect();
        return Some(format!(
            "{what} has no field {}; its fields are {}",
            echo(unknown),
            known.join(", ")
        ));
    }
    for field in fields {
        let problem = match object.get(field.name) {
            None if field.required => Some(format!("{what} needs \"{}\", which {}", field.name, field.rule)),
            None => None,
            Some(value) => field_problem(field, value),
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

fn field_problem(field: &Field, value: &Value) -> Option<String> {
    let fits = match (field.kind, value) {
        (Kind::Any, _) | (Kind::Text, Value::String(_)) => true,
        (Kind::TextOrNull, Value::String(_) | Value::Null) => true,
        (Kind::Whole { null_ok: true, .. } | Kind::List { null_ok: true, .. }, Value::Null) => true,
        (Kind::Whole { min, max, .. }, Value::Number(n)) => n.as_i64().is_some_and(|n| (min..=max).contains(&n)),
        (Kind::List { fields, .. }, Value::Array(items)) => {
            let entry = items.iter().enumerate().find_map(|(i, item)| {
                let what = format!("{} entry {}", field.name, i + 1);
                problem(item, &what, fields)
            });
            return entry.map(|problem| format!("{problem} ({} {})", field.name, field.rule));
        }
        _ => false,
    };
    (!fits).then(|| format!("{} {}, got {}", field.name, field.rule, shown(value)))
}

/// A value a client sent, as an error shows it: short ones as they are, others by their kind.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {}", echo(s)),
        Value::Number(n) => {
            let text = n.to_string();
            if text.len() <= ECHO_CHARS {
                text
            } else {
                "a number".to_owned()
            }
        }
        other => kind_of(other).to_owned(),
    }
}

/// "a string", "an object", ...
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Client input quoted in an error, cut to [`ECHO_CHARS`] characters.
pub(crate) fn echo(text: &str) -> String {
    let mut quoted: String = text.chars().take(ECHO_CHARS).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    format!("'{quoted}'")
}

/// Where a body that is not JSON went wrong, without serde's wording.
pub(crate) fn not_json(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Eof => "it ends too early",
        Category::Syntax => "it is not valid JSON",
        Category::Data | Category::Io => "it is not valid JSON",
    };
    format!(
        "the body is not JSON: {what} (line {}, column {})",
        error.line(),
        error.column()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HEADER: &[Field] = &[
        Field {
            name: "key",
            kind: Kind::Text,
            required: true,
            rule: "must be a string",
        },
        Field {
            name: "value",
            kind: Kind::Text,
            required: true,
            rule: "must be a string",
        },
    ];
    const FIELDS: &[Field] = &[
        Field {
            name: "key",
            kind: Kind::TextOrNull,
            required: false,
            rule: "must be a string",
        },
        Field {
            name: "headers",
            kind: Kind::List {
                fields: HEADER,
                null_ok: false,
            },
            required: false,
            rule: "must be a list of {\"key\", \"value\"} objects",
        },
        Field {
            name: "value",
            kind: Kind::Any,
            required: true,
            rule: "holds the record's value",
        },
    ];

    #[test]
    fn problems_are_said_in_the_apis_words() {
        let said = |value: Value| problem(&value, "a message", FIELDS);
        assert_eq!(said(json!({"value": "x"})), None);
        assert_eq!(
            said(json!({"value": "x", "key": 5})).unwrap(),
            "key must be a string, got 5"
        );
        assert_eq!(
            said(json!({"value": "x", "headers": {"a": "b"}})).unwrap(),
            "headers must be a list of {\"key\", \"value\"} objects, got an object"
        );
        assert_eq!(
            said(json!({"value": "x", "headers": [{"key": "a"}]})).unwrap(),
            "headers entry 1 needs \"value\", which must be a string (headers must be a list of {\"key\", \"value\"} \
             objects)"
        );
        assert_eq!(
            said(json!({})).unwrap(),
            "a message needs \"value\", which holds the record's value"
        );
        assert_eq!(
            said(json!({"value": 1, "vlaue": 2})).unwrap(),
            "a message has no field 'vlaue'; its fields are \"key\", \"headers\", \"value\""
        );
        let long = "x".repeat(100_000);
        let answer = said(json!({"value": 1, "key": [long]})).unwrap();
        assert_eq!(answer, "key must be a string, got an array");
        assert!(said(json!({"value": 1, "key": 1e300})).unwrap().len() < 100);
    }
}
