//! Intents delivered by webhook: each published intent is POSTed as its JSON
//! (`docs/live.md`) to the organisation's endpoint, in order, at least once
//! (a delivery that fails is retried with capped backoff before the next
//! one; a receiver deduplicates by the intent's `id`). `http://` only, over a
//! plain HTTP/1.1 connection per delivery; any 2xx answer is an
//! acknowledgement.
//!
//! What it does not do: TLS, redirects, persistence of undelivered intents
//! across restarts (the deployment's intents journal holds them; the API's
//! `GET /v1/deployments/{id}/intents` serves them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::intent::Intent;

/// Where and how intents are delivered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Sent as the `Authorization` header, when set.
    #[serde(default)]
    pub authorization: Option<String>,
}

/// Intents waiting for delivery, at most; more are dropped and counted.
pub const QUEUE: usize = 10_000;
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of an `http://` URL.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("webhook url `{url}`: expected http:// (no TLS in this build)"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("webhook url `{url}`: bad port `{p}`"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "webhook url `{url}`: no host, or a path with spaces or control characters"
        ));
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        path,
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
                    match post(&target, spec.authorization.as_deref(), &body).await {
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
async fn post(target: &Target, authorization: Option<&str>, body: &[u8]) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", target.host, target.port))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: palisade-webhook\r\n",
            target.path,
            target.host,
            target.port,
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
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
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
                host: "127.0.0.1".into(),
                port: 9000,
                path: "/hook?x=1".into()
            }
        );
        assert_eq!(parse("http://h").unwrap().port, 80);
        assert!(parse("https://h/").unwrap_err().contains("http://"));
        assert!(parse("http://h:x/").unwrap_err().contains("port"));
        assert!(parse("http:///p").is_err());
        assert!(parse("http://h/a b").is_err());
    }

    /// A server answering the first `fail` requests 503, then 200; returns
    /// the bodies it accepted.
    async fn server(fail: usize, bodies: mpsc::UnboundedSender<String>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
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
                            seen += 1;
                            if seen <= fail {
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
        });
        port
    }

    #[tokio::test]
    async fn intents_arrive_in_order_after_retries() {
        let (bodies_tx, mut bodies) = mpsc::unbounded_channel();
        let port = server(2, bodies_tx).await;
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
}
