//! Which configured topic (and so which cluster) a topic name goes to.

use super::ProduceError;
use crate::config::{Config, Topic, is_valid_topic_name};

/// Finds the topic config for `topic`, optionally on a given `cluster`.
///
/// The most specific entry wins (exact names, then the longest pattern). Without a cluster, two equally specific
/// entries on different clusters are ambiguous: the caller must say which cluster.
pub fn resolve<'c>(config: &'c Config, cluster: Option<&str>, topic: &str) -> Result<&'c Topic, ProduceError> {
    if !is_valid_topic_name(topic) {
        return Err(ProduceError::InvalidTopicName {
            topic: topic.to_owned(),
        });
    }
    if let Some(cluster) = cluster.filter(|c| !config.clusters.contains_key(*c)) {
        let defined: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
        return Err(ProduceError::ClusterNotFound {
            cluster: cluster.to_owned(),
            defined: defined.join(", "),
        });
    }
    let mut candidates = config
        .topics
        .iter()
        .filter(|t| t.pattern.matches(topic))
        .filter(|t| cluster.is_none_or(|c| t.cluster == c));
    let Some(best) = candidates.next() else {
        return Err(match cluster {
            Some(cluster) => ProduceError::TopicNotOnCluster {
                topic: topic.to_owned(),
                cluster: cluster.to_owned(),
            },
            None => ProduceError::TopicNotConfigured {
                topic: topic.to_owned(),
            },
        });
    };
    let rivals: Vec<&Topic> = candidates
        .take_while(|t| t.pattern.is_exact() == best.pattern.is_exact())
        .filter(|t| t.pattern.specificity() == best.pattern.specificity() && t.cluster != best.cluster)
        .collect();
    if rivals.is_empty() {
        return Ok(best);
    }
    let mut clusters: Vec<&str> = std::iter::once(best)
        .chain(rivals)
        .map(|t| t.cluster.as_str())
        .collect();
    clusters.dedup();
    Err(ProduceError::AmbiguousTopic {
        topic: topic.to_owned(),
        clusters: clusters.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            r#"
[clusters.a]
bootstrap = ["h:1"]
default = true
[clusters.b]
bootstrap = ["h:2"]
[topics.orders]
[topics."events.*"]
cluster = "b"
[topics."*.alerts"]
cluster = "a"
[topics."logs.*"]
cluster = "a"
[topics."logs.*x"]
cluster = "b"
"#,
            std::path::Path::new("."),
            |_| None,
        )
        .unwrap()
    }

    #[test]
    fn exact_then_most_specific_pattern() {
        let c = config();
        assert_eq!(resolve(&c, None, "orders").unwrap().cluster, "a");
        assert_eq!(resolve(&c, None, "events.click").unwrap().cluster, "b");
        assert_eq!(resolve(&c, None, "logs.x").unwrap().cluster, "b");
    }

    #[test]
    fn equally_specific_patterns_on_two_clusters_need_a_cluster() {
        let c = config();
        let err = resolve(&c, None, "events.alerts").unwrap_err();
        assert!(err.to_string().contains("specify the cluster"), "{err}");
        assert_eq!(
            resolve(&c, Some("a"), "events.alerts").unwrap().pattern.as_str(),
            "*.alerts"
        );
    }

    #[test]
    fn unknown_topics_and_clusters_say_so() {
        let c = config();
        assert_eq!(
            resolve(&c, None, "nope")
                .unwrap_err()
                .to_string()
                .split(" (")
                .next()
                .unwrap(),
            "kafka topic 'nope' not found"
        );
        assert_eq!(
            resolve(&c, Some("b"), "orders").unwrap_err().to_string(),
            "kafka topic 'orders' not found on cluster 'b'"
        );
        assert!(
            resolve(&c, Some("zz"), "orders")
                .unwrap_err()
                .to_string()
                .starts_with("kafka cluster 'zz' not found")
        );
    }
}
