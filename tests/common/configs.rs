//! Configs that several test files start luka on; `{broker0}` stands for the first broker's address.

/// The cluster and the topics of the hosted API's examples: `greetings` (1 partition) and `cities` (4). A macro,
/// so that a config constant can `concat!` it.
#[macro_export]
macro_rules! example_topics {
    () => {
        r#"
[clusters.local]
bootstrap = ["{broker0}"]
produce_timeout_ms = 3000

[topics.greetings]
partitions = 1
[topics.cities]
partitions = 4
"#
    };
}

/// The REST produce API: the example topics and a pattern, a small body limit, and a user who may write
/// `greetings` only.
pub const REST: &str = concat!(
    r#"
[server]
max_body_bytes = 4096
"#,
    crate::example_topics!(),
    r#"[topics."events.*"]
partitions = 2
"#,
    crate::demo_user!(),
    r#"
[[users]]
name = "greeter"
password = "hello"
topics = ["greetings"]
"#
);

/// Lua functions: two clusters on one broker, topics for each kind of produce test (one of them ambiguous between
/// the clusters), and tight Lua limits (the CPU budget is the tests' default, see [`crate::common::TEST_CPU_MS`]). A test file
/// adds its `[[routes]]`.
pub const LUA: &str = concat!(
    r#"
[clusters.local]
bootstrap = ["{broker0}"]
linger_ms = 1
produce_timeout_ms = 5000
default = true

[clusters.other]
bootstrap = ["{broker0}"]

[topics.hooks]
partitions = 1
[topics.multi]
partitions = 4
[topics.misc]
partitions = 1
[topics.random]
partitions = 1
[topics.load]
partitions = 2
[topics."amb.*"]
cluster = "local"
[topics."*.amb"]
cluster = "other"
partitions = 1

[lua]
memory_mb = 32
timeout_ms = 3000
vms = 2
"#,
    crate::demo_user!()
);
