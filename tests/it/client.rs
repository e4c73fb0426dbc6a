//! `shardcast client`: pipe mode through real rooms, handshake options, wss, reconnection,
//! and interactive mode driven through tmux.
//!
//! The interactive test needs `tmux` on the PATH and fails (rather than skips) without it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

use crate::util::{IO_TIMEOUT, ServerProcess, recv_data};

/// `shardcast client ARGS` in pipe mode with every stream piped, killed when dropped.
struct PipeClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// Each stderr line as it comes (the whole text is also kept for `finish`).
    notes: mpsc::Receiver<String>,
}

impl PipeClient {
    fn start(args: &[&str]) -> PipeClient {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .arg("client")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the client starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, notes) = mpsc::channel();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                let _ = tx.send(line);
            }
            text
        });
        PipeClient {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            notes,
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        writeln!(stdin, "{line}").expect("the client reads stdin");
        stdin.flush().expect("the client reads stdin");
    }

    fn recv_line(&self) -> String {
        self.recv_line_within(IO_TIMEOUT)
    }

    fn recv_line_within(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .expect("the client prints a line")
    }

    /// Every line up to and including the first for which `last` holds, waiting up to
    /// `timeout` for each.
    fn lines_until(&self, timeout: Duration, last: impl Fn(&str) -> bool) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(timeout)
                .unwrap_or_else(|e| panic!("{e}: no more lines after {lines:#?}"));
            let done = last(&line);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Waits up to `timeout` for a stderr line for which `wanted` holds; returns it.
    fn wait_note(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.notes.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("no such line on stderr within {timeout:?}: {e}"),
            }
        }
    }

    /// Closes stdin and waits for the exit; returns the status and everything on stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        self.stdin = None;
        let status = wait_with_deadline(&mut self.child);
        let stderr = self.stderr.take().expect("once").join().unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for PipeClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, failing the test (after killing it) past `IO_TIMEOUT`.
fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not exit within {IO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `shardcast client ARGS` with empty stdin to its end, bounded by `IO_TIMEOUT`.
fn run_client(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .arg("client")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    wait_with_deadline(&mut child);
    child.wait_with_output().expect("the output is readable")
}

/// A port on which nothing listens (bound, then released).
fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

/// A fresh folder for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("client-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the scratch folder can be created");
    dir
}

#[test]
fn pipe_mode_sends_lines_and_prints_the_rooms_messages() {
    let server = ServerProcess::start(&[]);
    let mut watcher = server.client("pipe");
    let mut client = PipeClient::start(&[&server.url("pipe")]);
    client.send_line("hello");
    client.send_line("second line, with spaces");
    // The room echoes to every member, the sender included.
    assert_eq!(client.recv_line(), "hello");
    assert_eq!(client.recv_line(), "second line, with spaces");
    assert_eq!(recv_data(&mut watcher), Message::text("hello"));
    assert_eq!(
        recv_data(&mut watcher),
        Message::text("second line, with spaces")
    );
    // What another member says arrives on stdout too.
    watcher.send(Message::text("from the watcher")).unwrap();
    assert_eq!(client.recv_line(), "from the watcher");
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn pipe_mode_speaks_shardcast_v1_with_the_server() {
    let server = ServerProcess::start(&[]);
    let mut plain = server.client("v1");
    let url = format!("{}?nick=term", server.url("v1"));
    let mut client = PipeClient::start(&[&url, "--subprotocol", "shardcast.v1"]);
    let welcome = client.recv_line();
    assert!(
        welcome.starts_with(r#"{"type":"welcome","#) && welcome.contains(r#""nick":"term""#),
        "{welcome}"
    );
    client.send_line(r#"{"type":"message","text":"from the terminal"}"#);
    assert!(client.recv_line().contains(r#""text":"from the terminal""#));
    // Plain members see the v1 message as `nick: text`.
    assert_eq!(
        recv_data(&mut plain),
        Message::text("term: from the terminal")
    );
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn pipe_mode_exits_zero_when_the_server_closes() {
    let (addr, server) = scripted_server(1, |_, _, mut ws| {
        ws.send(Message::text("welcome")).unwrap();
        ws.close(None).unwrap();
        drain(&mut ws);
    });
    let mut client = PipeClient::start(&[&format!("ws://{addr}/")]);
    assert_eq!(client.recv_line(), "welcome");
    // Stdin is still open: the server's close alone ends the run.
    let status = wait_with_deadline(&mut client.child);
    assert!(status.success(), "{status}");
    server.join().expect("the scripted server finishes");
}

#[test]
fn a_refused_connection_fails_with_a_clear_message() {
    let output = run_client(&[&format!("ws://127.0.0.1:{}/", refused_port())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to 127.0.0.1:") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[test]
fn the_servers_origin_check_sees_the_clients_origin() {
    let server = ServerProcess::start(&["--allowed-origin", "https://good.example"]);
    let refused = run_client(&[&server.url("r"), "--origin", "https://evil.example"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the WebSocket upgrade: HTTP 403"),
        "{stderr}"
    );

    let mut allowed = PipeClient::start(&[&server.url("r"), "--origin", "https://good.example"]);
    allowed.send_line("let in");
    assert_eq!(allowed.recv_line(), "let in");
    let (status, stderr) = allowed.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn headers_origin_and_subprotocol_reach_the_server() {
    let (addr, server) = scripted_server(1, |_, request, mut ws| {
        let header = |name: &str| {
            request
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map_or("-".to_string(), |(_, v)| v.clone())
        };
        let summary = format!(
            "token={} two={} origin={} protocol={}",
            header("x-token"),
            header("x-two"),
            header("origin"),
            header("sec-websocket-protocol"),
        );
        ws.send(Message::text(summary)).unwrap();
        ws.close(None).unwrap();
        drain(&mut ws);
    });
    let client = PipeClient::start(&[
        &format!("ws://{addr}/"),
        "--header",
        "X-Token: secret value",
        "-H",
        "X-Two:2",
        "--origin",
        "https://o.example",
        "--subprotocol",
        "chat",
    ]);
    assert_eq!(
        client.recv_line(),
        "token=secret value two=2 origin=https://o.example protocol=chat"
    );
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    server.join().expect("the scripted server finishes");
}

#[test]
fn the_negotiated_subprotocol_and_server_header_are_reported() {
    use shardcast::client::{ConnectOptions, Target, Trust, connect, tls};
    let (addr, server) = scripted_server(1, |_, _, mut ws| {
        ws.close(None).unwrap();
        drain(&mut ws);
    });
    let options = ConnectOptions {
        headers: vec![],
        origin: None,
        subprotocol: Some("chat".into()),
        tls: tls::client_config(&Trust::Verify {
            extra_roots: vec![],
        })
        .unwrap(),
        connect_timeout: IO_TIMEOUT,
    };
    let target = Target::parse(&format!("ws://{addr}/room")).unwrap();
    let opened = connect::open(&target, &options).expect("the handshake succeeds");
    assert_eq!(opened.handshake.subprotocol.as_deref(), Some("chat"));
    assert_eq!(opened.handshake.server.as_deref(), Some("scripted/1"));
    assert_eq!(opened.handshake.peer, Some(addr));
    drop(opened);
    server.join().expect("the scripted server finishes");
}

#[test]
fn a_subprotocol_the_server_ignores_fails_the_connection() {
    // shardcast speaks only shardcast.v1; like browsers, the client refuses to go on when the
    // server accepts none of the subprotocols it asked for.
    let server = ServerProcess::start(&[]);
    let output = run_client(&[&server.url("r"), "--subprotocol", "chat"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("accepted none of the subprotocols asked for (chat)"),
        "{stderr}"
    );
}

#[test]
fn wss_verifies_the_certificate_against_the_given_ca() {
    let dir = scratch("wss");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen makes a certificate");
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let url = format!("wss://127.0.0.1:{}/secure", server.addr.port());

    let mut trusted = PipeClient::start(&[&url, "--ca", cert_file.to_str().unwrap()]);
    trusted.send_line("over tls");
    assert_eq!(trusted.recv_line(), "over tls");
    let (status, stderr) = trusted.finish();
    assert!(status.success(), "{status}: {stderr}");

    // Mozilla's roots alone do not vouch for a self-signed certificate.
    let untrusted = run_client(&[&url]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS handshake with 127.0.0.1 failed") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );

    let mut insecure = PipeClient::start(&[&url, "--insecure"]);
    insecure.send_line("unverified");
    assert_eq!(insecure.recv_line(), "unverified");
    let (status, stderr) = insecure.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn pings_go_out_and_a_silent_server_counts_as_dropped() {
    let (addr, server) = scripted_server(2, |n, _, mut ws| {
        if n == 0 {
            // Tungstenite answers pings by itself; report the first one.
            while !matches!(ws.read().expect("frames arrive"), Message::Ping(_)) {}
            ws.send(Message::text("pinged")).unwrap();
            drain(&mut ws);
        } else {
            // Swallow bytes without answering anything, until the client gives up.
            let mut sink = [0u8; 256];
            while matches!(ws.get_mut().read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let url = format!("ws://{addr}/");
    let answered = PipeClient::start(&[&url, "--ping-interval", "0.1"]);
    assert_eq!(answered.recv_line(), "pinged");
    let (status, stderr) = answered.finish();
    assert!(status.success(), "{status}: {stderr}");

    let mut ignored = PipeClient::start(&[&url, "--ping-interval", "0.1"]);
    let status = wait_with_deadline(&mut ignored.child);
    let (_, stderr) = ignored.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connection lost: no answer to a ping within 0.1 s"),
        "{stderr}"
    );
    server.join().expect("the scripted server finishes");
}

#[test]
fn binary_mode_sends_lines_as_binary_messages() {
    let (addr, server) = scripted_server(1, |_, _, mut ws| {
        let reply = match ws.read().expect("a message arrives") {
            Message::Binary(bytes) => format!("binary, {} bytes", bytes.len()),
            other => format!("unexpected {other:?}"),
        };
        ws.send(Message::text(reply)).unwrap();
        drain(&mut ws);
    });
    let mut client = PipeClient::start(&[&format!("ws://{addr}/"), "--binary"]);
    client.send_line("abc");
    assert_eq!(client.recv_line(), "binary, 3 bytes");
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    server.join().expect("the scripted server finishes");
}

#[test]
fn reconnect_resumes_after_a_drop() {
    let (addr, server) = scripted_server(2, |n, _, mut ws| {
        if n == 1 {
            ws.send(Message::text("second connection")).unwrap();
        }
        let first = match ws.read().expect("a message arrives") {
            Message::Text(text) => text,
            other => panic!("text expected, got {other:?}"),
        };
        if n == 0 {
            ws.send(Message::text(format!("first:{first}"))).unwrap();
            // Drop the TCP connection without a close frame.
            ws.get_mut().shutdown(std::net::Shutdown::Both).unwrap();
        } else {
            ws.send(Message::text(format!("second:{first}"))).unwrap();
            drain(&mut ws);
        }
    });
    let mut client = PipeClient::start(&[&format!("ws://{addr}/"), "--reconnect"]);
    client.send_line("one");
    assert_eq!(client.recv_line(), "first:one");
    // A line sent before the client has noticed the drop goes to the dead connection and is
    // lost (nothing acknowledges a message): send the next one on the new connection.
    assert_eq!(client.recv_line(), "second connection");
    client.send_line("two");
    assert_eq!(client.recv_line(), "second:two");
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("reconnecting in"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
    server.join().expect("the scripted server finishes");
}

#[test]
fn reconnect_gives_up_after_max_retries() {
    let url = format!("ws://127.0.0.1:{}/", refused_port());
    // Stdin stays open: there is input to come, so the client keeps trying.
    let mut client = PipeClient::start(&[&url, "--reconnect", "--max-retries", "2"]);
    let status = wait_with_deadline(&mut client.child);
    let (_, stderr) = client.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("reconnecting in").count(), 2, "{stderr}");
    assert!(
        stderr.contains("gave up after 2 reconnection attempts; last: cannot connect"),
        "{stderr}"
    );
}

#[test]
fn reconnect_retries_forever_by_default() {
    // More attempts than any bound would allow by default: the sixth comes after at least
    // 7.75 s of refusals (0.25 + 0.5 + 1 + 2 + 4), at most 15.5 s.
    let url = format!("ws://127.0.0.1:{}/", refused_port());
    let mut client = PipeClient::start(&["--nick", "term", "--reconnect", &url]);
    client.wait_note(COMEBACK, |l| {
        l.contains("reconnecting in") && l.contains("(attempt 6)")
    });
    assert!(
        client.child.try_wait().expect("try_wait").is_none(),
        "still running"
    );
}

#[test]
fn reconnect_stops_when_there_is_nothing_left_to_send() {
    // Stdin is empty and closed: no reason to retry, and the failure is the exit status.
    let url = format!("ws://127.0.0.1:{}/", refused_port());
    let output = run_client(&[&url, "--reconnect"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn interactive_mode_under_tmux() {
    let dir = scratch("interactive");
    let log = dir.join("server.log");
    let server = ServerProcess::start_logging_to(&[], &log);
    let room = server.url("chat");
    let tmux = Tmux::start(
        "interactive",
        &format!("'{}' client", env!("CARGO_BIN_EXE_shardcast")),
    );
    tmux.wait_for("the prompt", |s| s.contains("client> "));

    // Before any connection, a typed line has nowhere to go.
    tmux.type_line("hello");
    tmux.wait_for_answer("hello", "> No connection to send to: /connect <url> first");

    tmux.type_line(&format!("/connect {room}"));
    tmux.wait_for("connection 0", |s| {
        s.contains("> Created connection with id 0")
    });
    tmux.wait_for("connection 0 open", |s| s.contains("> [0] open"));
    tmux.type_line(&format!("/connect {room}"));
    tmux.wait_for("connection 1 open", |s| s.contains("> [1] open"));

    tmux.type_line("/send 0 hello");
    tmux.wait_for("hello on both", |s| {
        s.contains("< [0] hello") && s.contains("< [1] hello")
    });
    // A line without `/` goes to the current connection (the last opened), `//` escapes.
    tmux.type_line("//from one");
    tmux.wait_for("/from one on both", |s| {
        s.contains("< [0] /from one") && s.contains("< [1] /from one")
    });

    tmux.type_line("/show 0");
    let shown = tmux.wait_for_answer("/show 0", "<< /from one");
    for fact in [
        &format!("> URL: {room}"),
        "> State: open",
        "> Server: shardcast/",
        "> Subprotocol: (none)",
        "> Messages: 1 sent, 2 received",
        ">   >> hello",
        ">   << hello",
    ] {
        assert!(shown.contains(fact), "{fact:?} in:\n{shown}");
    }
    tmux.type_line("/show 1");
    let shown = tmux.wait_for_answer("/show 1", "<< /from one");
    for fact in [
        "> State: open",
        "> Messages: 1 sent, 2 received",
        ">   >> /from one",
    ] {
        assert!(shown.contains(fact), "{fact:?} in:\n{shown}");
    }

    tmux.type_line("/close 1 4000 bye");
    tmux.wait_for("connection 1 closed", |s| {
        s.contains(r#"> [1] closed by us with 4000 "bye""#)
    });
    wait_for_file(&log, r#"client closed with code 4000: "bye""#);

    // A shardcast.v1 connection: `/list` and `/show` name the server's id for it.
    tmux.type_line(&format!("/connect {room}?nick=ivy shardcast.v1"));
    tmux.wait_for("the welcome on connection 2", |s| {
        s.contains(r#"< [2] {"type":"welcome""#)
    });
    tmux.type_line("/list");
    let listed = tmux.wait_for_answer("/list", "[2]");
    assert!(listed.contains(&format!("> [0] open {room}")), "{listed}");
    assert!(listed.contains(&format!("> [1] closed {room}")), "{listed}");
    assert!(listed.contains("(id "), "the v1 connection's id: {listed}");
    tmux.type_line("/who 2");
    tmux.wait_for("the members on connection 2", |s| {
        s.contains(r#"< [2] {"type":"members","room":"#) && s.contains(r#""nick":"ivy""#)
    });

    for (line, answer) in [
        ("/show 9", "> No connection found with id 9"),
        ("/frobnicate", "> Unknown command /frobnicate"),
        ("/connect not-a-url", r#"> Invalid URL "not-a-url""#),
        ("/send 0", "> Missing message"),
        ("/send 1 too late", "> Connection 1 is closed"),
        ("/close 0 1005", r#"> Invalid close code "1005""#),
        ("/help", "/connect <url> [subprotocol]"),
    ] {
        tmux.type_line(line);
        tmux.wait_for_answer(line, answer);
    }

    tmux.type_line("/quit");
    tmux.wait_for("the client to exit with status 0", |s| {
        s.contains(&format!("{EXIT_STATUS} 0]"))
    });
    wait_for_file(&log, "client closed with code 1000");
}

#[test]
fn chat_mode_in_a_terminal_under_tmux() {
    let server = ServerProcess::start(&[]);
    let room = server.url("lounge");
    let chat = |nick: &str| {
        let command = format!(
            "'{}' client --nick {nick} --history 10 {room}",
            env!("CARGO_BIN_EXE_shardcast")
        );
        Tmux::start(nick, &command)
    };
    let ann = chat("ann");
    ann.wait_for("ann's welcome", |s| {
        s.contains("* joined #lounge as ann (you are ") && s.contains("), 1 online")
    });
    ann.wait_for("ann's prompt", |s| s.contains("ann> "));
    ann.type_line("hello");
    ann.wait_for("ann's own message back", |s| s.contains("ann: hello"));

    let bob = chat("bob");
    // Bob asked for history: ann's message before he came is marked as such.
    bob.wait_for("bob's welcome and history", |s| {
        s.contains("* joined #lounge as bob (you are ")
            && s.contains("), 2 online")
            && s.contains("[history] ann: hello")
    });
    ann.wait_for("bob's arrival", |s| {
        s.contains("* bob joined (") && s.contains("), 2 online")
    });

    ann.type_line("hi bob");
    bob.wait_for("ann's message", |s| s.contains("ann: hi bob"));
    assert!(
        !bob.screen().contains("[history] ann: hi bob"),
        "a live message is not history"
    );
    bob.type_line("//shrug");
    ann.wait_for("bob's message with its leading slash", |s| {
        s.contains("bob: /shrug")
    });

    bob.type_line("/who");
    bob.wait_for("/who's answer: both, by name", |s| {
        s.lines()
            .any(|l| l.starts_with("* 2 here: ann (") && l.contains("), bob (") && l.ends_with(')'))
    });
    // A second ann (whatever the case) is refused, and told why.
    let other = chat("ANN");
    other.wait_for("the second ann's refusal", |s| {
        s.contains("! nick_taken: someone in this room has that nickname")
            && !s.contains("* joined")
    });
    other.type_line("/quit");
    other.wait_for("the second ann's client to exit", |s| {
        s.contains(&format!("{EXIT_STATUS} 0]"))
    });
    bob.type_line("/help");
    bob.wait_for("/help's answer", |s| {
        s.contains("Commands:") && s.contains("/quit")
    });
    bob.type_line("/nope");
    bob.wait_for("the unknown command's answer", |s| {
        s.contains("unknown command /nope")
    });
    assert!(
        !ann.screen().contains("nope") && !ann.screen().contains("bob: /who"),
        "commands are not sent"
    );

    bob.type_line("/quit");
    bob.wait_for("bob's client to exit with status 0", |s| {
        s.contains(&format!("{EXIT_STATUS} 0]"))
    });
    ann.wait_for("bob's departure", |s| {
        s.contains("* bob left (") && s.contains("), 1 online")
    });
    ann.type_line("/quit");
    ann.wait_for("ann's client to exit with status 0", |s| {
        s.contains(&format!("{EXIT_STATUS} 0]"))
    });
}

#[test]
fn chat_mode_in_a_terminal_says_when_the_connection_is_gone() {
    let server = ServerProcess::start(&[]);
    let command = format!(
        "'{}' client --nick cy {}",
        env!("CARGO_BIN_EXE_shardcast"),
        server.url("gone")
    );
    let cy = Tmux::start("cy", &command);
    cy.wait_for("cy's welcome", |s| s.contains("* joined #gone as cy"));
    // Killed: the connection breaks without a close frame, and there is no --reconnect.
    drop(server);
    cy.wait_for("the notice", |s| {
        s.contains("* connection lost: ") && s.contains("; press Enter to exit")
    });
    // The prompt hands the terminal back at the next Enter, and the run failed.
    cy.type_line("");
    cy.wait_for("cy's client to exit with status 1", |s| {
        s.contains(&format!("{EXIT_STATUS} 1]"))
    });
}

/// Printed in the pane, followed by the status and `]`, when the program has exited.
const EXIT_STATUS: &str = "[exited with status";

/// A tmux server of our own (a private socket) running one session, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell command) in a detached 200x50 session. When it exits, the
    /// pane shows `[exited with status N]` and stays open: tmux may stop reading a pane whose
    /// program has ended before showing its last output, and may not report its status.
    fn start(name: &str, command: &str) -> Tmux {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "the interactive test needs tmux (apt-get install tmux)"
        );
        let tmux = Tmux {
            socket: format!("shardcast-it-{}-{name}", std::process::id()),
        };
        // The sleep ends with the tmux server (`kill-server` on drop hangs it up).
        let command = format!("{command}; echo \"{EXIT_STATUS} $?]\"; exec sleep 600");
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "it",
            "-x",
            "200",
            "-y",
            "50",
            &command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .env_remove("RUST_LOG")
            .output()
            .expect("tmux runs");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "it", "-l", line]);
        self.run(&["send-keys", "-t", "it", "Enter"]);
    }

    /// The screen and its scrollback, wrapped lines joined.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", "it", "-S", "-1000"])
    }

    /// Polls the screen until `done` holds, failing with the screen after `IO_TIMEOUT`.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the answer to the last `command` typed contains `expected`; returns it.
    fn wait_for_answer(&self, command: &str, expected: &str) -> String {
        let screen = self.wait_for(&format!("{expected:?} after {command:?}"), |s| {
            answer(s, command).contains(expected)
        });
        answer(&screen, command)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The lines after the last `client> COMMAND` line, up to the next prompt.
fn answer(screen: &str, command: &str) -> String {
    let typed = format!("client> {command}");
    let Some(start) = screen.rfind(&typed) else {
        return String::new();
    };
    screen[start + typed.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("client> "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `path` until it contains `text`, failing after `IO_TIMEOUT`.
fn wait_for_file(path: &Path, text: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {text:?} in {path:?}:\n{content}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Request headers as (lower-case name, value) pairs.
type Headers = Vec<(String, String)>;

/// A one-thread WebSocket server for `connections` connections in turn, each handed with its
/// request headers to `script`. It answers with `Server: scripted/1` and accepts whatever
/// subprotocol was asked for.
fn scripted_server(
    connections: usize,
    script: impl Fn(usize, Headers, WebSocket<TcpStream>) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let thread = thread::spawn(move || {
        for n in 0..connections {
            let (stream, _) = listener.accept().expect("a client connects");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut headers = Headers::new();
            // The callback's signature (with its large error type) is tungstenite's.
            #[allow(clippy::result_large_err)]
            let ws =
                tungstenite::accept_hdr(stream, |request: &Request, mut response: Response| {
                    for (name, value) in request.headers() {
                        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        headers.push((name.as_str().to_string(), value));
                    }
                    let answer = response.headers_mut();
                    answer.insert("server", "scripted/1".parse().unwrap());
                    if let Some(protocol) = request.headers().get("sec-websocket-protocol") {
                        answer.insert("sec-websocket-protocol", protocol.clone());
                    }
                    Ok(response)
                })
                .expect("the handshake succeeds");
            script(n, headers, ws);
        }
    });
    (addr, thread)
}

/// Reads until the client has finished the close handshake (or gone).
fn drain(ws: &mut WebSocket<TcpStream>) {
    while ws.read().is_ok() {}
}

/// A TCP proxy in front of a server, to drop a client abruptly and to stand in for a
/// restart. `cut` shuts every connection through it down on both sides (no close frame: the
/// server sees its client vanish, the client sees the connection lost); while `hold` is on,
/// new connections are accepted but not passed on until `release`, so that the room can move
/// on while the client is away; `point_to` sends later connections to another server.
struct CutProxy {
    addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    upstream: SocketAddr,
    holding: bool,
    /// Connections accepted while holding, not passed on yet.
    held: Vec<TcpStream>,
    /// Both ends of every connection passed on, for `cut`.
    open: Vec<TcpStream>,
}

impl CutProxy {
    fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            upstream,
            holding: false,
            held: Vec::new(),
            open: Vec::new(),
        }));
        let shared = state.clone();
        // Ends with the test process (the listener is never closed).
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut state = shared.lock().unwrap();
                if state.holding {
                    state.held.push(client);
                } else {
                    state.pass(client);
                }
            }
        });
        CutProxy { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    fn hold(&self) {
        self.state.lock().unwrap().holding = true;
    }

    fn release(&self) {
        let mut state = self.state.lock().unwrap();
        state.holding = false;
        for client in std::mem::take(&mut state.held) {
            state.pass(client);
        }
    }

    fn cut(&self) {
        for socket in std::mem::take(&mut self.state.lock().unwrap().open) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Stands in for a server that is down: later connections are refused (closed at once).
    fn point_nowhere(&self) {
        self.point_to(SocketAddr::from(([127, 0, 0, 1], refused_port())));
    }

    fn point_to(&self, upstream: SocketAddr) {
        self.state.lock().unwrap().upstream = upstream;
    }

    /// Waits until a connection is held: the client has noticed the drop and is back.
    fn wait_held(&self) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.state.lock().unwrap().held.is_empty() {
            assert!(Instant::now() < deadline, "the client did not reconnect");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl ProxyState {
    fn pass(&mut self, client: TcpStream) {
        let Ok(upstream) = TcpStream::connect(self.upstream) else {
            return; // Dropping the client: as if the server were down.
        };
        for socket in [&client, &upstream] {
            self.open.push(socket.try_clone().expect("clone"));
        }
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
            });
        };
        pipe(
            client.try_clone().expect("clone"),
            upstream.try_clone().expect("clone"),
        );
        pipe(upstream, client);
    }
}

/// A stdout line of a v1 client as JSON.
fn envelope(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// Reads the client's lines until a `message` whose text is `last`; returns the texts of the
/// messages read (with `last`) and the welcomes among them.
fn read_until(client: &PipeClient, last: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let (mut texts, mut welcomes) = (Vec::new(), Vec::new());
    loop {
        let line = envelope(&client.recv_line());
        match line["type"].as_str() {
            Some("welcome") => welcomes.push(line),
            Some("message") => {
                let text = line["text"].as_str().expect("a text").to_string();
                let done = text == last;
                texts.push(text);
                if done {
                    return (texts, welcomes);
                }
            }
            _ => {}
        }
    }
}

/// Sends `texts` as a plain member and waits for each echo: the room has them all then.
fn say(watcher: &mut crate::util::Client, texts: &[&str]) {
    for text in texts {
        watcher.send(Message::text(*text)).unwrap();
    }
    for text in texts {
        assert_eq!(recv_data(watcher), Message::text(*text));
    }
}

#[test]
fn reconnect_resumes_a_v1_room_and_prints_no_line_twice() {
    let server = ServerProcess::start(&[]);
    let proxy = CutProxy::start(server.addr);
    let mut watcher = server.client("resume");
    let url = format!("{}?nick=term", proxy.url("resume"));
    let mut client = PipeClient::start(&[&url, "--subprotocol", "shardcast.v1", "--reconnect"]);
    let welcome = envelope(&client.recv_line());
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(welcome["epoch"].is_string(), "history is on: {welcome}");

    say(&mut watcher, &["before 1", "before 2"]);
    let (before, _) = read_until(&client, "before 2");
    assert_eq!(before, ["before 1", "before 2"]);

    // Drop the client without a close frame; the room moves on while it is away.
    proxy.hold();
    proxy.cut();
    proxy.wait_held();
    say(&mut watcher, &["away 1", "away 2", "away 3"]);
    proxy.release();
    client.send_line(r#"{"type":"message","text":"back"}"#);

    let (after, welcomes) = read_until(&client, "back");
    assert_eq!(
        after,
        ["away 1", "away 2", "away 3", "back"],
        "each once, in order"
    );
    assert_eq!(welcomes.len(), 1, "{welcomes:?}");
    assert_eq!(welcomes[0]["recovered"], true, "{}", welcomes[0]);
    assert_eq!(welcomes[0]["replay"], 3, "{}", welcomes[0]);
    assert_eq!(welcomes[0]["epoch"], welcome["epoch"]);
    assert_eq!(recv_data(&mut watcher), Message::text("term: back"));
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("reconnected to") && stderr.contains("since="),
        "{stderr}"
    );
    assert!(!stderr.contains("missing"), "{stderr}");
}

#[test]
fn reconnect_to_a_restarted_server_says_messages_may_be_missing() {
    // The proxy stands in for a restart on the same address: the client reconnects to the
    // same URL and finds a new server process, with a new history epoch.
    let first = ServerProcess::start(&[]);
    let proxy = CutProxy::start(first.addr);
    let mut watcher = first.client("restart");
    let url = format!("{}?nick=term", proxy.url("restart"));
    let client = PipeClient::start(&[&url, "--subprotocol", "shardcast.v1", "--reconnect"]);
    let welcome = envelope(&client.recv_line());
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    say(&mut watcher, &["old"]);
    assert_eq!(read_until(&client, "old").0, ["old"]);
    drop(watcher);

    proxy.hold();
    proxy.cut();
    drop(first);
    let second = ServerProcess::start(&[]);
    proxy.point_to(second.addr);
    proxy.wait_held();
    proxy.release();
    let mut watcher = second.client("restart");
    // Once its welcome is printed, the client is a member of the new server's room. (The
    // old watcher's leave may come first, if it reached the client before the cut.)
    let welcome = loop {
        let line = envelope(&client.recv_line());
        if line["type"] != "leave" {
            break line;
        }
    };
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["recovered"], false, "a new epoch: {welcome}");
    say(&mut watcher, &["new"]);
    let (texts, welcomes) = read_until(&client, "new");
    assert_eq!(texts, ["new"], "nothing of the old server's again");
    assert!(welcomes.is_empty());
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stderr.matches("some messages may be missing").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("could not resume from"), "{stderr}");
}

/// How long a test waits for a client to come back after an outage: its backoff may be at
/// 4-8 s (the fifth attempt) when the server returns, and the machine may be slow.
const COMEBACK: Duration = Duration::from_secs(60);

/// How long the server is away in the outage tests: several reconnection attempts fail.
const OUTAGE: Duration = Duration::from_secs(5);

#[test]
fn chat_mode_in_a_pipe_prints_the_room_for_people() {
    let server = ServerProcess::start(&[]);
    let mut plain = server.client("pipe-chat");
    let mut client = PipeClient::start(&["--nick", "term", &server.url("pipe-chat")]);
    let welcome = client.recv_line();
    assert!(
        welcome.starts_with("* joined #pipe-chat as term (you are ")
            && welcome.ends_with(", 2 online"),
        "{welcome}"
    );
    client.send_line("hello, room");
    assert_eq!(client.recv_line(), "term: hello, room");
    assert_eq!(recv_data(&mut plain), Message::text("term: hello, room"));
    // A leading `//` sends one `/`; commands are not sent, their answers go to stderr.
    client.send_line("/help");
    client.send_line("//slash");
    assert_eq!(client.recv_line(), "term: /slash");
    assert_eq!(recv_data(&mut plain), Message::text("term: /slash"));
    // A plain member has no nickname: its id stands in.
    plain.send(Message::text("from plain")).unwrap();
    let line = client.recv_line();
    assert!(
        line.starts_with('(') && line.ends_with("): from plain"),
        "{line}"
    );
    drop(plain);
    let left = client.recv_line();
    assert!(
        left.starts_with("* (") && left.ends_with(") left, 1 online"),
        "{left}"
    );
    // Stdin stays open: `/quit` alone ends the run. (Nothing may be written after it: the
    // client may be gone already.)
    client.send_line("/quit");
    let status = wait_with_deadline(&mut client.child);
    let (_, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("Commands:"), "{stderr}");
}

#[test]
fn a_nick_the_server_would_refuse_is_refused_at_once() {
    let output = run_client(&["--nick", "two words", "ws://127.0.0.1:9/"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"invalid --nick "two words": a nickname is 1-24"#),
        "{stderr}"
    );
}

#[test]
fn chat_mode_shows_history_as_history() {
    let server = ServerProcess::start(&[]);
    let mut ann = PipeClient::start(&["--nick", "ann", &server.url("hist")]);
    assert!(ann.recv_line().starts_with("* joined #hist as ann"));
    ann.send_line("first");
    assert_eq!(ann.recv_line(), "ann: first");
    let bob = PipeClient::start(&["--nick", "bob", "--history", "5", &server.url("hist")]);
    assert!(bob.recv_line().starts_with("* joined #hist as bob"));
    assert_eq!(bob.recv_line(), "[history] ann: first");
    assert!(ann.recv_line().starts_with("* bob joined ("));
    ann.send_line("second");
    assert_eq!(bob.recv_line(), "ann: second");
}

#[test]
fn raw_prints_the_envelopes_as_json() {
    let server = ServerProcess::start(&[]);
    let mut client = PipeClient::start(&["--nick", "term", "--raw", &server.url("raw")]);
    // The client said hello by itself; everything else is as it came and as it was typed.
    let welcome = envelope(&client.recv_line());
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["nick"], "term", "{welcome}");
    client.send_line(r#"{"type":"message","text":"/not a command"}"#);
    let message = envelope(&client.recv_line());
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["text"], "/not a command", "{message}");
    assert_eq!(message["nick"], "term", "{message}");
    client.send_line("not json");
    let error = envelope(&client.recv_line());
    assert_eq!(error["code"], "bad_envelope", "{error}");
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn chat_mode_rides_out_an_outage_and_shows_each_message_once() {
    let server = ServerProcess::start(&[]);
    let proxy = CutProxy::start(server.addr);
    let mut watcher = server.client("outage");
    let mut client = PipeClient::start(&[
        "--nick",
        "term",
        "--history",
        "5",
        "--reconnect",
        &proxy.url("outage"),
    ]);
    assert!(client.recv_line().starts_with("* joined #outage as term"));
    say(&mut watcher, &["before"]);
    assert!(client.recv_line().ends_with("): before"));

    // The server is unreachable for several seconds; the room moves on meanwhile.
    proxy.point_nowhere();
    proxy.cut();
    say(&mut watcher, &["away 1", "away 2"]);
    thread::sleep(OUTAGE);
    proxy.point_to(server.addr);
    client.send_line("back");

    let lines = client.lines_until(COMEBACK, |l| l == "term: back");
    let texts: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once("): ").map(|(_, text)| text))
        .collect();
    assert_eq!(
        texts,
        ["away 1", "away 2"],
        "each once, in order: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("missing")),
        "the room was resumed: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("* joined #outage as term")),
        "{lines:#?}"
    );
    assert_eq!(recv_data(&mut watcher), Message::text("term: back"));
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.matches("reconnecting in").count() >= 2,
        "several attempts failed: {stderr}"
    );
    assert!(stderr.contains("reconnected to"), "{stderr}");
}

#[test]
fn chat_mode_rides_out_a_slow_server_restart_and_marks_the_gap() {
    // The proxy stands in for a restart on the same address, with the server down meanwhile.
    let first = ServerProcess::start(&[]);
    let proxy = CutProxy::start(first.addr);
    let mut watcher = first.client("restart");
    let mut client = PipeClient::start(&["--nick", "term", "--reconnect", &proxy.url("restart")]);
    assert!(client.recv_line().starts_with("* joined #restart as term"));
    say(&mut watcher, &["old"]);
    assert!(client.recv_line().ends_with("): old"));
    drop(watcher);

    proxy.point_nowhere();
    proxy.cut();
    drop(first);
    thread::sleep(OUTAGE);
    let second = ServerProcess::start(&[]);
    proxy.point_to(second.addr);
    client.send_line("back");

    let lines = client.lines_until(COMEBACK, |l| l == "term: back");
    let gaps: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("* --- some messages may be missing: "))
        .collect();
    assert_eq!(gaps.len(), 1, "one marker: {lines:#?}");
    assert!(
        !lines.iter().any(|l| l.ends_with("): old")),
        "nothing shown twice: {lines:#?}"
    );
    let mut watcher = second.client("restart");
    say(&mut watcher, &["new"]);
    let lines = client.lines_until(IO_TIMEOUT, |l| l.ends_with("): new"));
    assert!(lines.iter().all(|l| !l.contains("missing")), "{lines:#?}");
    let (status, stderr) = client.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("reconnected to"), "{stderr}");
}
