//! Topic and schema checks: takes the raw `[topics]` tables and the clusters they may name, gives the checked
//! [`Topic`]s, most specific first, with their schemas compiled (JSON Schema, Avro) and their content type settled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::checked::Topic;
use super::choices::ContentType;
use super::defaults;
use super::pattern::TopicPattern;
use super::problem::Checker;
use super::raw::{RawCluster, RawTopic};
use crate::schema::{AvroCodec, Schema};

pub(super) fn check_topics(
    c: &mut Checker<'_>,
    raw: &BTreeMap<Spanned<String>, RawTopic>,
    clusters: &BTreeMap<Spanned<String>, RawCluster>,
    default_cluster: Option<&str>,
    base_dir: &Path,
) -> Vec<Topic> {
    let defined: Vec<&str> = clusters.keys().map(|k| k.get_ref().as_str()).collect();
    let mut topics = Vec::new();
    for (name, topic) in raw {
        let pattern = match TopicPattern::parse(name.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                c.at(name, format!("[topics.\"{}\"]: {e}", name.get_ref()));
                continue;
            }
        };
        let cluster = match (&topic.cluster, default_cluster) {
            (Some(cluster), _) if !defined.contains(&cluster.get_ref().as_str()) => {
                c.at(cluster, format!(
                    "[topics.\"{}\"] names cluster '{}', which is not defined; define [clusters.{}] or use one of: {}",
                    name.get_ref(),
                    cluster.get_ref(),
                    cluster.get_ref(),
                    list_or_none(&defined)
                ));
                continue;
            }
            (Some(cluster), _) => cluster.get_ref().clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) if defined.is_empty() => {
                c.at(
                    name,
                    format!(
                        "[topics.\"{}\"] needs a cluster, and no [clusters.<name>] is defined",
                        name.get_ref()
                    ),
                );
                continue;
            }
            (None, None) => {
                c.at(
                    name,
                    format!(
                        "[topics.\"{}\"] names no cluster and no cluster is the default; add cluster = \"...\" \
                     here or default = true to one of: {}",
                        name.get_ref(),
                        defined.join(", ")
                    ),
                );
                continue;
            }
        };
        if let Some(partitions) = topic.partitions.filter(|p| *p < 1) {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] partitions = {partitions}: must be at least 1",
                    name.get_ref()
                ),
            );
        }
        if topic.replication_factor < 1 {
            c.at(
                name,
                format!("[topics.\"{}\"] replication_factor must be at least 1", name.get_ref()),
            );
        }
        let mut schema = |given: &Option<Spanned<toml::Value>>, key: &str| {
            let given = given.as_ref()?;
            compile_schema(given.get_ref(), base_dir)
                .map_err(|e| c.at(given, format!("[topics.\"{}\"] {key}: {e}", name.get_ref())))
                .ok()
                .map(Arc::new)
        };
        let (value_schema, key_schema) = match &topic.imported {
            None => (
                schema(&topic.value_schema, "value_schema"),
                schema(&topic.key_schema, "key_schema"),
            ),
            Some(imported) => {
                let mut compile = |document: &Option<serde_json::Value>, what: &str| {
                    let document = document.clone()?;
                    Schema::compile(document, None)
                        .map_err(|e| {
                            let (file, topic) = (&imported.origin, name.get_ref());
                            c.at(name, format!("asyncapi: {file}: channel '{topic}' {what}: {e}"));
                        })
                        .ok()
                        .map(Arc::new)
                };
                (
                    compile(&imported.value_schema, "payload"),
                    compile(&imported.key_schema, "key"),
                )
            }
        };
        let (content_type, avro) = check_avro(c, name, topic, base_dir);
        if !(0.0..=1.0).contains(&topic.optional_probability) {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] optional_probability must be between 0 and 1",
                    name.get_ref()
                ),
            );
        }
        if topic.validate && topic.value_schema.is_none() {
            c.at(
                name,
                format!(
                    "[topics.\"{}\"] validate = true needs a value_schema to check against",
                    name.get_ref()
                ),
            );
        }
        topics.push(Topic {
            pattern,
            cluster,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            value_schema,
            key_schema,
            validate: topic.validate,
            content_type,
            avro,
            optional_probability: topic.optional_probability,
        });
    }
    // Exact names first, then the most literal pattern: that is the order routing tries them in.
    topics.sort_by_key(|t| (!t.pattern.is_exact(), std::cmp::Reverse(t.pattern.specificity())));
    topics
}

/// The topic's content type, and its Avro codec when the type is `avro/binary` (which needs an `avro_schema`).
fn check_avro(
    c: &mut Checker<'_>,
    name: &Spanned<String>,
    topic: &RawTopic,
    base_dir: &Path,
) -> (ContentType, Option<Arc<AvroCodec>>) {
    let content_type = topic.content_type.unwrap_or(if topic.avro_schema.is_some() {
        ContentType::Avro
    } else {
        defaults::CONTENT_TYPE
    });
    let t = name.get_ref();
    match (&topic.avro_schema, content_type) {
        (Some(given), ContentType::Avro) => {
            let document = schema_document(given.get_ref(), base_dir);
            match document.and_then(|(d, _)| AvroCodec::new(&d, topic.schema_id).map_err(|e| e.to_string())) {
                Ok(codec) => (content_type, Some(Arc::new(codec))),
                Err(e) => {
                    c.at(given, format!("[topics.\"{t}\"] avro_schema: {e}"));
                    (content_type, None)
                }
            }
        }
        (None, ContentType::Avro) => {
            c.at(
                name,
                format!("[topics.\"{t}\"] content_type avro/binary needs an avro_schema"),
            );
            (content_type, None)
        }
        (Some(given), other) => {
            c.at(
                given,
                format!(
                    "[topics.\"{t}\"] avro_schema is set but content_type is {}; use avro/binary",
                    other.as_str()
                ),
            );
            (content_type, None)
        }
        (None, _) => {
            if topic.schema_id.is_some() {
                c.at(name, format!("[topics.\"{t}\"] schema_id is for avro/binary topics"));
            }
            (content_type, None)
        }
    }
}

/// A schema given inline (a TOML table, read as JSON) or as a JSON file relative to config.toml.
fn compile_schema(given: &toml::Value, base_dir: &Path) -> Result<Schema, String> {
    let (document, file) = schema_document(given, base_dir)?;
    Schema::compile(document, file.as_deref()).map_err(|e| e.to_string())
}

/// A schema document (JSON Schema or Avro) given inline as a TOML table, or as a JSON file relative to
/// config.toml; gives the document and, for a file, its path (where its relative references point).
fn schema_document(given: &toml::Value, base_dir: &Path) -> Result<(serde_json::Value, Option<PathBuf>), String> {
    match given {
        toml::Value::String(file) => {
            let path = base_dir.join(file);
            let document = crate::schema::read_document(&path).map_err(|e| e.to_string())?;
            Ok((document, Some(path)))
        }
        toml::Value::Table(_) => Ok((serde_json::to_value(given).map_err(|e| e.to_string())?, None)),
        other => Err(format!(
            "give a schema as an inline table or a file name, not a {}",
            other.type_str()
        )),
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "(none defined)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(text, std::path::Path::new("."), |_| None)
            .map_err(|ps| ps.into_iter().map(|p| p.to_string()).collect())
    }

    const TWO_CLUSTERS: &str = r#"
[clusters.a]
bootstrap = ["127.0.0.1:9092"]
default = true

[clusters.b]
bootstrap = ["127.0.0.1:9093"]

[topics.orders]
[topics."events.*"]
cluster = "b"
[topics."*"]
cluster = "b"
"#;

    #[test]
    fn topics_take_the_default_cluster_and_sort_most_specific_first() {
        let config = load(TWO_CLUSTERS).unwrap();
        let order: Vec<(&str, &str)> = config
            .topics
            .iter()
            .map(|t| (t.pattern.as_str(), t.cluster.as_str()))
            .collect();
        assert_eq!(order, [("orders", "a"), ("events.*", "b"), ("*", "b")]);
    }

    #[test]
    fn topic_without_cluster_needs_a_default_when_several_exist() {
        let errors =
            load("[clusters.a]\nbootstrap = [\"h:1\"]\n[clusters.b]\nbootstrap = [\"h:2\"]\n[topics.t]\n").unwrap_err();
        assert!(errors[0].contains("no cluster is the default"), "{errors:?}");
    }
}
