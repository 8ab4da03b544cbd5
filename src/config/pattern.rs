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

    /// Whether some topic name matches both patterns (a user's and a `[topics]` entry's, say).
    pub fn overlaps(&self, other: &TopicPattern) -> bool {
        globs_overlap(self.text.as_bytes(), other.text.as_bytes())
    }

    /// How specific a pattern is: the number of literal characters. The most specific match wins routing.
    pub fn specificity(&self) -> usize {
        self.text.chars().filter(|c| *c != '*').count()
    }
}

/// Whether two patterns whose only wildcard is `*` (any run of characters) match a common string: a walk over both
/// at once, where a `*` on either side may match nothing more or take the other side's next character (or star),
/// remembering the (position, position) pairs found dead (at most 250 x 250 for topic names).
fn globs_overlap(a: &[u8], b: &[u8]) -> bool {
    let mut dead = vec![false; (a.len() + 1) * (b.len() + 1)];
    let mut todo = vec![(0, 0)];
    while let Some((i, j)) = todo.pop() {
        let seen = &mut dead[i * (b.len() + 1) + j];
        if *seen {
            continue;
        }
        *seen = true;
        if i == a.len() && j == b.len() {
            return true;
        }
        if a.get(i) == Some(&b'*') {
            todo.push((i + 1, j));
            if j < b.len() {
                todo.push((i, j + 1));
            }
        }
        if b.get(j) == Some(&b'*') {
            todo.push((i, j + 1));
            if i < a.len() {
                todo.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (a.get(i), b.get(j))
            && x == y
            && *x != b'*'
        {
            todo.push((i + 1, j + 1));
        }
    }
    false
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
    fn patterns_overlap_when_some_name_matches_both() {
        let overlap = |a: &str, b: &str| {
            let (a, b) = (TopicPattern::parse(a).unwrap(), TopicPattern::parse(b).unwrap());
            assert_eq!(a.overlaps(&b), b.overlaps(&a), "{} and {}", a.as_str(), b.as_str());
            a.overlaps(&b)
        };
        for (a, b) in [
            ("orders", "orders"),
            ("orders", "*"),
            ("orders", "ord*"),
            ("orders", "*ers"),
            ("orders", "o*r*s"),
            ("events.*", "*.created"),
            ("events.*", "events.click"),
            ("a*", "*b"),
            ("*x*", "y*"),
            ("events.*", "ev*"),
            ("events.*", "*.log.x*y"),
        ] {
            assert!(overlap(a, b), "{a} and {b} should overlap");
        }
        for (a, b) in [
            ("orders", "order"),
            ("orders", "orders2"),
            ("orders", "x*"),
            ("orders", "*x"),
            ("events.*", "logs.*"),
            ("x*y", "*z"),
            ("a*b", "c*"),
            ("*.a", "*.b"),
        ] {
            assert!(!overlap(a, b), "{a} and {b} should not overlap");
        }
    }

    #[test]
    fn rejects_characters_kafka_does_not_allow() {
        let err = TopicPattern::parse("bad topic").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(!is_valid_topic_name("a/b"));
        assert!(is_valid_topic_name("a.b-c_d"));
    }
}
