//! A schema's regular expressions, compiled once: `pattern` strings in, string generators out; `patternProperties`
//! keys in, matchers out.
//!
//! The generator meets the same few patterns in every value it makes (an order's item `sku`, once per item), and
//! compiling one costs more than generating from it. Patterns come from the schema's own documents, so the cache
//! holds at most as many as they name; [`MAX_CACHED`] bounds it anyway, past which a pattern is compiled per use.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Longest run a `pattern` repetition (`*`, `+`, `{n,}`) is expanded to.
const MAX_PATTERN_REPEAT: u32 = 8;

/// Patterns kept per schema and kind.
const MAX_CACHED: usize = 256;

/// A generator for strings matching a `pattern`, or why none can be made.
pub type Generated = Result<Arc<rand_regex::Regex>, String>;

#[derive(Debug, Default)]
pub struct Patterns {
    generators: RwLock<HashMap<String, Generated>>,
    /// `None`: the key is not a regular expression this engine reads, so it matches no name.
    matchers: RwLock<HashMap<String, Option<Arc<regex::Regex>>>>,
}

impl Patterns {
    /// Generates strings the whole of `pattern` matches (JSON Schema patterns are unanchored, but a generated
    /// string is the match itself, so `^` and `$` at the ends are dropped).
    pub fn generator(&self, pattern: &str) -> Generated {
        cached(&self.generators, pattern, || {
            let anchored = pattern.trim_start_matches('^').trim_end_matches('$');
            rand_regex::Regex::compile(anchored, MAX_PATTERN_REPEAT)
                .map(Arc::new)
                .map_err(|e| format!("cannot generate strings for pattern '{pattern}': {e}"))
        })
    }

    /// Whether `name` is a property `pattern` (a `patternProperties` key) applies to.
    pub fn matches(&self, pattern: &str, name: &str) -> bool {
        cached(&self.matchers, pattern, || {
            regex::Regex::new(pattern).ok().map(Arc::new)
        })
        .is_some_and(|regex| regex.is_match(name))
    }
}

fn cached<T: Clone>(cache: &RwLock<HashMap<String, T>>, pattern: &str, compile: impl FnOnce() -> T) -> T {
    if let Some(found) = cache.read().unwrap_or_else(PoisonError::into_inner).get(pattern) {
        return found.clone();
    }
    let compiled = compile();
    let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
    if cache.len() < MAX_CACHED {
        cache.insert(pattern.to_owned(), compiled.clone());
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_compiled_once_and_an_invalid_one_stays_an_error() {
        let patterns = Patterns::default();
        let first = patterns.generator("^SKU-[0-9]{5}$").unwrap();
        let again = patterns.generator("^SKU-[0-9]{5}$").unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second use must reuse the compiled pattern"
        );
        let text: String = rand::Rng::sample(&mut rand::rng(), &*first);
        assert!(regex::Regex::new("^SKU-[0-9]{5}$").unwrap().is_match(&text), "{text}");
        let broken = patterns.generator("(").unwrap_err();
        assert!(broken.contains("pattern '('"), "{broken}");
        assert_eq!(patterns.generator("(").unwrap_err(), broken);
    }

    #[test]
    fn matchers_follow_the_pattern_and_an_unreadable_one_matches_nothing() {
        let patterns = Patterns::default();
        assert!(patterns.matches("^x-", "x-trace"));
        assert!(!patterns.matches("^x-", "trace"));
        assert!(!patterns.matches("(", "("));
    }

    #[test]
    fn the_cache_stops_growing_at_its_bound() {
        let patterns = Patterns::default();
        for n in 0..MAX_CACHED + 10 {
            assert!(patterns.matches(&format!("^a{{{n}}}$"), &"a".repeat(n)));
        }
        let kept = patterns.matchers.read().unwrap().len();
        assert_eq!(kept, MAX_CACHED);
        assert!(patterns.matches(&format!("^a{{{}}}$", MAX_CACHED + 20), &"a".repeat(MAX_CACHED + 20)));
    }
}
