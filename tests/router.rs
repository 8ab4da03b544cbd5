//! The router called directly, without a socket (it is generic over the body type): each status luka answers,
//! with the headers that go with it. The other test files run the same router behind the real HTTP server.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use luka::App;
use luka::broker::EmbeddedBroker;
use luka::config::Config;
use serde_json::Value;

const USERS: &str = concat!(
    demo_user!(),
    r#"
[[users]]
name = "limited"
password = "limited"
topics = ["s"]
"#
);

const REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

const HANDLER: &str = r#"
return function(req)
  if req.query.fail then error("boom") end
  if req.query.json then return { json = req:json() } end
  local r = kafka.produce{ topic = req.query.topic or "t", messages = { { value = req.body } } }
  return { status = 201, json = { offset = r.offset } }
end
"#;

struct Router {
    app: Arc<App>,
    _broker: EmbeddedBroker,
    /// Accepts connections and never answers: a cluster that is up but does not acknowledge.
    _silent: std::net::TcpListener,
    /// The folder the functions are read from, removed when the router is dropped.
    _dir: common::TestDir,
}

impl Router {
    async fn start() -> Self {
        let broker = common::embedded_broker().await;
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = format!(
            r#"
[server]
max_body_bytes = 64
body_timeout_ms = 200

[clusters.local]
bootstrap = ["{broker}"]
default = true
[clusters.slow]
bootstrap = ["{silent}"]
produce_timeout_ms = 700
[clusters.down]
bootstrap = ["{down}"]

[topics.t]
partitions = 1
[topics.s]
cluster = "slow"
[topics.d]
cluster = "down"

[[routes]]
path = "/fn"
function = "fn.lua"
methods = ["POST", "GET"]

{users}"#,
            broker = broker.addr(),
            silent = silent.local_addr().unwrap(),
            down = common::free_addr(),
            users = USERS,
        );
        let dir = common::temp_dir();
        common::write_function(&dir, "fn.lua", HANDLER);
        let config = Config::from_toml(&config, &dir, |_| None).unwrap();
        Self {
            app: App::new(config).unwrap(),
            _broker: broker,
            _silent: silent,
            _dir: dir,
        }
    }

    /// Sends `request` through the router; gives status, headers and the body parsed as JSON (or Null).
    async fn send<B>(&self, request: Request<B>) -> (StatusCode, hyper::HeaderMap, Value)
    where
        B: luka::server::RequestBody,
    {
        let response = luka::server::handle(&self.app, request, REMOTE).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    async fn status(&self, request: Request<Full<Bytes>>) -> StatusCode {
        self.send(request).await.0
    }
}

fn request(method: &str, path: &str) -> hyper::http::request::Builder {
    Request::builder().method(method).uri(path)
}

fn with_body(builder: hyper::http::request::Builder, body: &str) -> Request<Full<Bytes>> {
    builder.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// `user:password` as a Basic authorization header value.
fn basic(user_and_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_and_password)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_answers_200_404_405_and_501() {
    let r = Router::start().await;
    assert_eq!(
        r.status(with_body(request("GET", "/healthz"), "")).await,
        StatusCode::OK
    );

    let (status, _, body) = r.send(with_body(request("GET", "/nowhere"), "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route for GET /nowhere");
    // The client's method and path are repeated back cut (hyper takes heads of hundreds of kilobytes).
    let (method, path) = ("X".repeat(1000), format!("/{}", "a".repeat(10_000)));
    let (status, _, body) = r.send(with_body(request(&method, &path), "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error = body["error"].as_str().expect("an error text");
    assert!(error.starts_with("no route for XXXX"), "{error}");
    assert!(error.len() < 2200, "{}", error.len());
    // The same for the endpoints' own 405s.
    for path in [format!("/offsets/{}", "1".repeat(10_000)), "/metrics".to_owned()] {
        let (status, _, body) = r.send(with_body(request(&method, &path), "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path:.20}");
        let error = body["error"].as_str().expect("an error text");
        assert!(error.len() < 2200, "{}", error.len());
    }

    let (status, headers, _) = r.send(with_body(request("DELETE", "/fn"), "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, POST");
    let (status, headers, _) = r.send(with_body(request("PUT", "/produce/t"), "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, POST");

    for refused in [
        with_body(request("CONNECT", "/"), ""),
        with_body(request("POST", "/fn").header("transfer-encoding", "gzip, chunked"), "x"),
        with_body(request("POST", "/consume/g/i"), ""),
    ] {
        assert_eq!(r.status(refused).await, StatusCode::NOT_IMPLEMENTED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_answer_401_with_a_challenge_and_403() {
    let r = Router::start().await;
    let (status, headers, body) = r.send(with_body(request("POST", "/produce/t"), "{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Basic realm=\"luka\"");
    assert!(
        body["error"].as_str().unwrap().contains("curl -u user:password"),
        "{body}"
    );

    let wrong = request("POST", "/produce/t").header("authorization", basic("demo:nope"));
    assert_eq!(r.status(with_body(wrong, "{}")).await, StatusCode::UNAUTHORIZED);
    let limited = request("POST", "/produce/t").header("authorization", basic("limited:limited"));
    assert_eq!(
        r.status(with_body(limited, r#"{"value":"x"}"#)).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_answer_400_408_and_413() {
    let r = Router::start().await;
    let demo = || request("POST", "/produce/t").header("authorization", basic("demo:demo"));
    assert_eq!(r.status(with_body(demo(), "{not json")).await, StatusCode::BAD_REQUEST);
    let (status, _, body) = r.send(with_body(request("POST", "/fn?json=1"), "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "req:json() on a bad body: {body}");

    // Declared too large, and too large without a declared length.
    let declared = demo().header("content-length", "65");
    assert_eq!(r.status(with_body(declared, "")).await, StatusCode::PAYLOAD_TOO_LARGE);
    let long = "x".repeat(65);
    let (status, _, body) = r.send(with_body(request("POST", "/fn"), &long)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "the request body is larger than the limit of 64 bytes");

    // A body that never arrives.
    let stalled = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>());
    let (status, _, _) = r.send(request("POST", "/fn").body(stalled).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_answer_their_own_status_and_500_when_they_fail() {
    let r = Router::start().await;
    let (status, _, body) = r.send(with_body(request("POST", "/fn"), "hi")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body["offset"].is_i64(), "{body}");
    let (status, _, body) = r.send(with_body(request("GET", "/fn?fail=1"), "")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "the function failed; the server log has the details");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_answer_404_503_504_and_idempotency_409_422() {
    let r = Router::start().await;
    let demo = |path: &str| request("POST", path).header("authorization", basic("demo:demo"));
    let (status, _, body) = r.send(with_body(demo("/produce/unknown"), r#"{"value":"x"}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, headers, _) = r.send(with_body(demo("/produce/d"), r#"{"value":"x"}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");

    // The slow cluster holds the first request while a repeat of its key arrives.
    let keyed = |body: &str| with_body(demo("/produce/s").header("idempotency-key", "k-1"), body);
    let (first, repeat) = tokio::join!(r.send(keyed(r#"{"value":"x"}"#)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.status(keyed(r#"{"value":"x"}"#)).await
    });
    assert_eq!(first.0, StatusCode::GATEWAY_TIMEOUT, "{}", first.2);
    assert_eq!(repeat, StatusCode::CONFLICT);

    let once = |body: &str| with_body(demo("/produce/t").header("idempotency-key", "k-2"), body);
    assert_eq!(r.status(once(r#"{"value":"x"}"#)).await, StatusCode::OK);
    assert_eq!(
        r.status(once(r#"{"value":"y"}"#)).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}
