//! The problem collector every config step reports to: takes the checked text and one message at a time, gives
//! the [`ConfigProblem`]s, each with the line it is on when known.
//!
//! A check never stops at the first problem: it reports to a [`Checker`] and goes on, so one run of luka names
//! everything wrong with the file.

use std::fmt;

use toml::Spanned;

/// One thing wrong with the config, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigProblem {
    pub fn at_line(line: usize, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }

    pub fn new(message: impl Into<String>) -> Self {
        Self {
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Collects the problems of one config text; a spanned value gives the line of its problem.
pub(super) struct Checker<'a> {
    text: &'a str,
    problems: Vec<ConfigProblem>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            problems: Vec::new(),
        }
    }

    /// A problem on the line where `spanned` was written.
    pub(super) fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.problems.push(ConfigProblem::at_line(
            line_of(self.text, spanned.span().start),
            message,
        ));
    }

    /// Rate limits of a `[[users]]` or `[[routes]]` entry (`owner` names it): each one given must be above 0, since
    /// leaving it out is how to say "no limit".
    pub(super) fn positive_limits<T>(&mut self, at: &Spanned<T>, owner: &str, limits: [(Option<u32>, &str); 3]) {
        for (value, key) in limits {
            if value == Some(0) {
                self.at(
                    at,
                    format!("{owner} {key} must be greater than 0 (leave it out for no limit)"),
                );
            }
        }
    }

    /// A problem of no one line.
    pub(super) fn general(&mut self, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(message));
    }

    /// Problems found so far: a check compares the count before and after to learn whether it found any.
    pub(super) fn found(&self) -> usize {
        self.problems.len()
    }

    /// `checked` when no problem was found, else every problem.
    pub(super) fn finish<T>(self, checked: T) -> Result<T, Vec<ConfigProblem>> {
        if self.problems.is_empty() {
            Ok(checked)
        } else {
            Err(self.problems)
        }
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
