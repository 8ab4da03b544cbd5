//! Requests to Lua handlers through the real server: what a handler sees of the request and may answer, routes
//! with their env, auth and methods, and webhooks whose signatures are checked before the body is written.

mod common;

use common::configs::LUA;
use common::read::{assert_no_record, read_records, text};
use common::{Harness, Kafka, error_of};
use serde_json::{Value, json};

on_both_brokers!(webhooks_with_valid_signatures_produce_and_others_get_401);

const GITHUB: &str = r#"
local SECRET = assert(env.SECRET) -- top-level code sees the route's env too
return function(req)
  local ok, why = webhook.verify_github(req, SECRET)
  if not ok then return { status = 401, json = { error = why } } end
  local r = kafka.produce{ topic = "hooks", messages = {
    { key = "github", value = req.body, headers = { event = req.headers["X-GitHub-Event"] } } } }
  return { status = 202, json = { offset = r.offset } }
end
"#;

const STRIPE: &str = r#"
return function(req)
  local ok, why = webhook.verify_stripe(req, env.SECRET)
  if not ok then return { status = 401, json = { error = why } } end
  local r = kafka.produce{ topic = "hooks", messages = { { key = "stripe", value = req.body } } }
  return { status = 200, json = { offset = r.offset } }
end
"#;

const ECHO: &str = r#"
return function(req)
  return { status = 200, headers = { ["X-Echo"] = "yes" }, json = {
    method = req.method, path = req.path, params = req.params, query = req.query,
    content_type = req.headers["Content-Type"], body = req.body, remote = req.remote_addr, user = req.user,
  } }
end
"#;

const FORMS: &str = r#"
return function(req)
  local form = req.query.form
  if form == "string" then return "plain text" end
  if form == "nil" then return nil end
  if form == "body" then return { status = 418, headers = { ["Content-Type"] = "text/teapot" }, body = "short and stout" } end
  if form == "json" then return { json = req:json() } end
  if form == "bad" then return 42 end
  if form == "typo" then return { status = 201, jsn = { ok = true } } end
  if form == "error" then error("secret detail 1234") end
  if form == "length" then return { headers = { ["Content-Length"] = "1" }, body = "xHTTP/1.1 200 OK" } end
  if form == "caught" then pcall(req.json, req) error("something else") end
  -- A header without a name (a list), and a JSON object with one key twice (`1` as a number and as a string).
  if form == "numbered" then return { body = "x", headers = { "text/plain" } } end
  if form == "twice" then return { json = { [1] = "a", ["1"] = "b" } } end
  -- A table JSON cannot hold, flat (left by the flat writer to the general encoder) and nested.
  if form == "function" then return { json = { f = print } } end
  if form == "nested" then return { json = { a = { b = math.huge } } } end
  -- Yielded values that look like an answer are not one: the handler goes on and answers.
  if form == "yield" then coroutine.yield(true, { ok = false }) return { json = { ok = true } } end
end
"#;

/// Names the fields `req` holds before the handler reads any, and reads the body of POST requests only.
const FIELDS: &str = r#"
return function(req)
  local names = {}
  for name in pairs(req) do table.insert(names, name) end
  table.sort(names)
  local body = req.method == "POST" and req.body or json.null
  return { json = { fields = names, body = body } }
end
"#;

const ROUTES: &str = r#"
[[routes]]
path = "/hooks/github"
function = "github.lua"
methods = ["POST"]
env = { SECRET = "gh-secret" }

[[routes]]
path = "/hooks/stripe"
function = "stripe.lua"
methods = ["POST"]
env = { SECRET = "whsec_test" }

[[routes]]
path = "/hooks/unset"
function = "github.lua"
methods = ["POST"]
env = { SECRET = "" }

[[routes]]
path = "/hooks/caught"
function = "caught.lua"
methods = ["POST"]

[[routes]]
path = "/items/{id}"
function = "echo.lua"
auth = true
"#;

/// A verify call whose secret is empty, caught: the error is a plain string, as Lua's own are.
const CAUGHT: &str = r#"
return function(req)
  local ok, err = pcall(webhook.verify_stripe, req, "")
  return { status = 500, json = { ok = ok, error = err, type = type(err) } }
end
"#;

async fn start(kafka: Kafka) -> Harness {
    let config = [LUA, ROUTES].concat();
    let functions = [
        ("github.lua", GITHUB),
        ("stripe.lua", STRIPE),
        ("caught.lua", CAUGHT),
        ("echo.lua", ECHO),
        ("forms.lua", FORMS),
        ("fields.lua", FIELDS),
    ];
    Harness::on_with(kafka, 1, &config, &functions).await
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

async fn webhooks_with_valid_signatures_produce_and_others_get_401(kafka: Kafka) {
    let h = start(kafka).await;
    let bootstrap = h.bootstrap(0);
    let body = r#"{"action":"opened","number":1}"#;
    let signature = format!("sha256={}", hmac_hex("gh-secret", body.as_bytes()));
    let (status, answer) = h
        .send(
            "/hooks/github",
            &[
                ("X-Hub-Signature-256", signature),
                ("X-GitHub-Event", "pull_request".into()),
            ],
            body,
        )
        .await;
    assert_eq!((status, &answer), (202, &json!({"offset": 0})));
    let records = read_records(&bootstrap, "hooks", 0, 0, 1).await;
    assert_eq!(text(&records[0]), (Some("github".into()), Some(body.into())));
    assert_eq!(
        records[0].headers,
        vec![("event".into(), Some(b"pull_request".to_vec()))]
    );

    let wrong = format!("sha256={}", hmac_hex("not-the-secret", body.as_bytes()));
    let (status, answer) = h.send("/hooks/github", &[("X-Hub-Signature-256", wrong)], body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("signature does not match"))
    );
    let (status, _) = h.send("/hooks/github", &[], body).await;
    assert_eq!(status, 401);
    // An empty secret (an environment variable set to nothing) is the handler's error, not a key anyone may sign
    // with: signed with it, the request is not written.
    let unsigned = format!("sha256={}", hmac_hex("", body.as_bytes()));
    let (status, answer) = h.send("/hooks/unset", &[("X-Hub-Signature-256", unsigned)], body).await;
    assert_eq!(status, 500, "{answer}");
    let (status, answer) = h
        .send("/hooks/caught", &[("Stripe-Signature", "t=1,v1=00".into())], body)
        .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        (&answer["ok"], &answer["type"]),
        (&json!(false), &json!("string")),
        "{answer}"
    );
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("webhook.verify_stripe: the secret is missing or empty"),
        "{error}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stripe_body = r#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let signed =
        |t: u64, secret: &str| format!("t={t},v1={}", hmac_hex(secret, format!("{t}.{stripe_body}").as_bytes()));
    let (status, answer) = h
        .send(
            "/hooks/stripe",
            &[("Stripe-Signature", signed(now, "whsec_test"))],
            stripe_body,
        )
        .await;
    assert_eq!((status, &answer), (200, &json!({"offset": 1})));
    let (status, answer) = h
        .send(
            "/hooks/stripe",
            &[("Stripe-Signature", signed(now - 600, "whsec_test"))],
            stripe_body,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("timestamp is outside the tolerance"))
    );
    let (status, _) = h
        .send(
            "/hooks/stripe",
            &[("Stripe-Signature", signed(now, "whsec_other"))],
            stripe_body,
        )
        .await;
    assert_eq!(status, 401);

    let records = read_records(&bootstrap, "hooks", 0, 1, 1).await;
    assert_eq!(text(&records[0]), (Some("stripe".into()), Some(stripe_body.into())));
    assert_no_record(&bootstrap, "hooks", 0, 2).await;
}

/// `req.body` is made when first read, until the file's handler has read one: then a small body is in `req` from
/// the start (cheaper than making it on the first read). Either way the handler reads what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_is_given_from_the_start_once_the_handler_has_read_one() {
    let h = start(Kafka::Embedded).await;
    let call = |method: reqwest::Method, body: String| {
        let request = h.http.request(method, h.url("/fields")).body(body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let lazy = json!(["method", "path"]);
    // A handler that has not read a body does not get one.
    for _ in 0..2 {
        let answer = call(reqwest::Method::PUT, "unread".into()).await;
        assert_eq!(answer, json!({"fields": lazy, "body": null}));
    }
    let first = call(reqwest::Method::POST, "first".into()).await;
    assert_eq!(first, json!({"fields": lazy, "body": "first"}));
    let second = call(reqwest::Method::POST, "second".into()).await;
    assert_eq!(second, json!({"fields": ["body", "method", "path"], "body": "second"}));
    // A large body, and an empty one, are still made when read.
    let large = "x".repeat(64 * 1024);
    let answer = call(reqwest::Method::POST, large.clone()).await;
    assert_eq!(answer, json!({"fields": lazy, "body": large}));
    let answer = call(reqwest::Method::POST, String::new()).await;
    assert_eq!(answer, json!({"fields": lazy, "body": ""}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_api() {
    let h = start(Kafka::Embedded).await;
    let response = h
        .http
        .put(h.url("/items/42?color=red&size=L"))
        .basic_auth("demo", Some("demo"))
        .header("Content-Type", "text/x-test")
        .body("raw \u{1} bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "yes");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["method"], "PUT");
    assert_eq!(answer["path"], "/items/42");
    assert_eq!(answer["params"], json!({"id": "42"}));
    assert_eq!(answer["query"], json!({"color": "red", "size": "L"}));
    assert_eq!(answer["content_type"], "text/x-test");
    assert_eq!(answer["body"], "raw \u{1} bytes");
    assert_eq!(answer["user"], "demo");
    assert!(answer["remote"].as_str().unwrap().starts_with("127.0.0.1:"), "{answer}");

    // A method outside the few each VM keeps as Lua strings, and a request without a body (which skips body
    // collection), reach the handler as sent.
    for (method, body) in [("PURGE", "gone"), ("GET", ""), ("DELETE", "")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = h
            .http
            .request(method.clone(), h.url("/items/7"))
            .basic_auth("demo", Some("demo"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["method"], method.as_str());
        assert_eq!(answer["body"], body, "{method}");
    }

    // auth = true on the route: no credentials, no call; the file's own path is not served.
    let unauthenticated = h.http.get(h.url("/items/42")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert!(unauthenticated.headers().contains_key("www-authenticate"));
    assert_eq!(h.http.get(h.url("/echo")).send().await.unwrap().status(), 404);

    let get = |form: &str| {
        h.http
            .post(h.url(&format!("/forms?form={form}")))
            .body(r#"{"a":[1,{}]}"#)
            .send()
    };
    let plain = get("string").await.unwrap();
    assert_eq!(
        (
            plain.status().as_u16(),
            plain.headers()["content-type"].to_str().unwrap()
        ),
        (200, "text/plain; charset=utf-8")
    );
    assert_eq!(plain.text().await.unwrap(), "plain text");
    assert_eq!(get("nil").await.unwrap().status(), 204);
    let teapot = get("body").await.unwrap();
    assert_eq!(
        (
            teapot.status().as_u16(),
            teapot.headers()["content-type"].to_str().unwrap()
        ),
        (418, "text/teapot")
    );
    assert_eq!(teapot.text().await.unwrap(), "short and stout");
    let echoed = get("json").await.unwrap();
    assert_eq!(echoed.headers()["content-type"], "application/json");
    assert_eq!(echoed.json::<Value>().await.unwrap(), json!({"a": [1, {}]}));
    // What a handler yields is not its answer, even when it looks like one.
    let yielded = get("yield").await.unwrap();
    assert_eq!(yielded.json::<Value>().await.unwrap(), json!({"ok": true}));
    // A misspelt field (`jsn`) fails the call rather than answering 201 without a body; so does a `json` table that
    // JSON cannot hold.
    for form in [
        "bad", "typo", "error", "length", "caught", "function", "nested", "numbered", "twice",
    ] {
        let failed = get(form).await.unwrap();
        assert_eq!(failed.status(), 500);
        let body = failed.text().await.unwrap();
        assert!(
            !body.contains("secret") && !body.contains(".lua") && !body.contains("traceback"),
            "{body}"
        );
    }
    let not_json = h
        .http
        .post(h.url("/forms?form=json"))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let error: Value = not_json.json().await.unwrap();
    assert!(error_of(&error).contains("not valid JSON"), "{error}");

    let wrong_method = h.http.get(h.url("/hooks/github")).send().await.unwrap();
    assert_eq!(
        (
            wrong_method.status().as_u16(),
            wrong_method.headers()["allow"].to_str().unwrap()
        ),
        (405, "POST")
    );
    assert_eq!(h.http.get(h.url("/nothing/here")).send().await.unwrap().status(), 404);
}
