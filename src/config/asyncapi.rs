//! AsyncAPI import: an AsyncAPI 2.x (channels with publish/subscribe) or 3.0 (channels with messages, operations)
//! document in, the Kafka topics and servers it declares out.
//!
//! Each channel address becomes a topic with its message's payload schema (local `$ref`s resolved), its content
//! type (the message's `contentType`, else the document's `defaultContentType`), its key schema (the message's
//! `bindings.kafka.key`) and its partitions (the channel's `bindings.kafka.partitions`). Each Kafka server
//! (`protocol: kafka` or `kafka-secure`) becomes a cluster of that name unless config.toml defines one; a channel
//! goes to the server it names, or to the document's only Kafka server.

use std::path::Path;

use serde_json::Value;

/// `$ref` chains followed before giving up (a reference cycle in the document).
const MAX_REF_DEPTH: usize = 32;

/// Values the document may make once its references are resolved.
const MAX_RESOLVED_VALUES: usize = 1_000_000;

/// What one AsyncAPI document declares.
#[derive(Debug, Default)]
pub struct Imported {
    /// Kafka servers: name and bootstrap address.
    pub servers: Vec<(String, String)>,
    pub topics: Vec<ImportedTopic>,
}

#[derive(Debug)]
pub struct ImportedTopic {
    pub name: String,
    pub server: Option<String>,
    pub value_schema: Option<Value>,
    pub key_schema: Option<Value>,
    pub content_type: Option<String>,
    pub partitions: Option<i32>,
}

pub fn import(path: &Path) -> Result<Imported, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let document: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{} is not YAML or JSON: {e}", path.display()))?;
    from_document(&document).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn from_document(document: &Value) -> Result<Imported, String> {
    let version = document
        .get("asyncapi")
        .and_then(Value::as_str)
        .ok_or("not an AsyncAPI document (no `asyncapi` version)")?;
    let mut left = MAX_RESOLVED_VALUES;
    let resolved = resolve(document, document, 0, &mut left)?;
    let default_content_type = resolved.get("defaultContentType").and_then(Value::as_str);
    let servers = kafka_servers(&resolved);
    let only_server = match servers.as_slice() {
        [(name, _)] => Some(name.clone()),
        _ => None,
    };
    let channels = resolved
        .get("channels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut topics = Vec::new();
    for (key, channel) in &channels {
        let (name, messages, server) = if version.starts_with("2.") {
            let messages: Vec<&Value> = ["publish", "subscribe"]
                .iter()
                .filter_map(|op| channel.get(*op).and_then(|o| o.get("message")))
                .collect();
            let server = channel.get("servers").and_then(|s| s.get(0)).and_then(Value::as_str);
            (key.clone(), messages, server.map(str::to_owned))
        } else if version.starts_with("3.") {
            let address = channel.get("address").and_then(Value::as_str).unwrap_or(key);
            let messages: Vec<&Value> = channel
                .get("messages")
                .and_then(Value::as_object)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            // 3.0 names servers by `$ref`, already replaced by the server object: find its name.
            let server = channel
                .get("servers")
                .and_then(|s| s.get(0))
                .and_then(|s| server_name(&resolved, s));
            (address.to_owned(), messages, server)
        } else {
            return Err(format!("AsyncAPI version {version} is not supported; use 2.x or 3.0"));
        };
        // One message per channel carries the schema; `oneOf` messages (2.x) take their first.
        let message = messages
            .first()
            .map(|m| m.get("oneOf").and_then(|o| o.get(0)).unwrap_or(m));
        let payload = message.and_then(|m| m.get("payload")).cloned();
        let content_type = message
            .and_then(|m| m.get("contentType"))
            .and_then(Value::as_str)
            .or(default_content_type)
            .map(str::to_owned);
        let key_schema = message.and_then(|m| m.pointer("/bindings/kafka/key")).cloned();
        let partitions = channel
            .pointer("/bindings/kafka/partitions")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok());
        topics.push(ImportedTopic {
            name,
            server: server.or_else(|| only_server.clone()),
            value_schema: payload,
            key_schema,
            content_type,
            partitions,
        });
    }
    Ok(Imported { servers, topics })
}

/// Kafka servers with their bootstrap address (2.x `url`, 3.0 `host`).
fn kafka_servers(document: &Value) -> Vec<(String, String)> {
    let Some(servers) = document.get("servers").and_then(Value::as_object) else {
        return Vec::new();
    };
    servers
        .iter()
        .filter(|(_, s)| {
            matches!(
                s.get("protocol").and_then(Value::as_str),
                Some("kafka" | "kafka-secure")
            )
        })
        .filter_map(|(name, s)| {
            let address = s.get("host").or_else(|| s.get("url")).and_then(Value::as_str)?;
            let address = address.split("://").last().unwrap_or(address).trim_end_matches('/');
            Some((name.clone(), address.to_owned()))
        })
        .collect()
}

fn server_name(document: &Value, server: &Value) -> Option<String> {
    document
        .get("servers")?
        .as_object()?
        .iter()
        .find(|(_, s)| *s == server)
        .map(|(name, _)| name.clone())
}

/// `value` with every local `$ref` (`#/...`) replaced by what it points to, within `left` values made in all: a
/// reference used twice at each of many levels doubles what it makes at each (thirty levels are a billion copies).
fn resolve(document: &Value, value: &Value, depth: usize, left: &mut usize) -> Result<Value, String> {
    if depth > MAX_REF_DEPTH {
        return Err("$ref chain too deep (a reference cycle?)".into());
    }
    *left = left.checked_sub(1).ok_or_else(|| {
        format!("the document expands to more than {MAX_RESOLVED_VALUES} values once its $refs are resolved")
    })?;
    Ok(match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref")
                && let Some(pointer) = reference.strip_prefix('#')
            {
                let target = document
                    .pointer(pointer)
                    .ok_or_else(|| format!("$ref '{reference}' points nowhere"))?;
                return resolve(document, target, depth + 1, left);
            }
            let mut out = serde_json::Map::new();
            for (key, item) in map {
                out.insert(key.clone(), resolve(document, item, depth, left)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve(document, item, depth, left))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document of `seeds/000_*`, as written there.
    const SEED: &str = include_str!("../../tests/fixtures/kafka.yaml");

    #[test]
    fn the_seed_document_gives_its_topic_and_server() {
        let document: Value = serde_yaml_ng::from_str(SEED).unwrap();
        let imported = from_document(&document).unwrap();
        assert_eq!(
            imported.servers,
            vec![("mokapi".to_owned(), "localhost:9092".to_owned())]
        );
        let [orders] = imported.topics.as_slice() else {
            panic!("{imported:?}")
        };
        assert_eq!(orders.name, "orders");
        assert_eq!(orders.server.as_deref(), Some("mokapi"));
        assert_eq!(orders.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            orders.value_schema,
            Some(serde_json::json!({"type": "object", "properties": {"foo": {"type": "string"}}}))
        );
    }

    #[test]
    fn version_3_channels_messages_bindings_and_servers() {
        let document: Value = serde_yaml_ng::from_str(
            r#"
asyncapi: 3.0.0
info: { title: Shop, version: 1.0.0 }
defaultContentType: application/json
servers:
  analytics: { host: "kafka-a:9092", protocol: kafka }
  main: { host: "kafka-m:9092", protocol: kafka }
channels:
  orderPlaced:
    address: shop.orders
    servers: [ { $ref: '#/servers/main' } ]
    messages:
      placed:
        payload: { type: object, required: [id], properties: { id: { type: integer } } }
        bindings: { kafka: { key: { type: string, pattern: "^o-[0-9]+$" } } }
    bindings: { kafka: { partitions: 6 } }
operations:
  sendOrder: { action: send, channel: { $ref: '#/channels/orderPlaced' } }
"#,
        )
        .unwrap();
        let imported = from_document(&document).unwrap();
        assert_eq!(imported.servers.len(), 2);
        let [topic] = imported.topics.as_slice() else {
            panic!("{imported:?}")
        };
        assert_eq!(topic.name, "shop.orders");
        assert_eq!(topic.server.as_deref(), Some("main"));
        assert_eq!(topic.partitions, Some(6));
        assert_eq!(topic.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            topic.key_schema,
            Some(serde_json::json!({"type": "string", "pattern": "^o-[0-9]+$"}))
        );
    }

    #[test]
    fn broken_documents_say_why() {
        let not_asyncapi: Value = serde_yaml_ng::from_str("openapi: 3.0.0").unwrap();
        assert!(
            from_document(&not_asyncapi)
                .unwrap_err()
                .contains("not an AsyncAPI document")
        );
        let dangling: Value = serde_yaml_ng::from_str(
            "asyncapi: 2.6.0\nchannels:\n  a:\n    publish:\n      message:\n        $ref: '#/nope'",
        )
        .unwrap();
        assert!(from_document(&dangling).unwrap_err().contains("points nowhere"));
        let old: Value = serde_yaml_ng::from_str("asyncapi: 1.2.0\nchannels: { a: {} }").unwrap();
        assert!(from_document(&old).unwrap_err().contains("not supported"));
        // Each level refers to the one below twice: 2^30 copies of the bottom once resolved.
        let mut yaml = String::from("asyncapi: 2.6.0\nchannels: {}\ncomponents:\n  schemas:\n    a0: {type: string}\n");
        for level in 1..=30 {
            let below = level - 1;
            yaml.push_str(&format!("    a{level}: {{allOf: [{{$ref: '#/components/schemas/a{below}'}}, {{$ref: '#/components/schemas/a{below}'}}]}}\n"));
        }
        let fanned: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert!(from_document(&fanned).unwrap_err().contains("expands to more than"));
    }
}
