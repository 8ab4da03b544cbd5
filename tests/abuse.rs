//! Clients that stall, flood or misbehave, against the real server: they cost their own connections, never other
//! clients' access. Bounded: a few dozen connections to 127.0.0.x, each test done in seconds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CONFIG: &str = concat!(
    r#"
[server]
max_connections = 64
max_connections_per_address = 16
body_timeout_ms = 1000

[clusters.local]
bootstrap = ["{broker0}"]

[topics.cities]
partitions = 4

[[routes]]
path = "/open"
function = "open.lua"
"#,
    demo_user!()
);

const OPEN: &str = "return function(req) return { json = { size = #req.body } } end";

/// A connection from `from` (any 127.0.0.x) that sends `head` and then nothing.
async fn stalled(from: [u8; 4], server: SocketAddr, head: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: luka\r\n\r\n";

/// Sends `GET /healthz` on `stream`; whether a 200 came back within 5 s.
async fn healthz_answered(stream: &mut TcpStream) -> bool {
    stream.write_all(HEALTHZ).await.unwrap();
    let mut buffer = [0u8; 1024];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await,
        Ok(Ok(n)) if n > 0 && buffer.starts_with(b"HTTP/1.1 200")
    )
}

/// What the server sends before closing (or until `within` passes): the status line and the rest.
async fn answer(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                received.extend_from_slice(&buffer[..n]);
                if complete(&String::from_utf8_lossy(&received)) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether `text` holds a whole response (headers and a body of its content-length).
fn complete(text: &str) -> bool {
    first_response_length(text).is_some()
}

/// The length of the first whole response (headers and a body of its content-length) in `text`, once it has all
/// come.
fn first_response_length(text: &str) -> Option<usize> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())?;
    (body.len() >= length).then_some(head.len() + 4 + length)
}

/// `luka_http_refused_total{reason}` now (the metrics are the process's: tests beside this one add to them too).
async fn refused(h: &Harness, reason: &str) -> f64 {
    common::sample(
        &h.scrape_metrics().await,
        "luka_http_refused_total",
        &[&format!("reason=\"{reason}\"")],
    )
}

/// Waits until `luka_http_refused_total{reason}` is at least `count` (hyper's refusals are counted once their
/// connection has ended, just after the client has read the answer).
async fn refused_reaches(h: &Harness, reason: &str, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused(h, reason).await < count {
        assert!(
            Instant::now() < deadline,
            "luka_http_refused_total{{reason={reason:?}}} stayed below {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server_addr(h: &Harness) -> SocketAddr {
    h.base.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_and_floods_from_one_address_do_not_lock_others_out() {
    let h = Harness::start_with(1, CONFIG, &[("open.lua", OPEN)]).await;
    let server = server_addr(&h);
    let with_credentials = "POST /produce/cities HTTP/1.1\r\nHost: luka\r\nAuthorization: Basic ZGVtbzpkZW1v\r\n\
                            Content-Length: 100\r\n\r\n";
    let open_route = "POST /open HTTP/1.1\r\nHost: luka\r\nContent-Length: 100\r\n\r\n";

    // One address takes its whole share with bodies that never come.
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..16 {
        let head = if i % 2 == 0 { with_credentials } else { open_route };
        held.push(stalled([127, 0, 0, 2], server, head).await);
    }
    // Past its share, the same address is turned away at once, and counted.
    let refused_before = refused(&h, "address_share").await;
    for _ in 0..8 {
        let mut extra = stalled([127, 0, 0, 2], server, open_route).await;
        let refused = answer(&mut extra, Duration::from_secs(2)).await;
        assert!(
            refused.starts_with("HTTP/1.1 503") && refused.contains("too many connections from your address"),
            "{refused:?}"
        );
    }
    refused_reaches(&h, "address_share", refused_before + 8.0).await;
    // Everyone else is served at once.
    let asked = Instant::now();
    let (status, _) = h.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "healthz took {:?}",
        asked.elapsed()
    );

    // Without credentials, a produce request is answered from its headers: no body is waited for.
    let asked = Instant::now();
    let mut anonymous = stalled(
        [127, 0, 0, 3],
        server,
        "POST /produce/cities HTTP/1.1\r\nHost: luka\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    let refused = answer(&mut anonymous, Duration::from_secs(5)).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "401 took {:?}",
        asked.elapsed()
    );

    // The stalled bodies end with 408 after the body timeout, not the request timeout.
    for stream in &mut held {
        let timed_out = answer(stream, Duration::from_secs(5)).await;
        assert!(
            timed_out.starts_with("HTTP/1.1 408") && timed_out.contains("did not arrive within 1000 ms"),
            "{timed_out:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "408s came after {:?}",
        started.elapsed()
    );

    // The share is free again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = stalled([127, 0, 0, 2], server, "GET /healthz HTTP/1.1\r\nHost: luka\r\n\r\n").await;
    assert!(
        answer(&mut again, Duration::from_secs(2))
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_luka_cannot_serve_correctly_are_refused_with_501() {
    let h = Harness::start_with(1, CONFIG, &[("open.lua", OPEN)]).await;
    let server = server_addr(&h);
    let cases = [
        (
            "POST /open HTTP/1.1\r\nHost: luka\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding 'gzip' is not supported",
        ),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "CONNECT is not supported",
        ),
    ];
    for (request, expected) in cases {
        let mut stream = stalled([127, 0, 0, 1], server, request).await;
        let answer = answer(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 501"), "{request:?}: {answer:?}");
        assert!(answer.contains(expected), "{request:?}: {answer:?}");
    }
    // Plain chunked is fine.
    let mut stream = stalled(
        [127, 0, 0, 1],
        server,
        "POST /open HTTP/1.1\r\nHost: luka\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let answer = answer(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains(r#"{"size":3}"#),
        "{answer:?}"
    );
}

/// A request head (request line and headers) is held in memory until it is whole, so its size is bounded: up to
/// 64 KiB is served, more is a 431 and the connection closes (hyper's default would hold about 400 KB a connection).
/// hyper answers these (and heads it cannot read, 400) itself, so `luka_http_refused_total` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_past_64_kib_are_refused_with_431() {
    let h = Harness::start_with(1, CONFIG, &[("open.lua", OPEN)]).await;
    let server = server_addr(&h);
    let head = |bytes: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: luka\r\nX-Big: {}\r\n\r\n",
            "a".repeat(bytes)
        )
    };
    let mut stream = stalled([127, 0, 0, 1], server, &head(60 * 1024)).await;
    let served = answer(&mut stream, Duration::from_secs(5)).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served:?}");
    let too_large_before = refused(&h, "head_too_large").await;
    let mut stream = stalled([127, 0, 0, 1], server, &head(100 * 1024)).await;
    let answered = answer(&mut stream, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 431"), "{answered:?}");
    refused_reaches(&h, "head_too_large", too_large_before + 1.0).await;
    // A head hyper cannot read is answered 400 by hyper itself; it is counted too.
    let bad_before = refused(&h, "bad_head").await;
    let mut stream = stalled([127, 0, 0, 1], server, "NOT A REQUEST\r\n\r\n").await;
    let answered = answer(&mut stream, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 400"), "{answered:?}");
    refused_reaches(&h, "bad_head", bad_before + 1.0).await;
}

/// Another site's page cannot make a logged-in browser write or read: browsers resend cached basic credentials, so
/// requests they mark as cross-site are refused unless `[server] cors_origins` names the page's origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_browser_requests_are_refused_and_configured_origins_allowed() {
    let config =
        common::configs::REST.replace("[server]\n", "[server]\ncors_origins = [\"https://app.example.com\"]\n");
    let h = Harness::start(1, &config).await;
    let send = |method: reqwest::Method, path: &str, headers: &[(&'static str, &'static str)]| {
        let mut request = h.http.request(method, h.url(path)).basic_auth("demo", Some("demo"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };

    // An image tag on another site: a navigation-like GET with no Origin, marked cross-site.
    let image = send(
        reqwest::Method::GET,
        "/produce/greetings/forged",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    let image = image.unwrap();
    assert_eq!(image.status(), 403);
    let answer: serde_json::Value = image.json().await.unwrap();
    assert!(
        common::error_of(&answer).starts_with("browser request from another site refused"),
        "{answer}"
    );
    // A form post or fetch from a page of another origin, to produce and to read.
    for path in ["/produce/greetings", "/fetch"] {
        let posted = send(reqwest::Method::POST, path, &[("origin", "https://evil.example")])
            .await
            .unwrap();
        assert_eq!(posted.status(), 403, "{path}");
        assert!(posted.headers().get("access-control-allow-origin").is_none());
    }
    common::read::assert_no_record(&h.bootstrap(0), "greetings", 0, 0).await;

    // The configured origin: a preflight, then the request, both with CORS headers for it.
    let preflight = send(
        reqwest::Method::OPTIONS,
        "/produce/greetings",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = |name: &str| preflight.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(allowed("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(allowed("access-control-allow-methods"), "GET, POST");
    assert!(allowed("access-control-allow-headers").contains("authorization"));
    let written = h
        .http
        .post(h.url("/produce/greetings"))
        .basic_auth("demo", Some("demo"))
        .header("origin", "https://app.example.com")
        .header("sec-fetch-site", "cross-site")
        .body(r#"{"value":"from the app"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 200);
    assert_eq!(
        written.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(written.headers()["access-control-allow-credentials"], "true");
    // Clients that are not browsers send neither header and are served as before.
    let (status, _) = h.post("/produce/greetings", r#"{"value":"from curl"}"#).await;
    assert_eq!(status, 200);
}

/// Per-user request and record rates, and failed logins per client address, answered 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let config = concat!(
        r#"
[server]
max_auth_failures_per_minute = 3

[metrics]
user = "demo"

[clusters.local]
bootstrap = ["{broker0}"]

[topics.greetings]
partitions = 1

[[users]]
name = "limited"
password = "pw"
topics = ["*"]
requests_per_second = 2
records_per_second = 5

[[users]]
name = "counted"
password = "pw"
topics = ["*"]
records_per_second = 2
"#,
        demo_user!()
    );
    let h = Harness::start(1, config).await;
    let produce = |client: &reqwest::Client, user: &str, password: &str, body: String| {
        client
            .post(h.url("/produce/greetings"))
            .basic_auth(user, Some(password))
            .body(body)
            .send()
    };
    let messages = |n: usize| serde_json::Value::from(vec![serde_json::json!({"value": "v"}); n]).to_string();

    // Two requests a second, all at once: the third is refused.
    for _ in 0..2 {
        let response = produce(&h.http, "limited", "pw", messages(1)).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = produce(&h.http, "limited", "pw", messages(1)).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert!(
        common::error_of(&answer).starts_with("user 'limited' may send 2 requests per second (requests_per_second)"),
        "{answer}"
    );
    // Five records a second: ten in one request never pass (413: retrying cannot help), five do.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = produce(&h.http, "limited", "pw", messages(10)).await.unwrap();
    assert_eq!(refused.status(), 413);
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert!(
        common::error_of(&answer).starts_with("10 records in one request; user 'limited' may write at most 5 at once"),
        "{answer}"
    );
    let written = produce(&h.http, "limited", "pw", messages(5)).await.unwrap();
    assert_eq!(written.status(), 200);
    // Users without limits are not limited.
    for _ in 0..5 {
        assert_eq!(
            produce(&h.http, "demo", "demo", messages(1)).await.unwrap().status(),
            200
        );
    }

    // Three failed logins a minute from one address, also when guesses come at once; then even right credentials
    // from it wait, others do not.
    let first = produce(&h.http, "demo", "wrong", messages(1)).await.unwrap();
    assert_eq!(first.status(), 401);
    let guesses = futures::future::join_all((0..9).map(|_| produce(&h.http, "demo", "wrong", messages(1)))).await;
    let statuses: Vec<u16> = guesses.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    let refused = produce(&h.http, "demo", "wrong", messages(1)).await.unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "retry after {wait} s");
    let right = produce(&h.http, "demo", "demo", messages(1)).await.unwrap();
    assert_eq!(right.status(), 429, "the address is shut out for a while");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = produce(&elsewhere, "demo", "demo", messages(1)).await.unwrap();
    assert_eq!(response.status(), 200, "another address is not affected");
    // One wrong password from an address does not make its right logins count as failures afterwards.
    let office = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 4]))
        .build()
        .unwrap();
    let typo = produce(&office, "demo", "wrong", messages(1)).await.unwrap();
    assert_eq!(typo.status(), 401);
    for _ in 0..5 {
        let right = produce(&office, "demo", "demo", messages(1)).await.unwrap();
        assert_eq!(right.status(), 200, "a right login after one wrong one");
    }

    // /metrics counts failed logins like every other login: no place to guess passwords at leisure.
    let guesser = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap();
    let scrape = |password: &'static str| guesser.get(h.url("/metrics")).basic_auth("demo", Some(password)).send();
    for _ in 0..3 {
        assert_eq!(scrape("wrong").await.unwrap().status(), 401);
    }
    assert_eq!(scrape("wrong").await.unwrap().status(), 429);
    assert_eq!(
        scrape("demo").await.unwrap().status(),
        429,
        "the address is shut out for a while"
    );

    // /webhook writes count against the user's records_per_second as REST's do.
    let webhook = || {
        elsewhere
            .post(h.url("/webhook?topic=greetings"))
            .basic_auth("counted", Some("pw"))
            .body("event")
            .send()
    };
    for _ in 0..2 {
        assert_eq!(webhook().await.unwrap().status(), 200);
    }
    let refused = webhook().await.unwrap();
    assert_eq!(refused.status(), 429);
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert!(
        common::error_of(&answer).starts_with("user 'counted' may write 2 records per second (records_per_second)"),
        "{answer}"
    );
}

/// Keep-alive connections that a client keeps re-using cannot hold every slot: while none is free, the connection
/// idle the longest is closed so that a new client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_give_way_to_new_clients() {
    let config = CONFIG
        .replace("max_connections = 64", "max_connections = 4")
        .replace("max_connections_per_address = 16", "max_connections_per_address = 8");
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN)]).await;
    let addr = server_addr(&h);

    // Four clients take every slot and keep their connections open between requests.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(healthz_answered(&mut stream).await);
        held.push(stream);
    }
    // A fifth is served at once: the connection idle the longest is closed for it.
    let started = Instant::now();
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_answered(&mut fifth).await, "the new client is answered");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let mut buffer = [0u8; 16];
    let first = tokio::time::timeout(Duration::from_secs(1), held[0].read(&mut buffer)).await;
    assert!(
        matches!(first, Ok(Ok(0))),
        "the longest-idle connection was closed: {first:?}"
    );
}

/// A connection that has sent part of a request head and then nothing is not a request in progress: asked to close
/// for a new client it is closed within a second, not left reading until the header timeout (10 s here), and it is
/// not asked again and again while others could make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_half_a_head_give_way_to_new_clients() {
    let config = CONFIG.replace("max_connections = 64", "max_connections = 2").replace(
        "body_timeout_ms = 1000",
        "body_timeout_ms = 1000\nheader_timeout_ms = 10000",
    );
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN)]).await;
    let addr = server_addr(&h);
    let mut halves = Vec::new();
    for _ in 0..2 {
        halves.push(stalled([127, 0, 0, 1], addr, "G").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let mut new = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_answered(&mut new).await, "the new client is answered");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let mut buffer = [0u8; 16];
    let first = tokio::time::timeout(Duration::from_secs(1), halves[0].read(&mut buffer)).await;
    assert!(
        matches!(first, Ok(Ok(0) | Err(_))),
        "the oldest half head was closed: {first:?}"
    );
}

/// An answer larger than the socket's buffers can hold.
const BIG: &str = "return function(req) return { body = string.rep('x', 8 * 1024 * 1024) } end";

/// Connections whose clients ask for a large answer and never read it (hyper goes on writing it) are not serving a
/// request any more, nor idle between requests: asked to close for a new client they are closed within a second,
/// not left writing until the header timeout (10 s here), so a few addresses cannot hold every slot that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_read_their_answers_give_way_to_new_clients() {
    let config = CONFIG.replace("max_connections = 64", "max_connections = 2").replace(
        "body_timeout_ms = 1000",
        "body_timeout_ms = 1000\nheader_timeout_ms = 10000",
    ) + "\n[[routes]]\npath = \"/big\"\nfunction = \"big.lua\"\n[lua]\nmemory_mb = 64\n";
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN), ("big.lua", BIG)]).await;
    let addr = server_addr(&h);
    let mut unread = Vec::new();
    for _ in 0..2 {
        // A small receive window: luka is left writing the answer.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big HTTP/1.1\r\nhost: luka\r\n\r\n")
            .await
            .unwrap();
        unread.push(stream);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    let mut new = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_answered(&mut new).await, "the new client is answered");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

/// Sends `head` and then `body_bytes` bytes of body, and then reads the answer until the server closes, as many
/// clients do (curl, for one, sends the whole body before it reads): what the client gets to read.
async fn upload(server: SocketAddr, head: String, body_bytes: usize) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(server).await?;
    stream.write_all(head.as_bytes()).await?;
    let sent = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&vec![b'x'; body_bytes]))
        .await
        .expect("the body is taken in or refused");
    sent?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Requests answered before their bodies are read (wrong credentials, a body past the limit) reach a client that
/// is still uploading as the answer that says what was wrong, not as a connection reset (closing a socket with bytes
/// unread resets it, and a reset drops the answer the client has not read yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_given_before_the_body_is_read_reach_an_uploading_client() {
    let h = Harness::start_with(1, CONFIG, &[("open.lua", OPEN)]).await;
    let server = server_addr(&h);
    let head = |auth: &str, length: usize| {
        format!(
            "POST /produce/cities HTTP/1.1\r\nHost: luka\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // demo:wrong, and demo:demo with a body past the 1 MiB limit.
    for (head, length, status) in [
        (head("ZGVtbzp3cm9uZw==", 8 * 1024 * 1024), 8 * 1024 * 1024, "401"),
        (head("ZGVtbzpkZW1v", 8 * 1024 * 1024), 8 * 1024 * 1024, "413"),
    ] {
        let answer = upload(server, head, length).await;
        let answer = answer.unwrap_or_else(|e| panic!("{status}: the connection failed: {e}"));
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
    }
}

/// `header_timeout_ms` closes a connection that takes too long over its request head (sent in pieces, or not
/// finished), and a keep-alive connection left idle as long; a connection that keeps sending requests stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_idle_connections_are_closed_after_the_header_timeout() {
    let config = CONFIG.replace(
        "body_timeout_ms = 1000",
        "body_timeout_ms = 1000\nheader_timeout_ms = 600",
    );
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN)]).await;
    let addr = server_addr(&h);

    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buffer = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    let started = Instant::now();
    // A head that is never finished.
    let mut unfinished = stalled([127, 0, 0, 1], addr, "GET /healthz HTTP/1.1\r\nhost: luka\r\n").await;
    // A head sent a byte every 100 ms: each byte is progress, but the whole head takes longer than allowed.
    let mut dribbling = TcpStream::connect(addr).await.unwrap();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: luka\r\nx-slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if dribbling.write_all(&[*byte]).await.is_err() {
                return (dribbling, true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (dribbling, false)
    });
    // A keep-alive connection answered once, then left idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_answered(&mut idle).await);
    // A connection that sends a request every 200 ms, for three times the timeout.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for _ in 0..9 {
        assert!(healthz_answered(&mut busy).await, "a busy connection is kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(
        closed_within(&mut unfinished, Duration::from_secs(3)).await,
        "the unfinished head is closed"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "the idle connection is closed"
    );
    let (mut dribbling, refused) = dribble.await.unwrap();
    assert!(
        refused || closed_within(&mut dribbling, Duration::from_secs(3)).await,
        "the dribbled head is closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    // The server still answers new clients.
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert!(healthz_answered(&mut fresh).await);
}

/// A route's `requests_per_second` holds for all its callers together, anonymous ones included. Each `[[routes]]`
/// entry counts its own, also when several name one file, and one that sets none has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_rate_limit_answers_429_for_all_callers() {
    let config = CONFIG.replace(
        "function = \"open.lua\"",
        "function = \"open.lua\"\nrequests_per_second = 3\n\n[[routes]]\npath = \"/open/free\"\nfunction = \"open.lua\"\n\n\
         [[routes]]\npath = \"/open/slow\"\nfunction = \"open.lua\"\nrequests_per_second = 1",
    );
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN)]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = h.http.post(h.url("/open")).body("x").send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
            let answer: serde_json::Value = response.json().await.unwrap();
            assert!(
                common::error_of(&answer).starts_with("this route serves 3 requests per second"),
                "{answer}"
            );
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let mut statuses = Vec::new();
    for path in ["/open/free"; 5].into_iter().chain(["/open/slow"; 2]) {
        statuses.push(
            h.http
                .post(h.url(path))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
}

/// A route's `records_per_second` counts the records its function writes with `kafka.produce`, for all callers
/// together: past it the call fails (a handler may catch it), and uncaught it is a 429 with `Retry-After`; more
/// records in one call than the burst is a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_records_limit_counts_what_its_function_writes() {
    const WRITER: &str = r#"
return function(req)
  local n = tonumber(req.query.n or "1")
  local messages = {}
  for i = 1, n do messages[i] = { value = "v" .. i } end
  if n == 1 then
    kafka.produce { topic = "cities", key = "k", value = "one" }
  else
    kafka.produce { topic = "cities", messages = messages }
  end
  return { json = { written = n } }
end"#;
    let config = CONFIG.replace(
        "function = \"open.lua\"",
        "function = \"open.lua\"\n\n[[routes]]\npath = \"/write\"\nfunction = \"write.lua\"\nrecords_per_second = 3\n\n\
         [[routes]]\npath = \"/write/free\"\nfunction = \"write.lua\"",
    );
    let h = Harness::start_with(1, &config, &[("open.lua", OPEN), ("write.lua", WRITER)]).await;
    let (status, answer) = h.send("/write?n=2", &[], "").await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = h.send("/write", &[], "").await;
    assert_eq!(status, 200, "the third record of the second: {answer}");
    let response = h.http.post(h.url("/write")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(
        common::error_of(&answer).contains("this route writes 3 records per second (records_per_second)"),
        "{answer}"
    );
    let (status, answer) = h.send("/write?n=4", &[], "").await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        common::error_of(&answer).contains("this route may write at most 3 at once"),
        "{answer}"
    );
    // Another route of the same file counts on its own: this one sets no limit.
    let (status, answer) = h.send("/write/free?n=4", &[], "").await;
    assert_eq!(status, 200, "{answer}");
}

/// The whole responses read from `stream` until `count` have come (or 5 s pass), each with its head.
async fn responses(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut whole = Vec::new();
    while whole.len() < count {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
        while let Some(length) = first_response_length(&String::from_utf8_lossy(&received)) {
            whole.push(String::from_utf8_lossy(&received[..length]).into_owned());
            received.drain(..length);
        }
    }
    whole
}

// The server puts off an answer's first write by one turn (src/server/deferred.rs): requests sent together, or a
// byte at a time, must still each get their answer, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_dribbled_requests_are_each_answered_in_order() {
    let h = Harness::start_with(1, CONFIG, &[("open.lua", OPEN)]).await;
    let server = server_addr(&h);

    let mut pipelined = TcpStream::connect(server).await.unwrap();
    let together = "POST /open HTTP/1.1\r\nHost: luka\r\nContent-Length: 3\r\n\r\nabc\
                    GET /healthz HTTP/1.1\r\nHost: luka\r\n\r\n\
                    POST /open HTTP/1.1\r\nHost: luka\r\nContent-Length: 5\r\n\r\nabcde";
    pipelined.write_all(together.as_bytes()).await.unwrap();
    let answers = responses(&mut pipelined, 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200")), "{answers:?}");
    assert!(answers[0].ends_with(r#"{"size":3}"#), "{answers:?}");
    assert!(answers[2].ends_with(r#"{"size":5}"#), "{answers:?}");

    let mut dribbling = TcpStream::connect(server).await.unwrap();
    for byte in "POST /open HTTP/1.1\r\nHost: luka\r\nContent-Length: 4\r\n\r\nabcd".bytes() {
        dribbling.write_all(&[byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let answers = responses(&mut dribbling, 1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers[0].starts_with("HTTP/1.1 200") && answers[0].ends_with(r#"{"size":4}"#),
        "{answers:?}"
    );
}

/// A request with an `Idempotency-Key` runs on when its client leaves (so a retry learns its outcome), out of reach
/// of the connection limits: a client that sends keyed requests and hangs up at once would otherwise leave any
/// number of them running. They are bounded per client like its connections (`max_connections_per_address`): past
/// that a request with a key is answered 429 (no key taken) until one finishes; a request without a key is not
/// limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_requests_left_running_by_clients_that_hang_up_are_bounded() {
    // The handler writes to a cluster that never answers (a socket that takes connections and reads nothing):
    // each keyed request runs for its produce timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = silent.local_addr().unwrap();
    let config = CONFIG
        .replace("max_connections_per_address = 16", "max_connections_per_address = 2")
        .replace(
            "bootstrap = [\"{broker0}\"]",
            "bootstrap = [\"{broker0}\"]\ndefault = true",
        )
        .replace(
            "function = \"open.lua\"",
            "function = \"lost.lua\"\nmethods = [\"POST\"]\nidempotency = true",
        )
        + format!(
            "\n[clusters.silent]\nbootstrap = [\"{silent_at}\"]\nproduce_timeout_ms = 3000\n\n\
             [topics.lost]\ncluster = \"silent\"\n"
        )
        .as_str();
    let lost = r#"return function(req)
  kafka.produce{ topic = "lost", messages = { { value = req.body } } }
  return "written"
end"#;
    let h = Harness::start_with(1, &config, &[("lost.lua", lost)]).await;
    let keyed = |key: &str| {
        h.http
            .post(h.url("/open"))
            .header("Idempotency-Key", key.to_owned())
            .body("x")
    };
    // Two keyed requests whose clients hang up: both keep running, their connections closed.
    for key in ["k1", "k2"] {
        let gone = keyed(key).timeout(Duration::from_millis(300)).send().await;
        assert!(gone.is_err(), "the handler waits for the silent cluster: {gone:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = keyed("k3").send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let answer: serde_json::Value = refused.json().await.unwrap();
    assert!(
        common::error_of(&answer)
            .starts_with("too many requests with an Idempotency-Key still running from your address (at most 2"),
        "{answer}"
    );
    // The same client without a key is served (here: the cluster's outage, 503 or 504, after its timeout).
    let unkeyed = h.http.post(h.url("/open")).body("x").send().await.unwrap();
    assert!(unkeyed.status().is_server_error(), "{}", unkeyed.status());
    // Once the first two have their outcome, a new key runs; and k3, refused before it ran, was never taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = keyed("k3").send().await.unwrap().status();
        if status != 429 {
            assert!(status.is_server_error(), "k3 ran, into the outage: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "keyed requests still refused 10 s later");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
