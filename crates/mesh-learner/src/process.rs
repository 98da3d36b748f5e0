//! One learner child process and the blocking calls to it.
//!
//! The node listens on a Unix socket in a private (0700) temporary folder,
//! starts the learner with the socket's path in [`SOCKET_ENV`], and accepts
//! its one connection; the frames travel on that connection. The learner's
//! stdout and stderr are only output: two threads log them line by line
//! and remember the last lines for error messages, so nothing the user's
//! code prints can break the framing. Every read and write of a call runs
//! against the call's deadline, so a hung learner costs its timeout, never a
//! stuck node. Dropping the process asks the learner to shut down, waits
//! briefly, then kills it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LearnerConfig;
use crate::error::LearnerError;
use crate::frame::{self, FrameError};
use crate::message::{self, MessageError, Reply, Request, PROTOCOL_VERSION};

/// Environment variable holding the socket path the learner connects to.
pub const SOCKET_ENV: &str = "AGENT_MESH_LEARNER_SOCKET";
/// Environment variable telling the learner which protocol version the node speaks.
pub const PROTOCOL_ENV: &str = "AGENT_MESH_LEARNER_PROTOCOL";
/// Lines of the learner's output remembered for error messages.
pub const OUTPUT_LINES_KEPT: usize = 20;
/// Longest output line logged as one; longer ones are split, in bytes.
pub const OUTPUT_LINE_BYTES_MAX: usize = 2_048;
/// How long a learner asked to shut down may take before it is killed, in ms.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// How long a learner that closed its connection may take to exit before it is killed, in ms.
const EXIT_WAIT_MS: u64 = 2_000;
/// Poll interval while waiting for a connection or an exit, in ms.
const POLL_MS: u64 = 10;

/// The last lines a learner wrote.
type OutputTail = Arc<Mutex<VecDeque<String>>>;

/// The learner's output: its last lines, and a signal from each logging
/// thread when its stream ends.
struct Output {
    tail: OutputTail,
    ended: Receiver<()>,
}

impl Output {
    /// The last lines, after waiting (at most `limit_ms`) for both streams
    /// to end, so a learner's last words make it into the error.
    fn last_words(&self, limit_ms: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_millis(limit_ms);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.ended.recv_timeout(left).is_err() {
                break;
            }
        }
        last_lines(&self.tail)
    }
}

/// A running learner that has answered the handshake.
pub struct LearnerProcess {
    child: Child,
    pid: u32,
    learner_name: String,
    stream: UnixStream,
    output: Output,
    frame_bytes_max: u32,
    stopped: bool,
    /// Holds the socket's folder until the process is gone.
    _socket_dir: tempfile::TempDir,
}

impl std::fmt::Debug for LearnerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnerProcess")
            .field("pid", &self.pid)
            .field("learner_name", &self.learner_name)
            .finish_non_exhaustive()
    }
}

/// A learner started but not yet connected.
struct Starting {
    child: Child,
    pid: u32,
    output: Output,
}

impl LearnerProcess {
    /// Starts the configured command, accepts its connection and completes
    /// the handshake, all within `start_timeout_ms`.
    pub fn spawn(config: &LearnerConfig) -> Result<Self, LearnerError> {
        let spawn_err = |cause| LearnerError::Spawn {
            command: config.command.clone(),
            cause,
        };
        let socket_dir = tempfile::Builder::new()
            .prefix("agent-mesh-learner-")
            .tempdir()
            .map_err(spawn_err)?;
        let path = socket_dir.path().join("learner.sock");
        let listener = UnixListener::bind(&path).map_err(spawn_err)?;
        listener.set_nonblocking(true).map_err(spawn_err)?;
        let mut starting = start_child(config, &path).map_err(spawn_err)?;
        let deadline = Instant::now() + Duration::from_millis(config.start_timeout_ms);
        let stream = match accept(&listener, &mut starting.child, deadline) {
            Ok(stream) => stream,
            Err(err) => return Err(starting.fail(err, config)),
        };
        let mut process = Self {
            child: starting.child,
            pid: starting.pid,
            learner_name: String::new(),
            stream,
            output: starting.output,
            frame_bytes_max: config.frame_bytes_max,
            stopped: false,
            _socket_dir: socket_dir,
        };
        process.handshake(config.start_timeout_ms)?;
        Ok(process)
    }

    fn handshake(&mut self, timeout_ms: u64) -> Result<(), LearnerError> {
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
        };
        match self.call(&hello, timeout_ms)? {
            Reply::Hello {
                protocol_version,
                learner_name,
            } if protocol_version == PROTOCOL_VERSION => {
                self.learner_name = learner_name;
                Ok(())
            }
            Reply::Hello {
                protocol_version, ..
            } => Err(LearnerError::Version {
                ours: PROTOCOL_VERSION,
                theirs: protocol_version,
            }),
            Reply::Error { message } => Err(LearnerError::Learner {
                call: "hello",
                message,
            }),
            other => Err(LearnerError::Message {
                call: "hello",
                cause: MessageError::Unexpected {
                    expected: "hello",
                    found: other.kind().to_owned(),
                },
            }),
        }
    }

    /// The learner's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name the learner gave in its hello.
    pub fn learner_name(&self) -> &str {
        &self.learner_name
    }

    /// Whether the process has ended (it may have died while idle).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `request` and waits for the reply, both within `timeout_ms`.
    /// The learner's `error` reply comes back as `Ok(Reply::Error)`.
    pub fn call(&mut self, request: &Request, timeout_ms: u64) -> Result<Reply, LearnerError> {
        let call = request.kind();
        let payload = message::encode_request(request)
            .map_err(|cause| LearnerError::Message { call, cause })?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let limit = self.frame_bytes_max;
        let mut io = Deadline {
            stream: &self.stream,
            deadline,
        };
        let exchanged = frame::write_frame(&mut io, &payload, limit)
            .and_then(|()| frame::read_frame(&mut io, limit));
        match exchanged {
            Ok(reply) => {
                message::decode_reply(&reply).map_err(|cause| LearnerError::Message { call, cause })
            }
            Err(err) => Err(self.frame_failure(call, err, timeout_ms)),
        }
    }

    /// The error for a failed frame exchange: a timeout, the learner's
    /// exit (with its status), or a broken frame.
    fn frame_failure(
        &mut self,
        call: &'static str,
        err: FrameError,
        timeout_ms: u64,
    ) -> LearnerError {
        match err {
            FrameError::Io(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                LearnerError::Timeout { call, timeout_ms }
            }
            FrameError::Closed => self.exited(call),
            FrameError::Io(e)
                if matches!(
                    e.kind(),
                    ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                self.exited(call)
            }
            FrameError::Truncated { .. }
                if wait_bounded(&mut self.child, EXIT_WAIT_MS).is_some() =>
            {
                self.exited(call)
            }
            cause => LearnerError::Frame { call, cause },
        }
    }

    /// The error for a learner that closed its connection: its exit status
    /// once it has exited (killed if it does not within a short wait).
    fn exited(&mut self, call: &'static str) -> LearnerError {
        let status = match wait_bounded(&mut self.child, EXIT_WAIT_MS) {
            Some(status) => status.to_string(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "closed its connection and was killed".to_owned()
            }
        };
        self.stopped = true;
        LearnerError::Exited {
            pid: self.pid,
            status,
            call,
            last_output: self.output.last_words(EXIT_WAIT_MS),
        }
    }

    /// The last lines the learner wrote to stdout or stderr.
    pub fn last_output(&self) -> Vec<String> {
        last_lines(&self.output.tail)
    }

    /// Kills the learner at once (after a timeout or a broken frame).
    pub fn kill(mut self) {
        self.stop(false);
    }

    fn stop(&mut self, graceful: bool) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut exited = None;
        if graceful {
            if let Ok(payload) = message::encode_request(&Request::Shutdown) {
                let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
                let mut io = Deadline {
                    stream: &self.stream,
                    deadline,
                };
                let _ = frame::write_frame(&mut io, &payload, self.frame_bytes_max);
            }
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            exited = wait_bounded(&mut self.child, SHUTDOWN_GRACE_MS);
        }
        if exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for LearnerProcess {
    fn drop(&mut self) {
        self.stop(true);
    }
}

impl Starting {
    /// The error for a learner that never connected: it exited, or the
    /// start timed out (it is killed).
    fn fail(mut self, err: std::io::Error, config: &LearnerConfig) -> LearnerError {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        match status {
            Some(status) => LearnerError::Exited {
                pid: self.pid,
                status,
                call: "start",
                last_output: self.output.last_words(EXIT_WAIT_MS),
            },
            None if err.kind() == ErrorKind::TimedOut => LearnerError::Timeout {
                call: "start",
                timeout_ms: config.start_timeout_ms,
            },
            None => LearnerError::Spawn {
                command: config.command.clone(),
                cause: err,
            },
        }
    }
}

/// Starts the learner with its output piped to the logging threads.
fn start_child(config: &LearnerConfig, socket: &std::path::Path) -> std::io::Result<Starting> {
    let (program, args) = config
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&config.env)
        .env(SOCKET_ENV, socket)
        .env(PROTOCOL_ENV, PROTOCOL_VERSION.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    let tail = OutputTail::default();
    let (ended_tx, ended) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        spawn_output_logger(stdout, pid, "stdout", tail.clone(), ended_tx.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_output_logger(stderr, pid, "stderr", tail.clone(), ended_tx);
    }
    Ok(Starting {
        child,
        pid,
        output: Output { tail, ended },
    })
}

/// Waits for the learner's connection until `deadline`, or until it exits.
fn accept(
    listener: &UnixListener,
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(std::io::Error::other(
                "the learner exited before connecting",
            ));
        }
        if Instant::now() >= deadline {
            return Err(ErrorKind::TimedOut.into());
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// A socket whose reads and writes all end by one deadline.
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut stream = self.stream;
        stream.flush()
    }
}

fn last_lines(output: &OutputTail) -> Vec<String> {
    match output.lock() {
        Ok(lines) => lines.iter().cloned().collect(),
        Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
    }
}

/// The exit status of `child` if it exits within `limit_ms`.
fn wait_bounded(child: &mut Child, limit_ms: u64) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < Duration::from_millis(limit_ms) => {
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
            _ => return None,
        }
    }
}

/// The thread that logs one of the learner's output streams and keeps its
/// last lines; it ends when the stream does.
fn spawn_output_logger(
    stream: impl Read + Send + 'static,
    pid: u32,
    name: &'static str,
    tail: OutputTail,
    ended: Sender<()>,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("learner-{name}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                let mut limited = (&mut reader).take(OUTPUT_LINE_BYTES_MAX as u64);
                match limited.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                tracing::info!(target: "mesh_learner::output", learner_pid = pid, stream = name, "{text}");
                let mut kept = match tail.lock() {
                    Ok(kept) => kept,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if kept.len() == OUTPUT_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(text);
            }
            let _ = ended.send(());
        });
    if let Err(err) = spawned {
        tracing::warn!(%err, "cannot start a thread for the learner's output");
    }
}
