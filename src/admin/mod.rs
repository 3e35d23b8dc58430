//! The admin plane: an HTTP server on its own (loopback) address for Prometheus metrics,
//! liveness and readiness, the admin API (reload, audit queries) and the console (`/ui`,
//! `console`), with Host and Origin checks and optional API keys (`guard`), bounded
//! connections, request sizes and timeouts.

mod console;
mod guard;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::ProxyContext;
use guard::Access;

/// What `POST /api/v1/reload` runs (the users file and the TLS certificates): `Ok` with
/// details, or `Err` with them.
pub(crate) type Reloader =
    Arc<dyn Fn() -> Result<serde_json::Value, serde_json::Value> + Send + Sync>;

/// What the admin handlers share.
pub struct AdminState {
    /// The proxy's shared context (metrics, sink, policy, configuration).
    pub(crate) ctx: Arc<ProxyContext>,
    /// Reloads the policy and certificates.
    pub reload: Reloader,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// Serves the admin API on `listener` until `drain` fires.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    tracker: TaskTracker,
    drain: CancellationToken,
) {
    let config = state.ctx.config.admin.clone();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    // Finished connections lingering (see `linger`), bounded apart from the served ones: a
    // lingering connection does not keep a new client out, and at most as many linger.
    let lingering = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = drain.cancelled() => return,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(client = %peer, "admin: too many connections");
            continue; // dropping the stream closes it
        };
        let state = Arc::clone(&state);
        let drain = drain.clone();
        let config = config.clone();
        let lingering = Arc::clone(&lingering);
        tracker.spawn(async move {
            let mut stream = stream;
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(&state, request).await) }
            });
            {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(config.request_timeout)
                    .max_buf_size(config.max_request_bytes) // at least 8192: checked at configuration
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(&mut stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, client = %peer, "admin connection error");
                        }
                    }
                    () = drain.cancelled() => connection.as_mut().graceful_shutdown(),
                }
            }
            drop(permit);
            if let Ok(_lingering) = lingering.try_acquire_owned() {
                linger(&mut stream, config.request_timeout, 8 * config.max_request_bytes).await;
            }
        });
    }
}

/// Closes a finished connection the way that lets the client read its last response: stop
/// sending (FIN), then read and discard what the client still sends, for at most `time` and
/// `bytes`. Closing with unread bytes (a refused, oversized request head) makes the kernel send
/// a reset, which can destroy the response before the client reads it. At most
/// `admin.max_connections` connections linger at once; past that they close at once.
async fn linger(stream: &mut tokio::net::TcpStream, time: Duration, bytes: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut left = bytes;
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

/// Routes one request.
async fn handle(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let config = &state.ctx.config.admin;
    let path = request.uri().path().to_owned();
    // Before the keys: without keys, these are all that stands between a web page and the
    // plane.
    if let Err(message) = guard::check_host(config, &request) {
        return error(StatusCode::MISDIRECTED_REQUEST, "MisdirectedRequest", message);
    }
    if let Err(message) = guard::check_origin(config, &request) {
        return error(StatusCode::FORBIDDEN, "Forbidden", message);
    }
    // The console's static files hold no data and must load before the browser can ask for
    // a key; what they fetch is checked below like any request.
    if console::is_asset(&path) {
        return match *request.method() {
            Method::GET => console::serve(&path),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed"),
        };
    }
    let access = match guard::authorize(config, &request) {
        Ok(access) => access,
        Err(_) if config.open_endpoints.contains(&path) => Access::Full,
        Err(message) => return error(StatusCode::UNAUTHORIZED, "Unauthorized", message),
    };
    let metrics_scope = matches!(path.as_str(), "/metrics" | "/livez" | "/readyz");
    if access == Access::Metrics && !metrics_scope {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this API key has no access to this endpoint",
        );
    }
    match (request.method(), path.as_str()) {
        (&Method::GET, "/livez") => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        (&Method::GET, "/readyz") => readiness(state).await,
        (&Method::GET, "/metrics") => {
            let ctx = &state.ctx;
            if let Some(stats) = ctx.sink.stats() {
                ctx.metrics.update_audit(&stats);
            }
            ctx.metrics.set_acl_log_entries(ctx.acl_log_len());
            let body = ctx.metrics.render();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/api/v1/audit-records") => {
            audit_records(state, request.uri().query().unwrap_or("")).await
        }
        (&Method::GET, "/v1/logs") => log_page(state, "/v1/logs", request.uri().query()).await,
        (&Method::GET, "/v1/session-logs") => {
            log_page(state, "/v1/session-logs", request.uri().query()).await
        }
        (&Method::GET, "/api/v1/acl-log") => {
            log_page(state, "/api/v1/acl-log", request.uri().query()).await
        }
        (&Method::GET, "/api/v1/report") => report(state, request.uri().query()).await,
        (&Method::POST, "/api/v1/reload") => match (state.reload)() {
            Ok(detail) => json_response(StatusCode::OK, &detail),
            Err(detail) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &detail),
        },
        (
            _,
            "/livez"
            | "/readyz"
            | "/metrics"
            | "/api/v1/reload"
            | "/api/v1/audit-records"
            | "/v1/logs"
            | "/v1/session-logs"
            | "/api/v1/acl-log"
            | "/api/v1/report",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
    }
}

/// `GET /api/v1/audit-records`: `DescribeAuditRecords` over the audit directory. The read
/// is itself recorded, as an `api_read` system event.
async fn audit_records(state: &AdminState, query_string: &str) -> Response<Full<Bytes>> {
    let params = crate::query::params::parse_query_string(query_string);
    let request_id = request_id();
    let query = match crate::query::AuditQuery::from_params(&params) {
        Ok(query) => query,
        Err(refused) => {
            let body =
                json!({"Code": refused.code, "Message": refused.message, "RequestId": request_id});
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    };
    let dir = state.ctx.config.audit.dir.clone();
    let run_query = query.clone();
    let outcome = tokio::task::spawn_blocking(move || crate::query::run(&dir, &run_query)).await;
    let page = match outcome {
        Ok(Ok(page)) => page,
        Ok(Err(error)) => {
            let body = json!({"Code": "InternalError", "Message": error.to_string(), "RequestId": request_id});
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "query failed"),
    };
    let mut shown: Vec<(&String, &String)> = params.iter().collect();
    shown.sort();
    state.ctx.sink.system(crate::event::SystemEvent {
        action: "api_read",
        time: std::time::SystemTime::now(),
        detail: json!({
            "endpoint": "/api/v1/audit-records",
            "params": shown.iter().map(|(k, v)| ((*k).clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "total": page.total,
            "request_id": request_id,
        }),
    });
    json_response(StatusCode::OK, &page.to_tair(&query, &request_id))
}

/// `GET /api/v1/report?start=&end=`: what `audit report --json` prints for the audit directory,
/// with the users file in force naming each denied user's line. The read is recorded.
async fn report(state: &AdminState, query_string: Option<&str>) -> Response<Full<Bytes>> {
    let params = crate::query::params::parse_query_string(query_string.unwrap_or(""));
    let (start, end) = (params.get("start").cloned(), params.get("end").cloned());
    let range = match crate::query::AuditQuery::range(start.as_deref(), end.as_deref()) {
        Ok(range) => range,
        Err(refused) => {
            return error(StatusCode::BAD_REQUEST, "InvalidParameter", &refused.message)
        }
    };
    let dir = state.ctx.config.audit.dir.clone();
    let users = state.ctx.users_text();
    let outcome = tokio::task::spawn_blocking(move || {
        crate::query::report::build(&dir, &range, users.as_deref())
    })
    .await;
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(failure)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &failure.to_string())
        }
        Err(_) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "report failed")
        }
    };
    state.ctx.sink.system(crate::event::SystemEvent {
        action: "api_read",
        time: std::time::SystemTime::now(),
        detail: json!({
            "endpoint": "/api/v1/report",
            "params": {"start": start, "end": end},
            "total": report.denials.len(),
        }),
    });
    json_response(StatusCode::OK, &serde_json::to_value(&report).unwrap_or_default())
}

/// The Redis Cloud shapes (`/v1/logs`, `/v1/session-logs`) and the ACL LOG history, with
/// `offset` / `limit` paging; each read is recorded.
async fn log_page(
    state: &AdminState,
    endpoint: &'static str,
    query_string: Option<&str>,
) -> Response<Full<Bytes>> {
    let params = crate::query::params::parse_query_string(query_string.unwrap_or(""));
    let paging = match crate::query::logs::Paging::from_params(&params) {
        Ok(paging) => paging,
        Err(refused) => return error(StatusCode::BAD_REQUEST, refused.code, &refused.message),
    };
    let dir = state.ctx.config.audit.dir.clone();
    let outcome = tokio::task::spawn_blocking(move || match endpoint {
        "/v1/logs" => crate::query::logs::activity(&dir, paging),
        "/v1/session-logs" => crate::query::logs::sessions(&dir, paging),
        _ => crate::query::logs::acl_log(&dir, paging),
    })
    .await;
    let body = match outcome {
        Ok(Ok(body)) => body,
        Ok(Err(failure)) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &failure.to_string())
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "query failed"),
    };
    state.ctx.sink.system(crate::event::SystemEvent {
        action: "api_read",
        time: std::time::SystemTime::now(),
        detail: json!({
            "endpoint": endpoint,
            "params": {"offset": paging.offset, "limit": paging.limit},
            "total": body["total"],
        }),
    });
    json_response(StatusCode::OK, &body)
}

/// A request id in the seeds' shape (a random UUID-like hex string).
fn request_id() -> String {
    let bytes = crate::util::id::random_bytes::<16>().unwrap_or_default();
    crate::util::id::uuid_text(&bytes).to_ascii_uppercase()
}

/// Ready when the upstream answers a connection and the audit writer is not failing.
async fn readiness(state: &AdminState) -> Response<Full<Bytes>> {
    let ctx = &state.ctx;
    let tls = ctx.upstream_tls();
    let address = ctx.target.address();
    let connect = crate::proxy::upstream::connect(&address, &ctx.config.upstream, tls.as_deref());
    let upstream = match connect.await {
        Ok(_) => json!({"ok": true}),
        Err(error) => json!({"ok": false, "error": error.to_string()}),
    };
    let audit_ok = !ctx.sink.is_failing();
    let ready = upstream["ok"] == true && audit_ok;
    let body = json!({
        "ready": ready,
        "checks": {"listener": {"ok": true}, "upstream": upstream, "audit": {"ok": audit_ok}},
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &body)
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error in the shape of the seeds' APIs: `{"Code": ..., "Message": ...}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"Code": code, "Message": message}))
}
