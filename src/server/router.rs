//! Routing: a request in, the handler's response out. Health paths and the REST produce API come first, then the
//! Lua functions (explicit `[[routes]]`, then files); anything else is a JSON 404.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use tokio::task::futures::TaskLocalFuture;

use super::browser::{self, Site};
use super::error::{RequestError, Written, into_response};
use super::{Response, json_bytes_response, json_response};
use crate::App;
use crate::api;
use crate::config::ServerConfig;
use crate::context::{Capture, RequestContext};
use crate::idempotency::{self, Answer, Begin};
use crate::logging::access::AccessLine;
use crate::lua::{Found, HttpRequest, Target};
use crate::metrics::RequestKind;
use crate::timeout::Within;

/// A request body the router reads: hyper's from a socket, or a `Full<Bytes>` built in memory (tests, `luka test`).
/// Owned (`'static`): a request's work may be boxed and polled after routing returns.
pub trait RequestBody: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static> RequestBody for B {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long `/readyz` waits for each cluster.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The request id header: the caller's if it sends one, else a new one; echoed on every response. This and the trace
/// headers are `HeaderName`s: a name given as a `&str` is parsed and hashed at every look-up, and allocated when set.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Longest caller-given request id kept; longer ones are replaced by a new id.
const MAX_REQUEST_ID: usize = 128;

/// The answer to `request`. Routing runs here, at once: a request it answers (`/healthz`, an error, a 404) is finished
/// before the future is first polled, and the future only hands the response over; a route with work to wait on
/// (a function, the REST API) gives its boxed future, polled within the request timeout and the request's context.
///
/// A future of its own rather than an `async fn`: hyper moves each request's future into its connection's slot, and
/// an `async fn` keeps the request, its routing and its answer inline, each moved from layer to layer (thirteen
/// copies of 136 to 504 bytes per `/healthz`, bench/README.md point 19).
pub fn handle<B: RequestBody>(app: &Arc<App>, request: Request<B>, remote: SocketAddr) -> Handling {
    let started = Instant::now();
    let in_flight = InFlight::enter();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let capture = request.extensions().get::<Capture>().cloned();
    let context = RequestContext::new(request_id(&request), trace_context(app, &request), capture);
    // Told once: the CORS check and the routing below both need it.
    let endpoint = Endpoint::of(&path);
    let site = (endpoint.is_some() || is_produce_path(&path))
        .then(|| browser::site(request.headers(), &app.config.server.cors_origins));
    let routed = match &site {
        Some(Site::Refused(from)) => Routed::Answered(Err(RequestError::CrossSite { from: from.clone() })),
        Some(Site::Allowed(origin)) if is_preflight(&request) => {
            Routed::Answered(Ok(preflight(origin, endpoint.as_ref())))
        }
        _ => {
            let routed = route(app, request, remote, &context, endpoint);
            if let Routed::Answered(_) = routed {
                super::deferred::answered_at_once();
            }
            routed
        }
    };
    let timeout = Duration::from_millis(app.config.server.request_timeout_ms);
    let finish = Finish {
        started,
        method,
        path,
        context,
        site,
        remote,
        timeout,
        access_log: app.config.server.access_log,
        answered: false,
        _in_flight: in_flight,
    };
    let state = match routed {
        Routed::Answered(result) => State::Answered {
            response: Some(finish.answer(result)),
        },
        Routed::Pending(work) => State::Pending {
            work: RequestContext::scope(
                Arc::clone(&finish.context),
                crate::timeout::within_since(started, timeout, work),
            ),
            finish: Some(finish),
        },
    };
    Handling { state }
}

/// A route's work: what answers a request that cannot be answered at once.
type Work = Pin<Box<dyn Future<Output = Result<Response, RequestError>> + Send>>;

pin_project_lite::pin_project! {
    /// The future [`handle`] gives: the request's [`Response`].
    pub struct Handling {
        #[pin]
        state: State,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State {
        /// Answered as it was routed.
        Answered { response: Option<Response> },
        /// Waiting on the route's work.
        Pending {
            finish: Option<Finish>,
            #[pin]
            work: TaskLocalFuture<Arc<RequestContext>, Within<Work>>,
        },
    }
}

impl Future for Handling {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.project().state.project() {
            StateProjection::Answered { response } => {
                Poll::Ready(response.take().expect("a request's answer is taken once"))
            }
            StateProjection::Pending { finish, work } => {
                let served = std::task::ready!(work.poll(cx));
                let finish = finish.take().expect("a request's answer is taken once");
                let result = served.unwrap_or_else(|_| {
                    Err(RequestError::Timeout {
                        ms: finish.timeout.as_millis(),
                    })
                });
                Poll::Ready(finish.answer(result))
            }
        }
    }
}

/// What a failed request's answer must say it wrote: only a function's answer says it (a REST produce lists what it
/// wrote in `results`, and answers its own records in doubt).
fn told_written(context: &RequestContext) -> Written {
    match context.function() {
        Some(_) => written_by(context),
        None => Written::default(),
    }
}

/// What the request wrote so far, and whether records of it are in doubt.
fn written_by(context: &RequestContext) -> Written {
    Written {
        records: context.records(),
        in_doubt: context.in_doubt(),
    }
}

/// What a request's answer is finished with: its headers, its metrics and its access log line.
struct Finish {
    started: Instant,
    method: Method,
    path: String,
    context: Arc<RequestContext>,
    site: Option<Site>,
    remote: SocketAddr,
    /// The request timeout its work ran within.
    timeout: Duration,
    access_log: bool,
    /// Set once the answer is made; a request dropped before (its client closed the connection) is recorded as
    /// [`CLIENT_CLOSED`] when its `Finish` is dropped.
    answered: bool,
    _in_flight: InFlight,
}

/// The status a request is recorded with (metrics, access log) when its connection closed before its answer was
/// made (the client left, or shutdown cut it past its grace): nginx's "client closed request". Nothing was sent;
/// what it wrote is in the line's `records`.
const CLIENT_CLOSED: u16 = 499;

impl Finish {
    fn answer(mut self, result: Result<Response, RequestError>) -> Response {
        let context = &self.context;
        let mut response =
            result.unwrap_or_else(|e| into_response(&e, &context.id, told_written(context), context.awaits_outcome()));
        if let Some(Site::Allowed(origin)) = &self.site {
            browser::answer_headers(origin, response.headers_mut());
        }
        if let Ok(id) = HeaderValue::from_str(&context.id) {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        self.record(response.status().as_u16());
        self.answered = true;
        response
    }

    /// The request's metrics and access log line, with the status it was answered with.
    fn record(&self, status: u16) {
        let context = &self.context;
        let function = context.function();
        let duration = self.started.elapsed();
        crate::metrics::metrics().observe_request(
            route_kind(&self.path, function.is_some()),
            function.map(AsRef::as_ref),
            status,
            duration,
        );
        if self.access_log {
            let line = AccessLine {
                request_id: &context.id,
                remote: self.remote,
                method: self.method.as_str(),
                path: &self.path,
                status,
                duration,
                function: function.map_or("", |f| f.name()),
                records: context.records(),
            };
            log_access(&line);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.answered {
            // Unwinding from a bug in the request's work: the connection goes without an answer too.
            let status = if std::thread::panicking() { 500 } else { CLIENT_CLOSED };
            self.record(status);
        }
    }
}

/// The request's access log line: formatted by luka's own writer when the binary installed it (it does when its log
/// filter lets `luka::access` lines through), else as a `tracing` event with the same fields, which the filter (or
/// the subscriber of a program using luka as a library) keeps or drops.
fn log_access(line: &AccessLine<'_>) {
    if !crate::logging::access::write(line) {
        tracing::info!(target: "luka::access", request_id = line.request_id, remote = %line.remote,
            method = line.method, path = line.path, status = line.status,
            duration_ms = line.duration.as_secs_f64() * 1000.0, function = line.function, records = line.records,
            "request");
    }
}

/// Authenticates with `login` within the rate limits: an address that failed too often is refused before its
/// credentials are looked at, wrong credentials count against their address, and a user past its
/// `requests_per_second` is refused.
fn logged_in<'a>(
    app: &'a App,
    remote: SocketAddr,
    login: impl FnOnce() -> Result<&'a crate::config::User, api::ApiError>,
) -> Result<&'a crate::config::User, RequestError> {
    let attempt = app.limits.may_log_in(remote.ip())?;
    let checked = login();
    let counted = attempt.counted;
    drop(attempt);
    match checked {
        Ok(user) => {
            app.limits.request(&user.name)?;
            Ok(user)
        }
        Err(api::ApiError::WrongCredentials) => {
            app.limits.failed_log_in(remote.ip(), counted)?;
            Err(api::ApiError::WrongCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The `[[users]]` entry the request's basic-auth credentials name, within the login limits of [`logged_in`].
fn basic_login<'a, B>(
    app: &'a App,
    request: &Request<B>,
    remote: SocketAddr,
) -> Result<&'a crate::config::User, RequestError> {
    let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    logged_in(app, remote, || api::authenticate(&app.config.users, authorization))
}

/// The REST API's produce endpoint, which (as its read endpoints, [`Endpoint`]) takes browser requests only from
/// `[server] cors_origins`.
fn is_produce_path(path: &str) -> bool {
    path == "/produce" || path.starts_with("/produce/")
}

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
fn is_preflight<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS && request.headers().contains_key("access-control-request-method")
}

/// 204 with the CORS headers that let `origin`'s pages call the path: one of the `endpoint`s, or (none) produce.
fn preflight(origin: &HeaderValue, endpoint: Option<&Endpoint>) -> Response {
    let methods = endpoint.map_or("GET, POST", Endpoint::methods);
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    browser::preflight_headers(origin, methods, response.headers_mut());
    response
}

/// Counts a request in `luka_http_in_flight_requests` while it is alive (also when the client goes away).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        crate::metrics::metrics().in_flight.inc();
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::metrics().in_flight.dec();
    }
}

/// What a request was, for metrics: a function, a health probe, the metrics scrape, the REST API, or other.
fn route_kind(path: &str, function: bool) -> RequestKind {
    match (function, path) {
        (true, _) => RequestKind::Function,
        (false, "/healthz" | "/readyz") => RequestKind::Health,
        (false, "/metrics") => RequestKind::Metrics,
        (false, path) if crate::config::is_builtin_path(path) => RequestKind::Rest,
        _ => RequestKind::Other,
    }
}

fn request_id<B>(request: &Request<B>) -> String {
    let given = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| visible_ascii(id, MAX_REQUEST_ID));
    match given {
        Some(id) => id.to_owned(),
        None => new_request_id(),
    }
}

/// 128 random bits as 32 lower-case hex digits, written into a stack buffer (`hex::encode` builds its `String` from
/// a char iterator, which showed in the profile).
fn new_request_id() -> String {
    let mut text = [0u8; 32];
    // One u128 (two 64-bit draws): `random::<[u8; 16]>()` draws each byte on its own.
    hex::encode_to_slice(rand::random::<u128>().to_le_bytes(), &mut text).expect("32 digits for 16 bytes");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// The request's `traceparent` and `tracestate`, when propagation is on and they are valid W3C Trace Context: they
/// go into every record the request writes, so what an anonymous caller sends there is held to the standard's
/// syntax and bounds. A missing or invalid `traceparent` takes `tracestate` with it.
fn trace_context<B>(app: &App, request: &Request<B>) -> Vec<(String, Vec<u8>)> {
    if !app.config.server.propagate_trace_context {
        return Vec::new();
    }
    let single = |name: &HeaderName| {
        let mut values = request.headers().get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Some(value.as_bytes()),
            _ => None,
        }
    };
    let Some(parent) = single(&TRACEPARENT).filter(|v| trace::valid_traceparent(v)) else {
        return Vec::new();
    };
    let mut context = vec![(TRACEPARENT.as_str().to_owned(), parent.to_vec())];
    if let Some(state) = single(&TRACESTATE).filter(|v| trace::valid_tracestate(v)) {
        context.push((TRACESTATE.as_str().to_owned(), state.to_vec()));
    }
    context
}

/// What routing made of a request: its answer at once, or the work that makes it.
enum Routed {
    Answered(Result<Response, RequestError>),
    /// Boxed, each route's future alone: so a request answered at once (`/healthz`, a 404) makes no future, and one
    /// that waits moves only its own route's future (a function call's is some kilobytes) into its box, once.
    Pending(Work),
}

/// `endpoint`: [`Endpoint::of`] the request's path.
fn route<B: RequestBody>(
    app: &Arc<App>,
    request: Request<B>,
    remote: SocketAddr,
    context: &RequestContext,
    endpoint: Option<Endpoint>,
) -> Routed {
    if let Err(e) = refuse_unsupported(&request) {
        return Routed::Answered(Err(e));
    }
    let path = request.uri().path();
    if path == "/healthz" {
        return Routed::Answered(Ok(json_bytes_response(
            StatusCode::OK,
            Bytes::from_static(br#"{"status":"ok"}"#),
        )));
    }
    if path == "/readyz" {
        let app = Arc::clone(app);
        return Routed::Pending(Box::pin(async move { Ok(ready(&app).await) }));
    }
    if path == "/metrics" && app.config.metrics.enabled {
        return Routed::Answered(scrape(app, &request, remote));
    }
    if let Some(call) = path
        .strip_prefix("/produce")
        .and_then(|rest| api::parse_path(rest, request.uri().query()))
    {
        return Routed::Pending(Box::pin(rest_produce(Arc::clone(app), request, remote, call)));
    }
    if let Some(endpoint) = endpoint {
        return Routed::Pending(Box::pin(hosted_api(Arc::clone(app), request, remote, endpoint)));
    }
    match app.functions.find(request.method().as_str(), path) {
        Found::Target(target) => {
            context.set_function(Arc::clone(&target.function.requests), target.route);
            Routed::Pending(Box::pin(call_function(Arc::clone(app), request, remote, target)))
        }
        Found::MethodNotAllowed { allowed } => Routed::Answered(Err(RequestError::MethodNotAllowed {
            method: echoed(request.method().as_str(), MAX_ECHOED_METHOD),
            path: echoed(path, MAX_ECHOED_PATH),
            allowed,
        })),
        Found::NotFound => Routed::Answered(Err(RequestError::NotFound {
            method: echoed(request.method().as_str(), MAX_ECHOED_METHOD),
            path: echoed(path, MAX_ECHOED_PATH),
        })),
    }
}

/// Longest method and path a 404 or 405 repeats back: both are the client's (hyper takes heads of hundreds of
/// kilobytes, and a method is any token), and the answer need not be larger than the question's useful part.
const MAX_ECHOED_METHOD: usize = 32;
const MAX_ECHOED_CODING: usize = 32;
const MAX_ECHOED_PATH: usize = 2 * 1024;

/// `text` as an answer repeats it: one line, cut at `max` bytes.
fn echoed(text: &str, max: usize) -> String {
    crate::logging::one_line(text, max).into_owned()
}

/// `/produce/...`: the REST produce API.
async fn rest_produce<B: RequestBody>(
    app: Arc<App>,
    request: Request<B>,
    remote: SocketAddr,
    call: api::ProduceCall,
) -> Result<Response, RequestError> {
    let app = &app;
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(RequestError::MethodNotAllowed {
            method: echoed(request.method().as_str(), MAX_ECHOED_METHOD),
            path: echoed(request.uri().path(), MAX_ECHOED_PATH),
            allowed: "GET, POST".into(),
        });
    }
    // Credentials first: a client without them is answered before it can hold the connection with a body.
    let user = basic_login(app, &request, remote)?;
    let key = idempotency_key(request.headers())?;
    let method = request.method().as_str().to_owned();
    let target = request.uri().path_and_query().map_or("", |p| p.as_str()).to_owned();
    let body = read_body(request, &app.config.server).await?;
    let once = key.map(|key| Once {
        function: Arc::from(""),
        user: user.name.clone(),
        key,
        fingerprint: idempotency::fingerprint(&method, &target, None, &body),
        client: remote.ip(),
    });
    let user = user.clone();
    idempotent(app, once, move |app| async move {
        let body = api::produce(&app.producer, &app.limits, &user, call, &body).await?;
        Ok(Answer {
            status: 200,
            headers: smallvec::smallvec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: body.into(),
        })
    })
    .await
}

/// `GET /metrics`: the Prometheus text format, behind the `[metrics] user`'s credentials when one is set (checked
/// within the same failed-login limit as every other login, so `/metrics` is no place to guess passwords).
fn scrape<B>(app: &App, request: &Request<B>, remote: SocketAddr) -> Result<Response, RequestError> {
    if request.method() != Method::GET {
        return Err(RequestError::MethodNotAllowed {
            method: echoed(request.method().as_str(), MAX_ECHOED_METHOD),
            path: "/metrics".into(),
            allowed: "GET".into(),
        });
    }
    if let Some(wanted) = &app.config.metrics.user {
        let user = basic_login(app, request, remote)?;
        if &user.name != wanted {
            return Err(RequestError::Api(api::ApiError::Unauthenticated(format!(
                "/metrics is open to user '{wanted}' only"
            ))));
        }
    }
    // Prometheus asks for OpenMetrics first when it can read it; anything else gets the classic format.
    let openmetrics = request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let metrics = crate::metrics::metrics();
    let (body, content_type) = if openmetrics {
        (
            metrics.render_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (metrics.render_classic(), "text/plain; version=0.0.4; charset=utf-8")
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// The hosted REST API's endpoints besides produce.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Webhook,
    Topics,
    Offsets(String),
    Fetch,
    /// The consumer-group endpoints, which luka does not serve.
    ConsumerGroup,
}

impl Endpoint {
    fn of(path: &str) -> Option<Self> {
        let rest = path.trim_start_matches('/');
        // A byte loop: paths are short, and a `str` pattern search set-up cost more than the search (profile).
        let first = &rest[..rest.bytes().position(|b| b == b'/').unwrap_or(rest.len())];
        Some(match (first, path) {
            (_, "/webhook") => Self::Webhook,
            (_, "/topics") => Self::Topics,
            ("offsets", _) => Self::Offsets(path.trim_start_matches("/offsets").trim_start_matches('/').to_owned()),
            (_, "/fetch") => Self::Fetch,
            ("consume" | "commit" | "committed" | "consumers" | "delete-consumer", _) => Self::ConsumerGroup,
            _ => return None,
        })
    }

    fn methods(&self) -> &'static str {
        match self {
            Self::Topics => "GET",
            _ => "GET, POST",
        }
    }
}

async fn hosted_api<B: RequestBody>(
    app: Arc<App>,
    request: Request<B>,
    remote: SocketAddr,
    endpoint: Endpoint,
) -> Result<Response, RequestError> {
    let app = &app;
    if let Endpoint::ConsumerGroup = endpoint {
        return Err(RequestError::NotImplemented(
            "the consumer-group endpoints (/consume, /commit, /committed, /consumers, /delete-consumer) are not \
             served by luka; read with /fetch and /offsets"
                .into(),
        ));
    }
    let allowed = endpoint.methods();
    if !allowed.split(", ").any(|m| m == request.method().as_str()) {
        return Err(RequestError::MethodNotAllowed {
            method: echoed(request.method().as_str(), MAX_ECHOED_METHOD),
            path: echoed(request.uri().path(), MAX_ECHOED_PATH),
            allowed: allowed.into(),
        });
    }
    let (config, producer) = (&app.config, &app.producer);
    let authorization = authorization(&request);
    let query = request.uri().query().map(str::to_owned);
    let user = logged_in(app, remote, || match endpoint {
        Endpoint::Webhook => api::authenticate_webhook(&config.users, authorization.as_deref(), query.as_deref()),
        _ => api::authenticate(&config.users, authorization.as_deref()),
    })?;
    let answer = match endpoint {
        Endpoint::Topics => api::read::topics(config, producer, user).await?,
        Endpoint::Webhook => {
            let headers = request.headers().clone();
            let body = read_body(request, &config.server).await?;
            api::webhook(producer, &app.limits, user, query.as_deref(), &headers, body).await?
        }
        Endpoint::Offsets(which) => {
            let body = read_body(request, &config.server).await?;
            api::read::offsets(config, producer, user, &which, &body).await?
        }
        Endpoint::Fetch => {
            let body = read_body(request, &config.server).await?;
            api::read::fetch(config, producer, user, &body).await?
        }
        Endpoint::ConsumerGroup => unreachable!("answered above"),
    };
    Ok(json_bytes_response(StatusCode::OK, answer))
}

/// Requests luka cannot serve correctly are refused before routing: `CONNECT` (luka is no proxy) and bodies in a
/// transfer coding other than chunked (luka would otherwise read compressed bytes as the body).
fn refuse_unsupported<B>(request: &Request<B>) -> Result<(), RequestError> {
    if request.method() == Method::CONNECT {
        return Err(RequestError::NotImplemented(
            "CONNECT is not supported: luka is not a proxy".into(),
        ));
    }
    for value in request.headers().get_all(hyper::header::TRANSFER_ENCODING) {
        let codings = value.to_str().unwrap_or("?");
        if let Some(coding) = codings
            .split(',')
            .map(str::trim)
            .find(|c| !c.eq_ignore_ascii_case("chunked"))
        {
            return Err(RequestError::NotImplemented(format!(
                "Transfer-Encoding '{}' is not supported; send the body uncompressed (chunked is fine)",
                echoed(coding, MAX_ECHOED_CODING)
            )));
        }
    }
    Ok(())
}

/// Whether a caller's id (`x-request-id`, `Idempotency-Key`) is 1 to `max` visible ASCII characters: no spaces or
/// tabs, which a header value may hold.
fn visible_ascii(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
}

/// The request's `Idempotency-Key`, if it sends one.
fn idempotency_key(headers: &hyper::HeaderMap) -> Result<Option<String>, RequestError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if visible_ascii(key, idempotency::MAX_KEY_LEN) => Ok(Some(key.to_owned())),
        _ => Err(RequestError::Api(api::ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {} visible ASCII characters",
            idempotency::MAX_KEY_LEN
        )))),
    }
}

fn authorization<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn call_function<B: RequestBody>(
    app: Arc<App>,
    request: Request<B>,
    remote: SocketAddr,
    target: Target,
) -> Result<Response, RequestError> {
    let app = &app;
    let user = if target.auth {
        Some(basic_login(app, &request, remote)?.name.clone())
    } else {
        None
    };
    // After credentials: callers without them do not use up an auth route's requests.
    if let Some(route) = target.route {
        app.limits.route_request(route)?;
    }
    check_declared_length(&request, app.config.server.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    let body = collect_body(body, &app.config.server).await?;
    // Boxed: it is moved through the layers of the call (the idempotency wrapper, the call's future, its state) and
    // each async layer keeps a place for it; by pointer, the function call's future is a kilobyte smaller and the
    // request is copied once, into its box (bench/README.md point 17).
    let http = Box::new(HttpRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        remote_addr: remote,
        user,
    });
    let key = if target.idempotency {
        idempotency_key(&http.headers)?
    } else {
        None
    };
    let once = key.map(|key| Once {
        function: Arc::clone(&target.function.name),
        user: http.user.clone().unwrap_or_default(),
        key,
        fingerprint: idempotency::fingerprint(
            http.method.as_str(),
            http.uri.path_and_query().map_or("", |p| p.as_str()),
            Some(&http.headers),
            &http.body,
        ),
        client: remote.ip(),
    });
    idempotent(app, once, move |app| async move {
        Ok(app.functions.call(target, http).await?)
    })
    .await
}

/// A place for one more running request with an `Idempotency-Key` from `client`: as many as a client may hold
/// connections (`max_connections_per_address`), and as many as `max_connections` from all clients together. Such a
/// request runs on when its client leaves (so a retry learns its outcome), out of reach of the connection limits.
fn keyed_request(app: &App, client: std::net::IpAddr) -> Result<crate::limits::ClientSlot, RequestError> {
    let server = &app.config.server;
    let cap = server.max_connections_per_address;
    app.keyed_requests
        .take(client, cap, Some(server.max_connections))
        .ok_or_else(|| {
            RequestError::RateLimited(crate::limits::RateLimited {
                what: format!(
                    "too many requests with an Idempotency-Key still running from your address (at most {cap}, and \
                     {} from all clients; they run until their outcome is known, also after the client leaves)",
                    server.max_connections
                ),
                retry_after: Duration::from_secs(1),
            })
        })
}

/// A request's hold on an `Idempotency-Key`: whose it is (function, `""` for REST produce; user), and what the
/// request was. Made only for requests that send a key.
struct Once {
    function: Arc<str>,
    user: String,
    key: String,
    fingerprint: [u8; 32],
    /// Who sent it: a client's keyed requests still running are bounded (they outlive its connections).
    client: std::net::IpAddr,
}

/// Runs `run`, or under an `Idempotency-Key` (`once`): replays the answer remembered for the key (marked
/// `Idempotent-Replayed: true`), refuses a clash, and remembers the answer for the next repeat unless the request
/// failed having written nothing (see [`remember`]).
///
/// A keyed request runs in a task of its own that holds the key until the request's real outcome is known: if
/// the client goes away or the request times out meanwhile, a retry is told the key is in use (409) and, once the
/// outcome is in, gets it (the answer replayed, or the key free again after a failure that wrote nothing). Its
/// produces wait for their records' real outcome rather than answer "in doubt" (until the cluster's
/// `delivery_timeout_ms`; an outcome still unknown then is answered, and replayed, as in doubt).
async fn idempotent<F>(
    app: &Arc<App>,
    once: Option<Once>,
    run: impl FnOnce(Arc<App>) -> F,
) -> Result<Response, RequestError>
where
    F: Future<Output = Result<Answer, RequestError>> + Send + 'static,
{
    let claim = match once {
        None => None,
        // The place is taken before the key is looked up: a client with too many keyed requests running is refused
        // without touching the store (where a new key may push out the user's oldest remembered answer); one that
        // is answered from the store gives its place back at once.
        Some(once) => match (
            keyed_request(app, once.client)?,
            app.idempotency
                .begin(&once.function, &once.user, &once.key, once.fingerprint),
        ) {
            (slot, Begin::Run(claim)) => Some((claim, slot)),
            (_, Begin::Replay(answer)) => {
                let mut response = answer_response(&answer);
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            (_, Begin::InProgress) => return Err(RequestError::IdempotencyInProgress),
            (_, Begin::Mismatch) => return Err(RequestError::IdempotencyMismatch),
        },
    };
    let Some((claim, slot)) = claim else {
        return Ok(answer_into_response(run(Arc::clone(app)).await?));
    };
    let context = RequestContext::current();
    if let Some(context) = &context {
        context.await_outcome();
    }
    let work = run(Arc::clone(app));
    let told = context.clone();
    let owned = async move {
        let result = finish_keyed(work, claim, told.as_deref()).await;
        drop(slot);
        result
    };
    let task = match context {
        Some(context) => tokio::spawn(RequestContext::scope(context, owned)),
        None => tokio::spawn(owned),
    };
    match task.await {
        Ok(result) => Ok(answer_into_response(result?)),
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        // Only when the runtime shuts down, and then nobody reads the answer.
        Err(_) => Err(RequestError::Timeout { ms: 0 }),
    }
}

/// Runs a keyed request's `work` and finishes its `claim` with the outcome (see [`remember`]). A panic (a bug) is a
/// 500 whose records are in doubt, kept for the key: where the work stopped is not known, and a produce of it may
/// have sent records that are still on their way (a sent batch cannot be withdrawn), so freeing the key could let a
/// retry write them twice.
async fn finish_keyed(
    work: impl Future<Output = Result<Answer, RequestError>>,
    claim: idempotency::Claim,
    context: Option<&RequestContext>,
) -> Result<Answer, RequestError> {
    let result = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work)).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(context) = context {
                context.note_in_doubt();
            }
            Err(RequestError::Internal)
        }
    };
    remember(result, claim, context).await
}

/// Finishes a keyed request's `claim` with its outcome. Every answer is remembered for the key's repeats but a
/// failure that wrote nothing (which frees the key, so the request may be sent again): a success, and equally a
/// failure after which records may be in Kafka (some written, some in doubt), since running the request again would
/// write those again. Such a failure is made into its answer here, once, and handed on as the answer.
async fn remember(
    result: Result<Answer, RequestError>,
    claim: idempotency::Claim,
    context: Option<&RequestContext>,
) -> Result<Answer, RequestError> {
    let written = context.map(written_by).unwrap_or_default();
    match result {
        Ok(answer) => {
            claim.complete(&answer, written.records > 0 || written.in_doubt);
            Ok(answer)
        }
        Err(e) if super::error::may_have_written(&e, written) => {
            // A panic's answer has no results of its own to list: it says what the context knows, on any route.
            let told = |c: &RequestContext| match e {
                RequestError::Internal => written_by(c),
                _ => told_written(c),
            };
            let (id, told) = context.map_or(("", Written::default()), |c| (c.id.as_str(), told(c)));
            let answer = answer_of(into_response(&e, id, told, true)).await;
            claim.complete(&answer, true);
            Ok(answer)
        }
        // Dropping the claim frees the key.
        Err(e) => Err(e),
    }
}

/// A response as an answer to remember.
async fn answer_of(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
        body: match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        },
    }
}

/// The response of a remembered answer (a replay): its body and headers are shared with the one remembered.
fn answer_response(answer: &Answer) -> Response {
    response_of(answer.status, answer.body.clone(), answer.headers.iter().cloned())
}

/// The response of an answer made now, taken as it is: a body made from a `Vec` (a handler's JSON) becomes shared
/// when cloned, an allocation per request that moving it saves.
fn answer_into_response(answer: Answer) -> Response {
    response_of(answer.status, answer.body, answer.headers)
}

fn response_of(status: u16, body: Bytes, headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> Response {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    response
}

/// Reads the whole body, refusing more than `limit` bytes (early, from Content-Length, when the client sends it).
async fn read_body<B: RequestBody>(request: Request<B>, server: &ServerConfig) -> Result<Bytes, RequestError> {
    check_declared_length(&request, server.max_body_bytes)?;
    collect_body(request.into_body(), server).await
}

fn check_declared_length<B>(request: &Request<B>, limit: usize) -> Result<(), RequestError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    Ok(())
}

/// The whole body, within the size limit and the body timeout.
async fn collect_body<B: RequestBody>(body: B, server: &ServerConfig) -> Result<Bytes, RequestError> {
    // A request without a body (most GETs) needs no limit, timer or buffer list.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = server.max_body_bytes;
    let ms = server.body_timeout_ms;
    let collected = crate::timeout::within(Duration::from_millis(ms), gather(Limited::new(body, limit))).await;
    match collected.map_err(|_| RequestError::BodyTimeout { ms })? {
        Ok(collected) => Ok(collected),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RequestError::BodyTooLarge { limit }),
        Err(_) => Err(RequestError::BodyRead),
    }
}

/// The body's bytes in one piece. A body that comes in one frame (most) is kept as it came; one of several frames
/// is copied as it comes. Each frame is a slice of the connection's read buffer, which hyper cannot reuse while a
/// slice of it lives and so replaces with a new one (8 KiB at least) for its next read: kept frame by frame (as
/// `Collected` keeps them), a body sent a byte at a time would hold 8 KiB per byte, far past `max_body_bytes`.
async fn gather<B: hyper::body::Body<Data = Bytes>>(body: B) -> Result<Bytes, B::Error> {
    // The declared length, when there is one (checked against the limit before): room for the whole body at once.
    let declared = body.size_hint().exact().map_or(0, |n| n as usize);
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: not part of the body
        };
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(before)) => {
                let mut both = bytes::BytesMut::with_capacity(declared.max(2 * (before.len() + data.len())));
                both.extend_from_slice(&before);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(match joined {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    })
}

async fn ready(app: &App) -> Response {
    let checks = app.producer.pool().readiness(READY_CHECK_TIMEOUT).await;
    let all_ok = checks.iter().all(|(_, r)| r.is_ok());
    let clusters: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, result)| (name, json!(if result.is_ok() { "ok" } else { "unavailable" })))
        .collect();
    let (status, word) = if all_ok {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    json_response(status, &json!({ "status": word, "clusters": clusters }))
}

/// W3C Trace Context syntax (<https://www.w3.org/TR/trace-context/>), as far as luka copies it.
mod trace {
    /// Longest `traceparent` of a future version kept (version 00 is exactly 55 bytes).
    const MAX_TRACEPARENT: usize = 256;
    /// The standard's bounds on `tracestate`.
    const MAX_TRACESTATE: usize = 512;
    const MAX_TRACESTATE_MEMBERS: usize = 32;

    /// `version-traceid-parentid-flags`: lower-case hex of 2, 32, 16 and 2 digits; version `ff`, an all-zero
    /// trace id or parent id are invalid; a version above 00 may carry more after a `-`.
    pub(super) fn valid_traceparent(value: &[u8]) -> bool {
        let hex = |part: &[u8]| part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let zero = |part: &[u8]| part.iter().all(|b| *b == b'0');
        if value.len() < 55 || value.len() > MAX_TRACEPARENT {
            return false;
        }
        let (version, trace_id, parent_id, flags) = (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
        let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        let rest_ok = match (version, value.len()) {
            (b"00", 55) => true,
            (b"00", _) => false,
            (_, 55) => true,
            _ => value[55] == b'-' && value[56..].iter().all(u8::is_ascii_graphic),
        };
        dashes
            && rest_ok
            && [version, trace_id, parent_id, flags].into_iter().all(hex)
            && version != b"ff"
            && !zero(trace_id)
            && !zero(parent_id)
    }

    /// At most 512 bytes of printable ASCII in at most 32 comma-separated members, each `key=value`.
    pub(super) fn valid_tracestate(value: &[u8]) -> bool {
        value.len() <= MAX_TRACESTATE
            && value.iter().all(|b| *b == b' ' || b.is_ascii_graphic())
            && value.split(|b| *b == b',').count() <= MAX_TRACESTATE_MEMBERS
            && value
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .all(|member| member.is_empty() || member.contains(&b'='))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn traceparent_follows_the_w3c_syntax() {
            let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            assert!(valid_traceparent(good));
            assert!(valid_traceparent(
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
            ));
            for bad in [
                &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
                b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                b"not a trace",
            ] {
                assert!(!valid_traceparent(bad), "{}", String::from_utf8_lossy(bad));
            }
            assert!(!valid_traceparent(
                &[
                    b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-".as_slice(),
                    &[b'x'; 300]
                ]
                .concat()
            ));
        }

        #[test]
        fn tracestate_is_bounded() {
            assert!(valid_tracestate(b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
            assert!(!valid_tracestate(&vec![b'a'; 513]));
            let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
            assert!(!valid_tracestate(members.join(",").as_bytes()));
            assert!(!valid_tracestate(b"rojo=1\nforged"));
            assert!(!valid_tracestate(b"no-equals-sign"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Idempotency-Key` is 1 to 255 visible ASCII characters: no spaces or tabs (which HTTP lets a header value
    /// hold), as for `x-request-id`.
    #[test]
    fn idempotency_keys_are_visible_ascii() {
        let key = |value: &str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert("idempotency-key", value.parse().unwrap());
            idempotency_key(&headers)
        };
        for good in ["order-1", "a", &"k".repeat(idempotency::MAX_KEY_LEN), "\"quoted\""] {
            assert_eq!(key(good).ok().flatten().as_deref(), Some(good));
        }
        for bad in ["", "a b", "a\tb", &"k".repeat(idempotency::MAX_KEY_LEN + 1)] {
            assert!(key(bad).is_err(), "{bad:?} was taken");
        }
        assert_eq!(idempotency_key(&hyper::HeaderMap::new()).ok(), Some(None));
    }

    /// A keyed request's work that panics (a bug) once it has written `records`.
    async fn panics_after(context: &RequestContext, records: usize) -> Result<Answer, RequestError> {
        context.add_records(records);
        panic!("a bug, after {records} records were written");
    }

    #[tokio::test]
    async fn a_keyed_request_that_panics_keeps_its_key_with_its_records_in_doubt() {
        let store = idempotency::Idempotency::new(Duration::from_secs(60), 100);
        let begin = |key: &str| store.begin("orders.lua", "demo", key, [7; 32]);
        let claim = |key: &str| match begin(key) {
            Begin::Run(claim) => claim,
            _ => panic!("a new key runs"),
        };
        // Records acknowledged before the panic, and none (a produce may still have been on its way).
        for (key, records) in [("wrote", 2), ("sending", 0)] {
            let context = RequestContext::new(key.into(), Vec::new(), None);
            let answer = finish_keyed(panics_after(&context, records), claim(key), Some(&context))
                .await
                .expect("an answer to remember");
            assert_eq!(answer.status, 500, "{key}");
            let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("a JSON answer");
            assert_eq!(body["records_in_doubt"], true, "{key}: {body}");
            match begin(key) {
                Begin::Replay(replayed) => assert_eq!(replayed.body, answer.body, "{key}"),
                _ => panic!("{key}: the answer is kept for the key"),
            }
        }
    }

    #[test]
    fn new_request_ids_are_32_random_hex_digits() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn endpoints_are_told_by_their_first_segment() {
        let cases = [
            ("/webhook", Some(Endpoint::Webhook)),
            ("/topics", Some(Endpoint::Topics)),
            ("/fetch", Some(Endpoint::Fetch)),
            ("/offsets", Some(Endpoint::Offsets(String::new()))),
            ("/offsets/orders", Some(Endpoint::Offsets("orders".into()))),
            ("/consume", Some(Endpoint::ConsumerGroup)),
            ("/committed/group/x", Some(Endpoint::ConsumerGroup)),
            ("/delete-consumer", Some(Endpoint::ConsumerGroup)),
            ("/webhook/x", None),
            ("/webhooks", None),
            ("/fetches", None),
            ("/healthz", None),
            ("/", None),
            ("", None),
        ];
        for (path, endpoint) in cases {
            assert_eq!(Endpoint::of(path), endpoint, "{path}");
        }
    }

    /// A read buffer of hyper's, whose drop is counted.
    struct ReadBuffer(Vec<u8>, Arc<std::sync::atomic::AtomicUsize>);

    impl AsRef<[u8]> for ReadBuffer {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for ReadBuffer {
        fn drop(&mut self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A body sent a byte at a time comes as many frames, each a slice of a read buffer of its own: the gathered body
    /// keeps none of those buffers; a body of one frame is kept as it came.
    #[tokio::test]
    async fn a_body_gathered_from_many_frames_keeps_none_of_their_buffers() {
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = b"dribbled"
            .iter()
            .map(|byte| {
                let mut buffer = vec![0u8; 8192];
                buffer[0] = *byte;
                let slice = Bytes::from_owner(ReadBuffer(buffer, Arc::clone(&dropped))).slice(0..1);
                Ok(hyper::body::Frame::data(slice))
            })
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let gathered = gather(body).await.unwrap();
        assert_eq!(&gathered[..], b"dribbled");
        assert_eq!(
            dropped.load(std::sync::atomic::Ordering::Relaxed),
            8,
            "every read buffer was let go"
        );
        let one = Bytes::from_static(b"whole");
        let frames = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(one.clone()))];
        let gathered = gather(http_body_util::StreamBody::new(futures::stream::iter(frames)))
            .await
            .unwrap();
        assert_eq!(gathered.as_ptr(), one.as_ptr(), "one frame is not copied");
    }

    /// The size of what `call` returns, without calling it.
    fn size_of_output<A, B, C, D, R>(_: &impl Fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A function call's future is moved into its box once per request, whole: its size is what that copy costs
    /// (2,920 bytes while the request was kept by value in each of its layers, 1,904 since: bench/README.md point 17;
    /// 2,112 since a keyed request's handler is finished past its time limit, `Call::overtime`).
    #[test]
    fn a_function_call_s_future_stays_small() {
        let call =
            |app: Arc<App>, request: Request<Full<Bytes>>, remote, target| call_function(app, request, remote, target);
        let size = size_of_output(&call);
        assert!(size <= 2 * 1024 + 128, "a function call's future takes {size} bytes");
    }

    /// hyper moves each request's future into its connection's slot, so its size is copied per request: routing
    /// keeps each route's own future in a box of its own, and [`handle`]'s future holds only the answer or that box
    /// with what finishes the answer. Measured in the dev profile: 224 bytes; as an `async fn` it took 928 (and
    /// 3.5 KiB with the routing future inline, 16 KiB with the REST routes' futures inline).
    #[tokio::test]
    async fn a_request_s_future_stays_small() {
        let config = crate::config::Config::from_toml(
            "[clusters.a]\nbootstrap = [\"127.0.0.1:1\"]\n[topics.t]\n",
            std::path::Path::new("/nonexistent/luka-router-test"),
            |_| None,
        )
        .expect("valid config");
        let app = App::new(config).expect("no functions to load");
        let request = Request::new(Full::new(Bytes::new()));
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let handling = handle(&app, request, remote);
        let size = std::mem::size_of_val(&handling);
        assert!(size <= 512, "a request's future takes {size} bytes");
    }
}
