//! Starting the server binary and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Every blocking socket operation in the tests gives up after this long, so a broken server
/// fails a test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The threading model under test: `SHARDCAST_MODEL`, default `sharded`.
pub fn model() -> String {
    std::env::var("SHARDCAST_MODEL").unwrap_or_else(|_| "sharded".into())
}

/// A running server process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `shardcast --listen 127.0.0.1:0 --no-pin ARGS` and waits for its address line.
    /// `SHARDCAST_MODEL` (single, shared, sharded) picks the threading model under test.
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut command = Self::command(args, "warn");
        command.stderr(Stdio::inherit());
        Self::spawn(command)
    }

    /// Like [`start`](Self::start), logging at debug level (whatever `RUST_LOG` says) into
    /// the file `log`.
    pub fn start_logging_to(args: &[&str], log: &std::path::Path) -> ServerProcess {
        let file = std::fs::File::create(log).expect("the log file can be created");
        let mut command = Self::command(args, "debug");
        command.env_remove("RUST_LOG").stderr(file);
        Self::spawn(command)
    }

    fn command(args: &[&str], log_level: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardcast"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-pin",
                "--log-level",
                log_level,
            ])
            .args(["--model", &model()])
            .args(args)
            .stdout(Stdio::piped());
        command
    }

    fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command.spawn().expect("the shardcast binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(IO_TIMEOUT)
            .expect("the server prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        ServerProcess { child, addr }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Resident memory of the server, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc entry is readable");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS is present");
        kib * 1024
    }

    /// A raw TCP connection with timeouts.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// A WebSocket client in `room`.
    pub fn client(&self, room: &str) -> Client {
        let stream = self.raw();
        let (ws, _) = tungstenite::client(self.url(room), MaybeTlsStream::Plain(stream))
            .expect("the WebSocket handshake succeeds");
        ws
    }

    /// Sends one request on a fresh connection and returns the whole answer (until EOF or
    /// the end of the body).
    pub fn http(&self, request: &str) -> String {
        let mut s = self.raw();
        s.write_all(request.as_bytes()).unwrap();
        read_response(&mut s)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test client.
pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Reads one HTTP response: head, then `Content-Length` bytes of body.
pub fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => panic!("reading a response head: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("the body arrives");
    head + &String::from_utf8_lossy(&body)
}

/// Receives the next data message, skipping control frames.
pub fn recv_data(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("a message arrives") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            _ => continue,
        }
    }
}
