//! A real `palisade serve` process on a loopback port, and a small blocking
//! HTTP client for it. Every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// An HTTP reply: status, headers we look at, body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply {} is not JSON ({e}): {}", self.status, self.text()))
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        self
    }

    /// Asserts a problem+json error of whatever status it has and type
    /// name `kind`.
    #[track_caller]
    pub fn problem_of_its_status(self, kind: &str) -> Value {
        let status = self.status;
        self.problem(status, kind)
    }

    /// Asserts a problem+json error of `status` and type name `kind`.
    #[track_caller]
    pub fn problem(self, status: u16, kind: &str) -> Value {
        let r = self.expect(status);
        assert_eq!(r.content_type, "application/problem+json", "{}", r.text());
        let v = r.json();
        assert_eq!(v["type"], format!("urn:palisade:problem:{kind}"), "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        v
    }
}

/// A blocking HTTP client for one base URL and (optionally) one token.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(64)
            .build()
            .into();
        Client {
            agent,
            base: base.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
        Client::try_reply(r).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The reply, or the transport error (refused, reset, timed out) as text.
    fn try_reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
        let mut r = r.map_err(|e| e.to_string())?;
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, retry_after, location) = (
            header("content-type").unwrap_or_default(),
            header("retry-after"),
            header("location"),
        );
        let mut body = Vec::new();
        r.body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok(Reply {
            status: r.status().as_u16(),
            content_type,
            retry_after,
            location,
            body,
        })
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        let url = format!("{}{path}", self.base);
        Client::reply(self.auth(self.agent.get(&url)).call(), &format!("GET {path}"))
    }

    pub fn delete(&self, path: &str) -> Reply {
        let url = format!("{}{path}", self.base);
        Client::reply(
            self.auth(self.agent.delete(&url)).call(),
            &format!("DELETE {path}"),
        )
    }

    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.post(&url))
            .header("Content-Type", content_type);
        Client::reply(req.send(body), &format!("POST {path}"))
    }

    /// POSTs JSON with one extra header.
    pub fn post_json_with(&self, path: &str, header: (&str, &str), v: &Value) -> Reply {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.post(&url))
            .header("Content-Type", "application/json")
            .header(header.0, header.1);
        Client::reply(req.send(v.to_string().as_bytes()), &format!("POST {path}"))
    }

    /// [`Client::post_json_with`] that gives a transport error back instead
    /// of failing the test (for clients of a server that is being killed).
    pub fn try_post_json_with(&self, path: &str, header: (&str, &str), v: &Value) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.post(&url))
            .header("Content-Type", "application/json")
            .header(header.0, header.1);
        Client::try_reply(req.send(v.to_string().as_bytes()))
    }

    /// [`Client::get`] that gives a transport error back.
    pub fn try_get(&self, path: &str) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        Client::try_reply(self.auth(self.agent.get(&url)).call())
    }

    pub fn put(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let url = format!("{}{path}", self.base);
        let req = self
            .auth(self.agent.put(&url))
            .header("Content-Type", content_type);
        Client::reply(req.send(body), &format!("PUT {path}"))
    }

    pub fn post_json(&self, path: &str, v: &Value) -> Reply {
        self.post(path, "application/json", v.to_string().as_bytes())
    }

    /// Uploads a module; returns its id.
    pub fn upload_module(&self, bytes: &[u8]) -> String {
        let r = self.post("/v1/strategies", "application/wasm", bytes);
        assert!(
            r.status == 201 || r.status == 200,
            "upload: {} {}",
            r.status,
            r.text()
        );
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Uploads a CSV dataset; returns its id.
    pub fn upload_csv(&self, name: &str, csv: &[u8]) -> String {
        let r = self.post(&format!("/v1/datasets?name={name}"), "text/csv", csv);
        assert!(
            r.status == 201 || r.status == 200,
            "dataset: {} {}",
            r.status,
            r.text()
        );
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Submits a job; returns its id.
    #[track_caller]
    pub fn submit(&self, job: &Value) -> String {
        let r = self.post_json("/v1/jobs", job).expect(201);
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Waits (server-side long polls, bounded) for a job to end; returns its
    /// result reply (200) or the last status reply.
    pub fn result(&self, id: &str) -> Reply {
        for _ in 0..20 {
            let r = self.get(&format!("/v1/jobs/{id}/result?wait=10000"));
            if r.status != 202 {
                return r;
            }
        }
        panic!("job {id} did not end within 200 s");
    }

    /// Polls a job's status until `done` holds (bounded); returns it.
    pub fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..2_000 {
            let v = self.get(&format!("/v1/jobs/{id}")).expect(200).json();
            if done(&v) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("job {id}: {what} did not happen within 2,000 polls");
    }
}

/// A `palisade serve` process on a loopback port.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts the `palisade` binary at `bin` with `args` after `serve` (plus
    /// `--listen 127.0.0.1:0 --data-dir DIR`) and waits for its "listening"
    /// line.
    pub fn start(bin: &str, data_dir: &Path, args: &[&str]) -> Server {
        Server::start_command(bin, "serve", data_dir, args)
    }

    /// Starts `palisade worker` (distributed mode) like [`Server::start`]:
    /// `base` is its probes' and metrics' address.
    pub fn start_worker(bin: &str, data_dir: &Path, args: &[&str]) -> Server {
        Server::start_command(bin, "worker", data_dir, args)
    }

    /// Starts `palisade <command>` with `args` (plus `--data-dir DIR`, and
    /// `--listen 127.0.0.1:0` unless `args` have a `--listen`) and waits
    /// for the line that says where it listens.
    pub fn start_command(bin: &str, command: &str, data_dir: &Path, args: &[&str]) -> Server {
        Server::start_command_env(bin, command, data_dir, args, &[])
    }

    /// [`Server::start_command`] with `env` added to the process's
    /// environment.
    pub fn start_command_env(
        bin: &str,
        command: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let log = data_dir.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg(command);
        if !args.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("PALISADE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read stdout");
        let line = line.trim();
        let addr = line.strip_prefix("palisade listening on ").or_else(|| {
            line.strip_prefix("palisade worker ")
                .and_then(|rest| rest.split_once(" on "))
                .map(|(_, addr)| addr)
        });
        let Some(addr) = addr else {
            let _ = child.kill();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{cmd:?} did not start; stdout: {line:?}\nlog:\n{log_text}");
        };
        Server {
            child: Some(child),
            base: addr.to_owned(),
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.base, token)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM, then waits for the exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..3_000 {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        panic!(
            "the server did not stop within 30 s of SIGTERM; log:\n{}",
            self.log_text()
        );
    }

    /// Sets the soft file-size limit (RLIMIT_FSIZE) of the running server:
    /// at 0 or 1 byte no file of it can grow, as on a full disk (the server
    /// ignores SIGXFSZ, so a write fails instead of killing it); `None`
    /// lifts it.
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let pid = self.pid() as libc::pid_t;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit reads and writes only the two structs passed.
        let got = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
        assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
        let new = libc::rlimit {
            rlim_cur: bytes.unwrap_or(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A webhook receiver on a free loopback port, in a thread of its own:
/// every request's body is kept, in arrival order, and answered 200.
pub struct WebhookSink {
    pub url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a webhook sink");
        let url = format!("http://{}/intents", listener.local_addr().expect("its address"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || serve_hook(stream, &kept));
            }
        });
        WebhookSink { url, bodies }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Answers one connection's requests (keep-alive) until it closes.
fn serve_hook(stream: std::net::TcpStream, kept: &std::sync::Mutex<Vec<String>>) {
    use std::io::Write;
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(String::from_utf8_lossy(&body).into_owned());
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
