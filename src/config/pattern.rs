//! Topic names and `*` patterns, as written in `[topics.<name>]` and in `[[users]] topics`.
//!
//! Takes the written string, gives a matcher. `*` matches any run of characters (dots included), everything else
//! is literal, so `events.*` routes a whole family of topics and `*` alone matches every topic.

use regex::Regex;

/// Kafka's own limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, Clone)]
pub struct TopicPattern {
    text: String,
    /// `None` for an exact name: the common case needs no regex.
    regex: Option<Regex>,
}

impl TopicPattern {
    /// Parses a topic name or pattern; the error says what is wrong and how to write it instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a topic name must not be empty".into());
        }
        if text.len() > MAX_TOPIC_NAME_LEN {
            return Err(format!(
                "topic name '{text}' is longer than Kafka's {MAX_TOPIC_NAME_LEN} characters"
            ));
        }
        if let Some(bad) = text.chars().find(|c| !is_topic_char(*c) && *c != '*') {
            return Err(format!(
                "'{text}' contains '{bad}': topic names use letters, digits, '.', '_' and '-', and patterns add '*'"
            ));
        }
        if !text.contains('*') {
            return Ok(Self {
                text: text.to_owned(),
                regex: None,
            });
        }
        let body: Vec<String> = text.split('*').map(regex::escape).collect();
        let regex = Regex::new(&format!("^{}$", body.join(".*"))).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.to_owned(),
            regex: Some(regex),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_exact(&self) -> bool {
        self.regex.is_none()
    }

    pub fn matches(&self, topic: &str) -> bool {
        match &self.regex {
            None => self.text == topic,
            Some(regex) => regex.is_match(topic),
        }
    }

    /// How specific a pattern is: the number of literal characters. The most specific match wins routing.
    pub fn specificity(&self) -> usize {
        self.text.chars().filter(|c| *c != '*').count()
    }
}

/// Whether a concrete topic name (no pattern) is one Kafka accepts.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && name != "."
        && name != ".."
        && name.chars().all(is_topic_char)
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_only_themselves() {
        let p = TopicPattern::parse("orders").unwrap();
        assert!(p.is_exact());
        assert!(p.matches("orders"));
        assert!(!p.matches("orders2"));
    }

    #[test]
    fn star_matches_any_run_and_dots_are_literal() {
        let p = TopicPattern::parse("events.*").unwrap();
        assert!(p.matches("events.click"));
        assert!(p.matches("events.a.b"));
        assert!(!p.matches("eventsXclick"));
        assert!(!p.matches("other.events.click"));
        assert!(TopicPattern::parse("*").unwrap().matches("anything"));
    }

    #[test]
    fn rejects_characters_kafka_does_not_allow() {
        let err = TopicPattern::parse("bad topic").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(!is_valid_topic_name("a/b"));
        assert!(is_valid_topic_name("a.b-c_d"));
    }
}
