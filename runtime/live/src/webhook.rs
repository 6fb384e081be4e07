//! Intents delivered by webhook: each published intent is POSTed as its JSON
//! (`docs/live.md`) to the organisation's endpoint, in order, at least once
//! (a delivery that fails is retried with capped backoff before the next
//! one; a receiver deduplicates by the intent's `id`). `http://` or
//! `https://` ([`crate::tls`]), one HTTP/1.1 connection per delivery; any
//! 2xx answer is an acknowledgement.
//!
//! What it does not do: redirects, persistence of undelivered intents
//! across restarts (the deployment's intents journal holds them; the API's
//! `GET /v1/deployments/{id}/intents` serves them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::intent::Intent;

/// Where and how intents are delivered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://host:port/path`, or `https://…` over TLS.
    pub url: String,
    /// Sent as the `Authorization` header, when set.
    #[serde(default)]
    pub authorization: Option<String>,
}

/// Intents waiting for delivery, at most; more are dropped and counted.
pub const QUEUE: usize = 10_000;
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of an `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    tls: bool,
    /// What to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority as written.
    authority: String,
    path: String,
}

fn parse(url: &str) -> Result<Target, String> {
    let bad = |problem: &str| format!("webhook url `{}`: {problem}", crate::clipped(url));
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("spaces or control characters"));
    }
    // The same parser as the service's host allow-list (`live_hosts`), so
    // both read the same host out of a URL.
    let uri: tokio_tungstenite::tungstenite::http::Uri =
        url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("expected http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "a user name in the URL is not supported (use `authorization`)",
        ));
    }
    let port = match uri.port_u16() {
        Some(0) => return Err(bad("port 0 is not a port to connect to")),
        Some(p) => p,
        None if crate::port_unreadable(authority.as_str(), None) => {
            return Err(bad(&format!("bad port in `{authority}`")))
        }
        None => {
            if tls {
                443
            } else {
                80
            }
        }
    };
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if tls {
        crate::tls::server_name(host).map_err(|e| bad(&e))?;
    }
    Ok(Target {
        tls,
        // A literal IPv6 address is connected to without its brackets.
        host: crate::unbracketed(host).to_owned(),
        port,
        authority: authority.as_str().to_owned(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

impl WebhookSpec {
    /// Checks the URL (and the header's characters).
    pub fn validate(&self) -> Result<(), String> {
        parse(&self.url)?;
        if self
            .authorization
            .as_deref()
            .is_some_and(|a| a.bytes().any(|b| b.is_ascii_control()))
        {
            return Err("webhook authorization: control characters".to_owned());
        }
        Ok(())
    }
}

/// The sending side of a webhook: [`Webhook::send`] queues an intent.
/// Intents queued before the gate last stopped publishing are dropped, not
/// delivered late ([`Webhook::revoke`]).
#[derive(Clone, Debug)]
pub struct Webhook {
    tx: mpsc::Sender<(Intent, u64)>,
    epoch: Arc<AtomicU64>,
}

/// What happened to a delivery, for the caller's counters and logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Delivered {
        intent_id: String,
        attempts: u32,
    },
    /// A failed attempt; it is retried.
    Failed {
        intent_id: String,
        error: String,
    },
    /// Not delivered: the gate stopped publishing after it was queued.
    Revoked {
        intent_id: String,
    },
}

impl Webhook {
    /// Starts delivering to `spec` on the current runtime; `report` hears
    /// of every delivery and failed attempt. Ends when every `Webhook` clone
    /// is dropped (an intent being retried then is given up).
    pub fn start(spec: WebhookSpec, report: mpsc::UnboundedSender<Delivery>) -> Result<Webhook, String> {
        Webhook::start_with(spec, report, crate::tls::client_config())
    }

    /// [`Webhook::start`], checking an `https://` receiver's certificate
    /// with `tls`.
    pub fn start_with(
        spec: WebhookSpec,
        report: mpsc::UnboundedSender<Delivery>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Webhook, String> {
        spec.validate()?;
        let target = parse(&spec.url)?;
        let (tx, mut rx) = mpsc::channel::<(Intent, u64)>(QUEUE);
        let epoch = Arc::new(AtomicU64::new(0));
        let current = epoch.clone();
        tokio::spawn(async move {
            while let Some((intent, queued)) = rx.recv().await {
                let body = serde_json::to_vec(&intent).expect("an intent serializes");
                let mut wait = Duration::from_millis(100);
                let mut attempts = 0;
                loop {
                    if current.load(Ordering::Acquire) != queued {
                        let intent_id = intent.id.clone();
                        let _ = report.send(Delivery::Revoked { intent_id });
                        break;
                    }
                    if attempts > 0 && rx.is_closed() {
                        // The deployment stopped: no more retries.
                        return;
                    }
                    attempts += 1;
                    match post(&target, &tls, spec.authorization.as_deref(), &body).await {
                        Ok(()) => {
                            let intent_id = intent.id.clone();
                            let _ = report.send(Delivery::Delivered { intent_id, attempts });
                            break;
                        }
                        Err(error) => {
                            let intent_id = intent.id.clone();
                            let _ = report.send(Delivery::Failed { intent_id, error });
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            }
        });
        Ok(Webhook { tx, epoch })
    }

    /// Queues `intent`; `false` when the queue is full (it is dropped).
    pub fn send(&self, intent: &Intent) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.tx.try_send((intent.clone(), epoch)).is_ok()
    }

    /// The gate stopped publishing: intents queued so far are dropped.
    pub fn revoke(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// One POST; `Ok` on a 2xx answer.
async fn post(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let exchange = async {
        if target.tls {
            let stream = crate::tls::connect(&target.host, target.port, tls.clone()).await?;
            return exchange(stream, target, authorization, body).await;
        }
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", target.host, target.port))?;
        exchange(stream, target, authorization, body).await
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
}

/// Sends the request over `stream` and reads the answer's status.
async fn exchange<S>(
    mut stream: S,
    target: &Target,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: palisade-webhook\r\n",
            target.path,
            target.authority,
            body.len()
        );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut answer[n..]).await.map_err(|e| e.to_string())?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let line = String::from_utf8_lossy(&answer[..n]);
    let status = line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(s) => Err(format!("answered {s}")),
        None => Err(format!("not an HTTP answer: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{OrderKind, Side};
    use tokio::net::TcpListener;

    fn intent(n: u64) -> Intent {
        Intent {
            id: Intent::id_for("d", n),
            deployment: "d".into(),
            order_id: n,
            decided_ts: 60,
            symbol: "S".into(),
            side: Side::Buy,
            qty: 1.0,
            intended_qty: 1.0,
            kind: OrderKind::Market,
            price: None,
            published_ms: 1,
        }
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse("http://127.0.0.1:9000/hook?x=1").unwrap(),
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9000,
                authority: "127.0.0.1:9000".into(),
                path: "/hook?x=1".into()
            }
        );
        let plain = parse("http://h").unwrap();
        assert_eq!(
            (plain.port, plain.path.as_str(), plain.authority.as_str()),
            (80, "/", "h")
        );
        let secure = parse("https://hooks.example.com/in").unwrap();
        assert!(secure.tls && secure.port == 443 && secure.path == "/in");
        assert_eq!(parse("https://h:8443").unwrap().port, 8443);
        let v6 = parse("https://[::1]/hook").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.authority.as_str()),
            ("::1", 443, "[::1]")
        );
        assert_eq!(parse("http://[::1]:8080/").unwrap().port, 8080);
        assert!(parse("ftp://h/").unwrap_err().contains("http:// or https://"));
        assert!(parse("https://h_x!/").unwrap_err().contains("TLS server name"));
        assert!(parse("http://h:x/").unwrap_err().contains("port"));
        assert!(parse("http://h:99999/").unwrap_err().contains("port"));
        assert!(parse("https://127.0.0.1:0/hook").unwrap_err().contains("port 0"));
        assert!(parse("http://u:p@h/").unwrap_err().contains("user name"));
        assert!(parse("http:///p").is_err());
        let long = parse(&format!("ftp://{}/", "a".repeat(100_000))).unwrap_err();
        assert!(long.len() < 400 && long.contains('…'), "{} bytes", long.len());
        assert!(parse("http://h/a b").is_err());
        assert!(parse("http://h/a\r\nX: y").is_err());
    }

    /// A server answering the first `fail` requests 503, then 200; returns
    /// the bodies it accepted. With `tls`, over TLS (a failed handshake
    /// is no request).
    async fn server(
        fail: usize,
        bodies: mpsc::UnboundedSender<String>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                match &tls {
                    Some(tls) => match tokio_rustls::TlsAcceptor::from(tls.clone()).accept(tcp).await {
                        Ok(s) => answer(s, &mut seen, fail, &bodies).await,
                        Err(_) => continue,
                    },
                    None => answer(tcp, &mut seen, fail, &bodies).await,
                }
            }
        });
        port
    }

    async fn answer<S>(mut s: S, seen: &mut usize, fail: usize, bodies: &mpsc::UnboundedSender<String>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        {
            {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                loop {
                    let r = s.read(&mut buf[n..]).await.unwrap();
                    n += r;
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            *seen += 1;
                            if *seen <= fail {
                                s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                                    .await
                                    .unwrap();
                            } else {
                                assert!(head.contains("Authorization: Bearer k"), "{head}");
                                bodies.send(body.to_owned()).unwrap();
                                s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
                            }
                            break;
                        }
                    }
                    if r == 0 {
                        break;
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn intents_arrive_in_order_after_retries() {
        let (bodies_tx, mut bodies) = mpsc::unbounded_channel();
        let port = server(2, bodies_tx, None).await;
        let (report_tx, mut report) = mpsc::unbounded_channel();
        let spec = WebhookSpec {
            url: format!("http://127.0.0.1:{port}/hook"),
            authorization: Some("Bearer k".into()),
        };
        let hook = Webhook::start(spec, report_tx).unwrap();
        for n in 1..=3 {
            assert!(hook.send(&intent(n)));
        }
        for n in 1..=3 {
            let body = bodies.recv().await.unwrap();
            let got: Intent = serde_json::from_str(&body).unwrap();
            assert_eq!(got, intent(n));
        }
        let mut failed = 0;
        let mut delivered = Vec::new();
        while delivered.len() < 3 {
            match report.recv().await.unwrap() {
                Delivery::Failed { error, .. } => {
                    assert!(error.contains("503"), "{error}");
                    failed += 1;
                }
                Delivery::Delivered { intent_id, attempts } => delivered.push((intent_id, attempts)),
                Delivery::Revoked { intent_id } => panic!("{intent_id} revoked"),
            }
        }
        assert_eq!(failed, 2);
        assert_eq!(delivered[0], ("d:1".to_owned(), 3));
        assert_eq!(delivered[2], ("d:3".to_owned(), 1));
    }

    #[tokio::test]
    async fn a_receiver_at_an_ipv6_address_is_reached() {
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let (heads_tx, mut heads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4096];
            let n = s.read(&mut b).await.unwrap();
            heads_tx
                .send(String::from_utf8_lossy(&b[..n]).into_owned())
                .unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let target = parse(&format!("http://[::1]:{port}/hook")).unwrap();
        post(&target, &crate::tls::client_config(), None, b"{}")
            .await
            .expect("delivered to [::1]");
        let head = heads.recv().await.unwrap();
        assert!(head.contains(&format!("\r\nHost: [::1]:{port}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn https_receivers_are_reached_when_their_certificate_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::tls::tests::self_signed(dir.path());
        let server_tls = crate::tls::server_config(&cert, &key).unwrap();
        let (bodies_tx, mut bodies) = mpsc::unbounded_channel();
        let port = server(0, bodies_tx, Some(server_tls)).await;
        let spec = |host: &str| WebhookSpec {
            url: format!("https://{host}:{port}/hook"),
            authorization: Some("Bearer k".into()),
        };

        // Trusted, by name and by address: delivered.
        for host in ["localhost", "127.0.0.1"] {
            let (report_tx, mut report) = mpsc::unbounded_channel();
            let trusting = crate::tls::client_config_trusting(&cert).unwrap();
            let hook = Webhook::start_with(spec(host), report_tx, trusting).unwrap();
            assert!(hook.send(&intent(7)));
            let got: Intent = serde_json::from_str(&bodies.recv().await.unwrap()).unwrap();
            assert_eq!(got, intent(7));
            let delivered = Delivery::Delivered {
                intent_id: "d:7".into(),
                attempts: 1,
            };
            assert_eq!(report.recv().await.unwrap(), delivered, "{host}");
        }

        // Not trusted (another certificate, or only the compiled-in and
        // the host's roots): every attempt fails on the certificate, and
        // nothing is delivered.
        let other = tempfile::tempdir().unwrap();
        let (other_cert, _) = crate::tls::tests::self_signed(other.path());
        for tls in [
            crate::tls::client_config_trusting(&other_cert).unwrap(),
            crate::tls::client_config(),
        ] {
            let (report_tx, mut report) = mpsc::unbounded_channel();
            let hook = Webhook::start_with(spec("localhost"), report_tx, tls).unwrap();
            assert!(hook.send(&intent(8)));
            match report.recv().await.unwrap() {
                Delivery::Failed { error, .. } => assert!(error.contains("certificate"), "{error}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(bodies.try_recv().is_err(), "an untrusted receiver got an intent");

        // Plain HTTP to the TLS port: fails, nothing delivered.
        let (report_tx, mut report) = mpsc::unbounded_channel();
        let plain = WebhookSpec {
            url: format!("http://127.0.0.1:{port}/hook"),
            authorization: None,
        };
        let hook = Webhook::start(plain, report_tx).unwrap();
        assert!(hook.send(&intent(9)));
        assert!(matches!(report.recv().await.unwrap(), Delivery::Failed { .. }));
        assert!(bodies.try_recv().is_err());
    }
}
