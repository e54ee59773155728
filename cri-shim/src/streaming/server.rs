//! The HTTP side: `/exec/<token>`, `/attach/<token>` and `/portforward/<token>` take their
//! pending request out of the token cache (unknown, used or expired tokens get 404),
//! negotiate the sub-protocol from `X-Stream-Protocol-Version`, answer 101 and hand the
//! upgraded connection to SPDY. They also take a WebSocket upgrade (`Sec-WebSocket-Protocol`
//! negotiation: channels for exec and attach, tunnelled SPDY for port-forward); a WebSocket
//! request with no subprotocol we speak gets 400 so that the client falls back to SPDY.

use super::remotecommand::{Version, Wanted};
use super::spdy::Session;
use super::transport::Connection;
use super::websocket::{self, WsSession};
use super::{attach, portforward, remotecommand, Inner, Pending};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The header a client lists the sub-protocols it speaks in, and we answer the chosen one in.
const PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// The header a refused negotiation lists what we accept in.
const ACCEPTED_VERSIONS: &str = "x-accepted-stream-protocol-versions";
/// The only upgrade spoken.
const SPDY: &str = "SPDY/3.1";
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the runtime shuts down.
pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of fds, typically: back off instead of spinning.
                tracing::warn!(error = %e, "streaming server accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        keep_alive(&tcp);
        let inner = inner.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(route(request, inner)) }
            });
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "streaming connection");
            }
        });
    }
}

/// Turns on TCP keepalive, so a session whose client vanished without a FIN (a dead laptop, a
/// dropped network) ends within minutes and its process is killed, instead of lingering.
fn keep_alive(tcp: &tokio::net::TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let set = setsockopt(tcp, sockopt::KeepAlive, &true)
        .and_then(|()| setsockopt(tcp, sockopt::TcpKeepIdle, &60))
        .and_then(|()| setsockopt(tcp, sockopt::TcpKeepInterval, &10))
        .and_then(|()| setsockopt(tcp, sockopt::TcpKeepCount, &6));
    if let Err(e) = set {
        tracing::debug!(error = %e, "TCP keepalive on a streaming connection");
    }
}

/// Answers one request; a successful upgrade continues in a task of its own. The token is
/// only spent by a request that can be served, so a client that tries WebSocket first and then
/// falls back to SPDY on the same URL still gets in.
fn route(mut request: Request<Incoming>, inner: Arc<Inner>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let offered: &[&str] = match kind {
        "exec" | "attach" => remotecommand::PROTOCOLS,
        "portforward" => &[portforward::PROTOCOL],
        _ => return plain(StatusCode::NOT_FOUND, "unknown streaming URL"),
    };
    let headers = request.headers();
    if websocket::is_upgrade(headers) {
        if let Some(response) = route_websocket(&mut request, kind, token, &inner) {
            return response;
        }
    }
    let headers = request.headers();
    if !is_spdy_upgrade(headers) {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: this server streams over SPDY/3.1 only (Connection: Upgrade, Upgrade: SPDY/3.1)",
        );
    }
    let requested = requested_protocols(headers);
    let protocol = if requested.is_empty() {
        // Clients from before negotiation speak the first protocol version.
        String::new()
    } else {
        match requested.iter().find(|p| offered.contains(&p.as_str())) {
            Some(chosen) => chosen.clone(),
            None => {
                let mut response = plain(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {requested:?}, server accepts {offered:?}"
                    ),
                );
                for p in offered {
                    response
                        .headers_mut()
                        .append(ACCEPTED_VERSIONS, HeaderValue::from_static(p));
                }
                return response;
            }
        }
    };
    let Some(pending) = take(&inner, kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming URL");
    };

    let upgrade = hyper::upgrade::on(&mut request);
    let chosen = protocol.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::warn!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let (session, mut incoming) = Session::start(TokioIo::new(upgraded));
        let version = Version::from_protocol(&chosen).unwrap_or(Version::V1);
        match pending {
            Pending::Exec(exec) => {
                let session = Connection::Spdy(session);
                remotecommand::serve_exec(session, incoming, version, exec, &inner.exec).await;
            }
            Pending::Attach(request) => {
                let wanted = Wanted::from(&request);
                let streams = match remotecommand::wait_for_streams(&mut incoming, version, wanted)
                    .await
                {
                    Ok(streams) => streams,
                    Err(e) => {
                        tracing::warn!(container = %request.container_id, error = e, "attach streams");
                        return;
                    }
                };
                drop(incoming);
                attach::serve_attach(Connection::Spdy(session), streams, version, request).await;
            }
            Pending::PortForward(pf) => portforward::serve(session, incoming, pf).await,
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(SPDY));
    if let Ok(value) = HeaderValue::from_str(&protocol) {
        if !protocol.is_empty() {
            headers.insert(PROTOCOL_VERSION, value);
        }
    }
    response
}

/// Takes the pending request of `token` if it is of `kind`.
fn take(inner: &Inner, kind: &str, token: &str) -> Option<Pending> {
    match (kind, inner.tokens.take(token)?) {
        ("exec", p @ Pending::Exec(_))
        | ("attach", p @ Pending::Attach(_))
        | ("portforward", p @ Pending::PortForward(_)) => Some(p),
        _ => None,
    }
}

/// Answers a WebSocket upgrade; `None` when no subprotocol we speak is offered, so the caller
/// refuses it as a non-SPDY request and the client falls back.
fn route_websocket(
    request: &mut Request<Incoming>,
    kind: &str,
    token: &str,
    inner: &Arc<Inner>,
) -> Option<Response<Full<Bytes>>> {
    let headers = request.headers();
    let requested = websocket::requested_protocols(headers);
    let offered: &[&'static str] = match kind {
        "portforward" => &[websocket::PORT_FORWARD_TUNNEL],
        _ => websocket::PROTOCOLS,
    };
    let chosen: &'static str = requested
        .iter()
        .find_map(|p| offered.iter().find(|&&o| o == p))?;
    // Only meaningful for exec and attach.
    let version = Version::from_protocol(chosen).unwrap_or(Version::V5);
    let Some(accept) = websocket::accept_key(headers) else {
        return Some(plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    let Some(pending) = take(inner, kind, token) else {
        return Some(plain(
            StatusCode::NOT_FOUND,
            "unknown or expired streaming URL",
        ));
    };
    let upgrade = hyper::upgrade::on(request);
    let inner = inner.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::warn!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        tracing::debug!(protocol = chosen, "websocket session");
        let io = TokioIo::new(upgraded);
        match pending {
            Pending::Exec(exec) => {
                let (session, streams) = WsSession::start(io, version, Wanted::from(&exec)).await;
                let session = Connection::Ws(session);
                remotecommand::run_exec(session, streams, version, exec, &inner.exec).await;
            }
            Pending::Attach(request) => {
                let (session, streams) =
                    WsSession::start(io, version, Wanted::from(&request)).await;
                attach::serve_attach(Connection::Ws(session), streams, version, request).await;
            }
            Pending::PortForward(pf) => {
                let (session, incoming) = Session::start(websocket::tunnel(io).await);
                portforward::serve(session, incoming, pf).await;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Some(response)
}

/// `Connection` has the `upgrade` token and `Upgrade` is SPDY/3.1.
fn is_spdy_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    let spdy = headers.get_all(UPGRADE).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case(SPDY)
    });
    connection_upgrade && spdy
}

/// Every protocol the client lists, in its order of preference (one per header or
/// comma-separated).
fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_VERSION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_headers_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("spdy/3.1"));
        assert!(is_spdy_upgrade(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_spdy_upgrade(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_spdy_upgrade(&headers));
    }

    #[test]
    fn protocols_keep_the_client_order() {
        let mut headers = HeaderMap::new();
        headers.append(
            PROTOCOL_VERSION,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        headers.append(
            PROTOCOL_VERSION,
            HeaderValue::from_static("v3.channel.k8s.io, channel.k8s.io"),
        );
        assert_eq!(
            requested_protocols(&headers),
            ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
        );
    }
}
