//! Steady write load for fault tests: writers that each send one record at a time (through REST or a Lua function,
//! keyed or not) until told to stop, what each was told, and the checks every fault test makes of the log
//! afterwards (read back with the Java client): each acknowledged record present once where its answer said, none
//! twice, none answered with a definite failure present.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Harness;
use super::read::{high_watermark, java_read_records, text};

/// The Lua function the writers' Lua requests go to (route it at `/lua`): writes the record it is given to the
/// topic named in the call; a failure it does not catch is answered by luka (503, 504).
pub const WRITE_FUNCTION: (&str, &str) = (
    "write.lua",
    r#"
return function(req)
  local call = req:json()
  local written = kafka.produce { topic = call.topic, key = call.key, value = call.value }
  return { json = { partition = written.partition, offset = written.offset } }
end
"#,
);

/// What a writer was told about one record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub value: String,
    pub status: u16,
    pub answer: Value,
    pub sent: Instant,
    pub answered: Instant,
}

impl Outcome {
    /// Where the answer says the record is, for a 200.
    pub fn at(&self) -> Option<(i32, i64)> {
        let row = if self.answer.is_array() {
            &self.answer[0]
        } else {
            &self.answer
        };
        Some((row["partition"].as_i64()? as i32, row["offset"].as_i64()?))
    }

    /// A failure that says nothing was written: a 4xx, a 503, or a 504 that says so.
    pub fn is_definite_failure(&self) -> bool {
        let error = self.answer["error"].as_str().unwrap_or_default();
        (400..500).contains(&self.status)
            || self.status == 503
            || (self.status == 504 && error.contains("nothing was written"))
    }
}

/// One writer: REST or Lua, keyed (all its records in one partition, in order) or not.
#[derive(Debug, Clone, Copy)]
pub struct Writer {
    pub id: usize,
    pub lua: bool,
    pub keyed: bool,
}

impl Writer {
    /// The prefix of the values it writes in `round`.
    pub fn prefix(&self, round: usize) -> String {
        format!("r{round}-w{}-", self.id)
    }
}

/// Three REST writers and two Lua ones keyed, two REST and one Lua not.
pub const WRITERS: [Writer; 8] = [
    Writer {
        id: 0,
        lua: false,
        keyed: true,
    },
    Writer {
        id: 1,
        lua: false,
        keyed: true,
    },
    Writer {
        id: 2,
        lua: false,
        keyed: true,
    },
    Writer {
        id: 3,
        lua: false,
        keyed: false,
    },
    Writer {
        id: 4,
        lua: false,
        keyed: false,
    },
    Writer {
        id: 5,
        lua: true,
        keyed: true,
    },
    Writer {
        id: 6,
        lua: true,
        keyed: true,
    },
    Writer {
        id: 7,
        lua: true,
        keyed: false,
    },
];

/// Writer `writer`'s key, if it writes keyed.
pub fn key_of(writer: Writer) -> Option<String> {
    writer.keyed.then(|| format!("writer-{}", writer.id))
}

async fn write(h: &Harness, topic: &str, round: usize, writer: Writer, seq: usize) -> Outcome {
    let value = format!("{}{seq:06}", writer.prefix(round));
    let key = key_of(writer);
    let request = if writer.lua {
        h.http
            .post(h.url("/lua"))
            .body(json!({ "topic": topic, "key": key, "value": value }).to_string())
    } else {
        let mut message = json!({ "value": value });
        if let Some(key) = &key {
            message["key"] = json!(key);
        }
        h.http
            .post(h.url(&format!("/produce/{topic}")))
            .basic_auth("demo", Some("demo"))
            .body(message.to_string())
    };
    let sent = Instant::now();
    let (status, answer) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "error": e.to_string() })),
    };
    Outcome {
        value,
        status,
        answer,
        sent,
        answered: Instant::now(),
    }
}

/// Runs every writer against `topic` until `stop`, one request at a time each, pausing between requests.
pub async fn load(h: Arc<Harness>, topic: &'static str, round: usize, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let tasks = WRITERS.map(|writer| {
        let (h, stop) = (Arc::clone(&h), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(write(&h, topic, round, writer, seq).await);
                seq += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            outcomes
        })
    });
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all
}

/// Every record of `topic`'s `partitions`: value → where it is (partition, offset).
pub async fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> HashMap<String, Vec<(i32, i64)>> {
    let mut found: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    for partition in 0..partitions {
        let end = high_watermark(bootstrap, topic, partition).await;
        for record in java_read_records(bootstrap, topic, partition, 0, end as usize).await {
            let value = text(&record).1.expect("every record has a value");
            found.entry(value).or_default().push((partition, record.offset));
        }
    }
    found
}

/// The checks of every fault test: nothing doubled, every acknowledged record where its answer said, no record
/// answered with a definite failure present. Prints the answers by status.
pub fn check_answers(outcomes: &[Outcome], found: &HashMap<String, Vec<(i32, i64)>>) {
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for outcome in outcomes {
        *by_status.entry(outcome.status).or_default() += 1;
    }
    let definite = outcomes.iter().filter(|o| o.is_definite_failure()).count();
    println!(
        "load: {} requests, by status {by_status:?}, {definite} of them definite failures; {} records in the topic",
        outcomes.len(),
        found.len()
    );
    let doubled: Vec<_> = found.iter().filter(|(_, at)| at.len() > 1).collect();
    assert!(doubled.is_empty(), "records written more than once: {doubled:?}");
    for outcome in outcomes {
        let present = found.get(&outcome.value);
        if outcome.status == 200 {
            let at = outcome
                .at()
                .unwrap_or_else(|| panic!("a 200 without a place: {outcome:?}"));
            assert_eq!(
                present.map(Vec::as_slice),
                Some(&[at][..]),
                "acknowledged record: {outcome:?}"
            );
        } else if outcome.is_definite_failure() {
            assert!(
                present.is_none(),
                "a record answered with a definite failure was written: {outcome:?}"
            );
        }
    }
}
