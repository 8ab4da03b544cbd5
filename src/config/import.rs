//! Folds the AsyncAPI documents config.toml names into its raw tables: servers become `[clusters]` and channels
//! become `[topics]`, unless config.toml defines them itself (then its entry is used as a whole, not merged).
//! Problems point at the `asyncapi` line.

use std::path::Path;

use toml::Spanned;

use super::asyncapi::{self, ImportedTopic};
use super::choices::ContentType;
use super::defaults;
use super::problem::{ConfigProblem, line_of};
use super::raw::{ImportedSchemas, RawCluster, RawConfig, RawTopic};

pub(super) fn fold_asyncapi(raw: &mut RawConfig, text: &str, base_dir: &Path) -> Vec<ConfigProblem> {
    let Some(given) = raw.asyncapi.take() else {
        return Vec::new();
    };
    let line = line_of(text, given.span().start);
    let span = given.span();
    let files: Vec<String> = match given.get_ref() {
        toml::Value::String(file) => vec![file.clone()],
        toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
            items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
        }
        _ => {
            return vec![ConfigProblem::at_line(
                line,
                "asyncapi must be a file name or a list of file names",
            )];
        }
    };
    let mut problems = Vec::new();
    for file in files {
        let imported = match asyncapi::import(&base_dir.join(&file)) {
            Ok(imported) => imported,
            Err(e) => {
                problems.push(ConfigProblem::at_line(line, format!("asyncapi: {e}")));
                continue;
            }
        };
        for (name, address) in imported.servers {
            if raw.clusters.keys().any(|k| k.get_ref() == &name) {
                continue;
            }
            let cluster = RawCluster {
                bootstrap: vec![address],
                ..RawCluster::default()
            };
            raw.clusters.insert(Spanned::new(span.clone(), name), cluster);
        }
        for topic in imported.topics {
            if raw.topics.keys().any(|k| k.get_ref() == &topic.name) {
                continue;
            }
            match raw_topic(&file, topic, &span) {
                Ok((name, raw_topic)) => {
                    raw.topics.insert(Spanned::new(span.clone(), name), raw_topic);
                }
                Err(e) => problems.push(ConfigProblem::at_line(line, format!("asyncapi: {file}: {e}"))),
            }
        }
    }
    problems
}

fn raw_topic(file: &str, topic: ImportedTopic, span: &std::ops::Range<usize>) -> Result<(String, RawTopic), String> {
    // Avro needs an Avro schema, which an imported JSON Schema payload is not.
    let importable = |c: &ContentType| *c != ContentType::Avro;
    let content_type = match topic.content_type.as_deref() {
        None => defaults::CONTENT_TYPE,
        Some(name) => ContentType::parse(name).filter(importable).ok_or_else(|| {
            let known: Vec<&str> = ContentType::ALL
                .iter()
                .filter(|c| importable(c))
                .map(|c| c.as_str())
                .collect();
            format!(
                "channel '{}' has content type {name}, which luka cannot encode ({})",
                topic.name,
                known.join(", ")
            )
        })?,
    };
    let raw = RawTopic {
        cluster: topic.server.map(|s| Spanned::new(span.clone(), s)),
        content_type: Some(content_type),
        partitions: Some(topic.partitions.unwrap_or(defaults::IMPORTED_PARTITIONS)),
        imported: Some(ImportedSchemas {
            origin: file.to_owned(),
            value_schema: topic.value_schema,
            key_schema: topic.key_schema,
        }),
        ..RawTopic::default()
    };
    Ok((topic.name, raw))
}
