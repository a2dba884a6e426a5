//! A small Hugging Face Hub on 127.0.0.1 for the tests of `fidshard fetch`: the file list
//! (`/api/models/{repo}/revision/{rev}`), `resolve` with the hub's headers (`X-Repo-Commit`,
//! `ETag` = git blob id for small files, `X-Linked-Etag` = SHA-256 and a redirect to `/cdn/`
//! for large ones), byte ranges, gated repos, plain files under `/files/`, and faults injected
//! per request: a status (with `Retry-After`), a connection reset or a clean close in the middle
//! of the body, a corrupted byte, a stall, a trickle, a body without a size that never ends.
//! Large files can be sent to a CDN on another port (a second mock, which logs the headers it
//! gets). Every request is logged, with its `Authorization` header.
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What goes wrong with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, empty body; `Some(s)` adds `Retry-After: s`.
    Status(u16, Option<u64>),
    /// The first `n` body bytes, then a TCP reset.
    ResetAfter(usize),
    /// The first `n` body bytes, then a clean close (the body is shorter than announced).
    CloseAfter(usize),
    /// The whole body with one byte changed.
    Corrupt,
    /// A complete answer of only the first `n` body bytes (its `Content-Length` says `n`).
    ShortBody(usize),
    /// The first `n` body bytes, then silence for `d`, then a close.
    StallAfter(usize, Duration),
    /// The body `n` bytes at a time, a pause of `d` after each.
    Trickle(usize, Duration),
    /// No `Content-Length`: the body, then zeros until the client hangs up.
    Endless,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
    pub status: u16,
    /// Body bytes written.
    pub sent: usize,
}

#[derive(Default)]
struct Repo {
    files: BTreeMap<String, Vec<u8>>,
    /// Gated: only this bearer token may read it.
    token: Option<String>,
}

#[derive(Default)]
struct State {
    /// `http://127.0.0.1:PORT`: the CDN redirects are absolute, as on the hub.
    base: String,
    /// Where LFS files are redirected to (`{cdn}/cdn/{sha256}`), when not `base`.
    cdn: Option<String>,
    repos: HashMap<String, Repo>,
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<(String, String), VecDeque<Fault>>,
    /// Pause after each 64 KiB of these paths' bodies.
    slow: HashMap<String, Duration>,
    log: Vec<Request>,
}

pub struct MockHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

pub fn git_blob_id(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Large (LFS) files go through the CDN, as on the hub.
fn is_lfs(name: &str) -> bool {
    [".pt", ".safetensors", ".bin"]
        .iter()
        .any(|e| name.ends_with(e))
}

impl MockHub {
    pub fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            base: url.clone(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, &st);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MockHub { url, state, stop }
    }

    pub fn add_repo(&self, id: &str, files: &[(&str, Vec<u8>)], token: Option<&str>) {
        let repo = Repo {
            files: files
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
            token: token.map(str::to_string),
        };
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(id.to_string(), repo);
    }

    /// Serves `bytes` at `{url}/files/{name}`; returns that URL.
    pub fn add_file(&self, name: &str, bytes: Vec<u8>) -> String {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(name.to_string(), bytes);
        format!("{}/files/{name}", self.url)
    }

    /// The next `method` requests of `path` fail with these faults, in order.
    pub fn fault(&self, method: &str, path: &str, faults: &[Fault]) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry((method.to_string(), path.to_string()))
            .or_default()
            .extend(faults.iter().cloned());
    }

    /// LFS files are redirected to `{base}/cdn/...` (another server, e.g. a second mock with the
    /// same repos) instead of this one.
    pub fn cdn_at(&self, base: &str) {
        self.state.lock().unwrap().cdn = Some(base.to_string());
    }

    pub fn slow(&self, path: &str, per_64k: Duration) {
        self.state
            .lock()
            .unwrap()
            .slow
            .insert(path.to_string(), per_64k);
    }

    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// GETs of `path` that delivered a body to its end, once the server has logged them (it
    /// logs after the last write, which the client may see first).
    pub fn complete_gets(&self, path: &str, len: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.count_complete(path, len) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.count_complete(path, len)
    }

    fn count_complete(&self, path: &str, len: usize) -> usize {
        self.log()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path && (200..300).contains(&r.status))
            .filter(|r| {
                let from = r
                    .range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes="))
                    .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok())
                    .unwrap_or(0);
                from + r.sent == len
            })
            .count()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Serve `body` with byte ranges.
    ranged: bool,
}

impl Reply {
    fn status(status: u16, headers: &[(&str, &str)]) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            ranged: false,
        }
    }
}

fn route(st: &State, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let gate = |repo: &Repo| match &repo.token {
        Some(t) if auth != Some(&format!("Bearer {t}")) => Some(Reply::status(
            401,
            &[
                ("X-Error-Code", "GatedRepo"),
                ("X-Error-Message", "Access to this model is restricted"),
            ],
        )),
        _ => None,
    };
    let not_found = |code: &str| Reply::status(404, &[("X-Error-Code", code)]);
    match parts.as_slice() {
        ["api", "models", org, name, "revision", rev] => {
            let Some(repo) = st.repos.get(&format!("{org}/{name}")) else {
                return Reply::status(401, &[("X-Error-Code", "RepoNotFound")]);
            };
            if let Some(r) = gate(repo) {
                return r;
            }
            if *rev != "main" && *rev != COMMIT {
                return not_found("RevisionNotFound");
            }
            let siblings: Vec<String> = repo
                .files
                .keys()
                .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                .collect();
            let body = format!(
                "{{\"id\":\"{org}/{name}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
                siblings.join(",")
            );
            Reply {
                body: body.into_bytes(),
                ..Reply::status(200, &[("Content-Type", "application/json")])
            }
        }
        [org, name, "resolve", rev, file @ ..] => {
            let Some(repo) = st.repos.get(&format!("{org}/{name}")) else {
                return Reply::status(401, &[("X-Error-Code", "RepoNotFound")]);
            };
            if let Some(r) = gate(repo) {
                return r;
            }
            if *rev != "main" && *rev != COMMIT {
                return not_found("RevisionNotFound");
            }
            let Some(bytes) = repo.files.get(&file.join("/")) else {
                return not_found("EntryNotFound");
            };
            let len = bytes.len().to_string();
            if is_lfs(&file.join("/")) {
                let sha = sha256_hex(bytes);
                let loc = format!("{}/cdn/{sha}", st.cdn.as_deref().unwrap_or(&st.base));
                Reply::status(
                    302,
                    &[
                        ("Location", &loc),
                        ("X-Repo-Commit", COMMIT),
                        ("X-Linked-Etag", &format!("\"{sha}\"")),
                        ("X-Linked-Size", &len),
                        ("ETag", "\"git-pointer-id\""),
                    ],
                )
            } else {
                let etag = format!("\"{}\"", git_blob_id(bytes));
                Reply {
                    body: bytes.clone(),
                    ranged: true,
                    ..Reply::status(200, &[("X-Repo-Commit", COMMIT), ("ETag", &etag)])
                }
            }
        }
        ["cdn", sha] => {
            let found = st
                .repos
                .values()
                .flat_map(|r| r.files.values())
                .find(|b| sha256_hex(b) == *sha);
            match found {
                Some(b) => Reply {
                    body: b.clone(),
                    ranged: true,
                    ..Reply::status(200, &[])
                },
                None => Reply::status(404, &[]),
            }
        }
        ["files", name @ ..] => match st.files.get(&name.join("/")) {
            Some(b) => Reply {
                body: b.clone(),
                ranged: true,
                ..Reply::status(200, &[])
            },
            None => Reply::status(404, &[]),
        },
        _ => {
            let _ = method;
            Reply::status(404, &[])
        }
    }
}

fn serve(conn: TcpStream, state: &Arc<Mutex<State>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("/"),
    );
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    let (reply, fault, slow) = {
        let mut st = state.lock().unwrap();
        let fault = st
            .faults
            .get_mut(&(method.clone(), path.clone()))
            .and_then(VecDeque::pop_front);
        (
            route(&st, &method, &path, auth.as_deref()),
            fault,
            st.slow.get(&path).copied(),
        )
    };
    let mut reply = reply;
    if let Some(Fault::Status(code, retry_after)) = &fault {
        reply = Reply::status(*code, &[]);
        if let Some(s) = retry_after {
            reply.headers.push(("Retry-After".into(), s.to_string()));
        }
    }
    // Byte ranges.
    let mut body = reply.body.clone();
    let total = body.len();
    if reply.ranged && reply.status == 200 {
        if let Some(from) = range
            .as_deref()
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok())
        {
            if from >= total && total > 0 {
                reply = Reply::status(416, &[("Content-Range", &format!("bytes */{total}"))]);
                body.clear();
            } else {
                reply.status = 206;
                reply.headers.push((
                    "Content-Range".into(),
                    format!("bytes {from}-{}/{total}", total.saturating_sub(1)),
                ));
                body = body[from..].to_vec();
            }
        }
    }
    if matches!(fault, Some(Fault::Corrupt)) && !body.is_empty() {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let reason = match reply.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nConnection: close\r\n",
        reply.status
    );
    for (k, v) in &reply.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(Fault::ShortBody(n)) = fault {
        body.truncate(n);
    }
    if matches!(fault, Some(Fault::Endless)) {
        head += "\r\n";
    } else {
        head += &format!("Content-Length: {}\r\n\r\n", body.len());
    }
    let mut conn = conn;
    conn.write_all(head.as_bytes())?;
    let limit = match &fault {
        Some(Fault::ResetAfter(n)) | Some(Fault::CloseAfter(n)) | Some(Fault::StallAfter(n, _)) => {
            (*n).min(body.len())
        }
        _ => body.len(),
    };
    let mut sent = 0;
    // Logged before the body goes out (the client may finish before the last write returns
    // here); `sent` is filled in as it goes.
    let index = {
        let mut st = state.lock().unwrap();
        st.log.push(Request {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            auth: auth.clone(),
            status: reply.status,
            sent: 0,
        });
        st.log.len() - 1
    };
    let log = |sent: usize| {
        if let Some(r) = state.lock().unwrap().log.get_mut(index) {
            r.sent = sent;
        }
    };
    let chunk_len = match &fault {
        Some(Fault::Trickle(n, _)) => (*n).max(1),
        _ => 64 << 10,
    };
    if method != "HEAD" {
        for chunk in body[..limit].chunks(chunk_len) {
            if let Some(d) = slow {
                std::thread::sleep(d);
            }
            if let Err(e) = conn.write_all(chunk) {
                log(sent);
                return Err(e);
            }
            sent += chunk.len();
            if let Some(Fault::Trickle(_, d)) = &fault {
                log(sent);
                std::thread::sleep(*d);
            }
        }
        if matches!(fault, Some(Fault::Endless)) {
            let zeros = vec![0u8; 64 << 10];
            // Until the client hangs up (or 256 MiB, should it never).
            while sent < 256 << 20 && conn.write_all(&zeros).is_ok() {
                sent += zeros.len();
            }
            log(sent);
            return Ok(());
        }
    }
    conn.flush()?;
    log(sent);
    match fault {
        Some(Fault::ResetAfter(_)) => {
            // Let the client read what was sent first: a reset drops unread data.
            std::thread::sleep(Duration::from_millis(150));
            reset(&conn)
        }
        Some(Fault::StallAfter(_, d)) => std::thread::sleep(d),
        _ => {}
    }
    Ok(())
}

/// Closes with a TCP RST instead of a FIN (SO_LINGER with a zero timeout).
fn reset(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// `fidshard ARGS` against `hub`, its caches under `dir` (`hub/`, `hf-home/`,
/// `fidshard-cache/`), without the caller's tokens, offline switch or proxies.
pub fn fidshard_on(hub: &MockHub, dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fidshard"));
    cmd.args(args)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", dir.join("hub"))
        .env("HF_HOME", dir.join("hf-home"))
        .env("FIDSHARD_CACHE", dir.join("fidshard-cache"));
    for k in [
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(k);
    }
    cmd
}
