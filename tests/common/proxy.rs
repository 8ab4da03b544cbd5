//! A TCP proxy on 127.0.0.1 in front of a broker that counts the Kafka requests passing through it by API key: to
//! see how many requests luka makes of a broker (its metadata requests, say). Bootstrap luka at [`KafkaProxy::addr`];
//! brokers advertise their own addresses, so only the connections made to the bootstrap address pass through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Kafka's API key of Metadata requests.
pub const METADATA: i16 = 3;

pub struct KafkaProxy {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<i16, usize>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl KafkaProxy {
    /// Listens on a free port and forwards each connection to `target`.
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let counted = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(forward(client, broker, Arc::clone(&counted)));
            }
        });
        Self { addr, counts, accept }
    }

    /// Requests with `api_key` that have passed so far.
    pub fn requests(&self, api_key: i16) -> usize {
        self.counts.lock().expect("counts").get(&api_key).copied().unwrap_or(0)
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies the broker's answers back as they come, and the client's requests frame by frame, counting each.
async fn forward(client: TcpStream, broker: TcpStream, counts: Arc<Mutex<HashMap<i16, usize>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut broker_read, &mut client_write).await;
    });
    loop {
        let mut size = [0u8; 4];
        if client_read.read_exact(&mut size).await.is_err() {
            break;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        if client_read.read_exact(&mut frame).await.is_err() {
            break;
        }
        if frame.len() >= 2 {
            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
            *counts.lock().expect("counts").entry(api_key).or_default() += 1;
        }
        if broker_write.write_all(&size).await.is_err() || broker_write.write_all(&frame).await.is_err() {
            break;
        }
    }
    answers.abort();
}
