//! Starting and stopping the server under test (for `compare`).
//!
//! The server is started on `127.0.0.1:0` and announces its address on the first line of its
//! stdout (`listening on ADDR`). Its stderr is kept (the last lines) to explain a failed
//! start. Stopping is SIGTERM (graceful), then SIGKILL if it does not exit in time.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::LoadError;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server may take to exit after SIGTERM (its drain timeout is 5 s by default).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// Has the kernel send the server SIGTERM when the thread that started it ends, so that a
/// `shardcast-load` killed outright (no destructor runs) leaves no server behind. The signal
/// follows the starting *thread*: servers are started on the thread that runs the
/// comparison, which outlives them.
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl and
    // getppid are system calls.
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would send it.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// A server started by this process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    bin: PathBuf,
    addr: SocketAddr,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts `bin args...` and waits for its `listening on ADDR` line.
    pub fn start(bin: &Path, args: &[String]) -> Result<ServerProcess, LoadError> {
        let fail = |reason: String| LoadError::Server {
            bin: bin.to_path_buf(),
            reason,
        };
        let mut command = Command::new(bin);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        stop_with_parent(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            keep_tail(pipe, stderr.clone());
        }
        let (first_line, line_rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            thread::spawn(move || {
                let mut lines = BufReader::new(pipe).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = first_line.send(line);
                }
                // Keep draining so the server never blocks on a full pipe.
                for _ in lines {}
            });
        }
        let mut server = ServerProcess {
            child,
            bin: bin.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
        };
        let line = match line_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                // Give a dying server a moment so its exit status and stderr are complete.
                thread::sleep(Duration::from_millis(200));
                let status = server.child.try_wait().ok().flatten();
                return Err(fail(format!(
                    "did not announce its address ({}); stderr: {}",
                    status.map_or("still running".to_string(), |s| s.to_string()),
                    server.stderr_tail()
                )));
            }
        };
        server.addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| fail(format!("unexpected first line {line:?}")))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The last lines the server wrote to stderr, joined.
    pub fn stderr_tail(&self) -> String {
        match self.stderr.lock() {
            Ok(lines) => lines.iter().cloned().collect::<Vec<_>>().join(" | "),
            Err(_) => String::new(),
        }
    }

    /// SIGTERM, wait, SIGKILL if needed.
    pub fn stop(mut self) -> Result<(), LoadError> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped (we hold `Child`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => break,
                Err(e) => {
                    return Err(LoadError::Server {
                        bin: self.bin.clone(),
                        reason: format!("waiting for exit: {e}"),
                    });
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(LoadError::Server {
            bin: self.bin.clone(),
            reason: format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed"),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn keep_tail(pipe: impl Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == STDERR_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
}
