//! The persistent bash of a sandbox: `bash --noprofile --norc` as the jail's
//! command, fed scripts on stdin, with completion found by a marker line.
//!
//! Each command is sent as a quoted here-document read into a variable and
//! `eval`ed in the shell itself (so `cd`, variables, functions and background
//! jobs persist between calls, and a syntax error is just a non-zero status),
//! with stdin from `/dev/null` and stderr merged into stdout. Then the shell
//! prints `\n<marker> <status>\n` on fd 9, a copy of its stdout made at
//! start-up, so a command that redirects its own stdout cannot swallow it.
//! The marker holds 128 random bits drawn per shell plus a counter; a command
//! can still forge it (it can read its own shell's state), which only lets it
//! end its own call early or lie about its own status.
//!
//! Output is read as it comes into a [`TailBuffer`], so a flood never holds
//! more than the cap in the server. Output that background jobs write between
//! calls is kept and shows at the start of the next call's output.

use std::time::Duration;

use rand::RngExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout};

use super::SandboxError;
use super::jail::{Jail, JailSpec, System};
use super::output::{MAX_OUTPUT_BYTES, TailBuffer};

/// How long a new shell may take to answer its start-up script.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the output of an exited shell is still read for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of bubblewrap's own stderr kept for error messages.
const MAX_STDERR_BYTES: usize = 8 * 1024;
/// Read size from the shell's stdout.
const READ_CHUNK: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The command finished with this status.
    Exited { status: i32, output: Vec<u8>, truncated: bool },
    /// The timeout passed first; the shell must be killed.
    TimedOut { output: Vec<u8>, truncated: bool },
    /// The shell itself ended (the command ran `exit`, or was killed).
    ShellEnded { output: Vec<u8>, truncated: bool },
    /// The caller's stop signal came first (the sandbox went over its disk
    /// limit); the shell must be killed.
    Stopped { output: Vec<u8>, truncated: bool },
}

/// What ended a wait in [`Shell::exchange`]: the read (with the status and
/// the marker's end, or `None` if the shell closed its output), the timeout
/// or the caller's stop signal.
enum Ended {
    Read(Option<(i32, usize)>),
    TimedOut,
    Stopped,
}

/// A running shell in its jail.
#[derive(Debug)]
pub struct Shell {
    jail: Jail,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    marker: String,
    n_commands: u64,
    /// Bytes read after the last marker (background output).
    pending: Vec<u8>,
}

impl Shell {
    /// Starts a jail running bash and runs `init` in it; fails with what
    /// bubblewrap or the script printed if it does not come up.
    pub async fn start(system: &System, spec: &JailSpec, init: &str) -> Result<Shell, SandboxError> {
        let mut jail = Jail::spawn(system, spec)?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (jail.child.stdin.take(), jail.child.stdout.take(), jail.child.stderr.take())
        else {
            jail.kill();
            return Err(SandboxError::Startup { detail: "the sandbox's pipes are missing".to_owned() });
        };
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = MAX_STDERR_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            kept
        });
        let marker = format!("__LOGBOOK_DONE_{:032x}", rand::rng().random::<u128>());
        let mut shell = Shell { jail, stdin, stdout, stderr, marker, n_commands: 0, pending: Vec::new() };
        let script = format!(
            "exec 9>&1 2>&1\nPS1=''; PS2=''; PS4='+ '\n{init}\nprintf '\\n%s %d\\n' '{marker}_0' \"$?\" >&9\n",
            marker = shell.marker
        );
        match shell.exchange(&script, STARTUP_TIMEOUT, std::future::pending()).await {
            Ok(Completion::Exited { status: 0, .. }) => Ok(shell),
            Ok(Completion::Exited { status, output, .. }) => {
                let detail = format!("the start-up script failed with status {status}: {}", lossy_tail(&output));
                shell.kill().await;
                Err(SandboxError::Startup { detail })
            }
            // (The start-up exchange has no stop signal.)
            Ok(Completion::TimedOut { .. } | Completion::Stopped { .. }) => {
                shell.kill().await;
                Err(SandboxError::Startup { detail: format!("no answer within {}s", STARTUP_TIMEOUT.as_secs()) })
            }
            Ok(Completion::ShellEnded { output, .. }) => {
                let stderr = shell.kill().await;
                Err(SandboxError::Startup {
                    detail: format!("bubblewrap exited: {}{}", lossy_tail(&stderr), lossy_tail(&output)),
                })
            }
            Err(source) => {
                let stderr = shell.kill().await;
                Err(SandboxError::Startup { detail: format!("{source}: {}", lossy_tail(&stderr)) })
            }
        }
    }

    /// Runs `command` (which must not contain NUL bytes) with a timeout.
    pub async fn run(&mut self, command: &str, timeout: Duration) -> std::io::Result<Completion> {
        self.run_until(command, timeout, std::future::pending()).await
    }

    /// Runs `command` like [`Shell::run`], ending early with
    /// [`Completion::Stopped`] if `stop` resolves first.
    pub async fn run_until(
        &mut self,
        command: &str,
        timeout: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<Completion> {
        self.n_commands += 1;
        let delimiter = loop {
            let delimiter = format!("__LOGBOOK_EOF_{:032x}", rand::rng().random::<u128>());
            if !command.contains(&delimiter) {
                break delimiter;
            }
        };
        let script = format!(
            "IFS= read -r -d '' __logbook_cmd <<'{delimiter}'\n{command}\n{delimiter}\n\
             eval \"$__logbook_cmd\" </dev/null 2>&1; printf '\\n%s %d\\n' '{marker}_{n}' \"$?\" >&9\n",
            marker = self.marker,
            n = self.n_commands,
        );
        self.exchange(&script, timeout, stop).await
    }

    /// Sends `script` and reads until the current marker, the timeout, `stop`
    /// or the end of the shell.
    async fn exchange(
        &mut self,
        script: &str,
        timeout: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<Completion> {
        let marker = format!("\n{}_{} ", self.marker, self.n_commands);
        let mut buf = TailBuffer::new(MAX_OUTPUT_BYTES + marker.len() + 16);
        let mut scan = MarkerScan::new(marker.as_bytes());
        let Shell { jail, stdin, stdout, pending, .. } = self;
        // Output background jobs wrote since the last call comes first.
        let early = scan.push(&mut buf, &std::mem::take(pending));
        let io = async {
            stdin.write_all(script.as_bytes()).await?;
            stdin.flush().await?;
            let found = match early {
                Some(found) => Some(found),
                None => read_to_marker(stdout, &mut buf, &mut scan).await?,
            };
            Ok::<_, std::io::Error>(found.map(|Found { status, end, rest }| {
                *pending = rest;
                (status, end)
            }))
        };
        let outcome = tokio::select! {
            res = io => Ended::Read(res?),
            () = tokio::time::sleep(timeout) => Ended::TimedOut,
            () = stop => Ended::Stopped,
        };
        tracing::trace!(read = scan.pushed, scanned = scan.scanned, "read a command's output");
        match outcome {
            Ended::Read(Some((status, end))) => {
                let total = buf.bytes().len();
                buf.truncate_end(total - end);
                let (output, truncated) = cap(buf.finish());
                Ok(Completion::Exited { status, output, truncated })
            }
            Ended::Read(None) => {
                // The shell closed its stdout: wait for it to end, then report.
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, jail.child.wait()).await;
                let (output, truncated) = cap(buf.finish());
                Ok(Completion::ShellEnded { output, truncated })
            }
            Ended::TimedOut => {
                let (output, truncated) = cap(buf.finish());
                Ok(Completion::TimedOut { output, truncated })
            }
            Ended::Stopped => {
                let (output, truncated) = cap(buf.finish());
                Ok(Completion::Stopped { output, truncated })
            }
        }
    }

    /// Whether the shell's process has ended.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.jail.child.try_wait(), Ok(None))
    }

    /// Kills the jail without waiting (for `Drop`).
    pub fn kill_now(&mut self) {
        self.jail.kill();
    }

    /// Kills the jail and returns what bubblewrap wrote to stderr.
    pub async fn kill(mut self) -> Vec<u8> {
        self.jail.kill();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.jail.child.wait()).await;
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut self.stderr).await {
            Ok(Ok(stderr)) => stderr,
            Ok(Err(_)) | Err(_) => {
                self.stderr.abort();
                Vec::new()
            }
        }
    }

    /// The pid of the jail's outer process (for tests and diagnostics).
    pub fn pid(&self) -> Option<u32> {
        self.jail.child.id()
    }
}

/// Reads `reader` into `buf` until `scan` finds the marker line; `None` if
/// the reader ends first.
async fn read_to_marker<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut TailBuffer,
    scan: &mut MarkerScan<'_>,
) -> std::io::Result<Option<Found>> {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(found) = scan.push(buf, &chunk[..n]) {
            return Ok(Some(found));
        }
    }
}

/// A marker line found by [`MarkerScan`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// The command's exit status.
    status: i32,
    /// Where the output ends in the buffer: where the marker starts.
    end: usize,
    /// What followed the marker line (background output, for the next call).
    rest: Vec<u8>,
}

/// Finds `\n<marker>_<n> <status>\n`, the last one, in a command's output as
/// it arrives in a [`TailBuffer`], looking only at what each read added
/// (plus the marker's length less one, for a marker that straddles reads):
/// rescanning the whole buffer on every read would let a sandbox that
/// trickles output a byte at a time after a large output cost the server
/// 100 KiB of scanning per byte. Positions are offsets in the whole output,
/// since the buffer drops its oldest bytes.
#[derive(Debug)]
struct MarkerScan<'m> {
    marker: &'m [u8],
    /// Bytes pushed so far.
    pushed: usize,
    /// Every marker that ends at or before this offset has been looked for.
    searched: usize,
    /// The last marker found whose line has not ended yet: its offset, and
    /// how far its line has been searched for the newline ending it.
    open: Option<(usize, usize)>,
    /// Bytes looked at so far (the work done, for diagnostics and tests).
    scanned: usize,
}

impl<'m> MarkerScan<'m> {
    fn new(marker: &'m [u8]) -> MarkerScan<'m> {
        MarkerScan { marker, pushed: 0, searched: 0, open: None, scanned: 0 }
    }

    /// Pushes `bytes` into `buf` and looks for the marker line in what they
    /// add.
    fn push(&mut self, buf: &mut TailBuffer, bytes: &[u8]) -> Option<Found> {
        if bytes.is_empty() {
            return None;
        }
        buf.push(bytes);
        self.pushed += bytes.len();
        let held = buf.bytes();
        // The offset of `held[0]` in the whole output.
        let base = self.pushed - held.len();
        // A marker starting before `searched - (len - 1)` ended within what
        // was searched before; one that starts later may end in the new bytes.
        let from = self.searched.saturating_sub(self.marker.len().saturating_sub(1)).max(base);
        let window = &held[from - base..];
        self.scanned += window.len();
        if let Some(pos) = window.windows(self.marker.len()).rposition(|w| w == self.marker) {
            // A later marker replaces an earlier one whose line is open.
            self.open = Some((from + pos, from + pos + self.marker.len()));
        }
        self.searched = self.pushed;
        let (start, line_from) = self.open?;
        if start < base {
            // The marker's line grew past the buffer: not a marker line.
            self.open = None;
            return None;
        }
        let line = &held[line_from - base..];
        self.scanned += line.len();
        let Some(newline) = line.iter().position(|b| *b == b'\n') else {
            self.open = Some((start, self.pushed));
            return None;
        };
        self.open = None;
        let line_end = line_from - base + newline;
        let status_bytes = &held[start - base + self.marker.len()..line_end];
        let status = std::str::from_utf8(status_bytes).ok()?.trim().parse().ok()?;
        Some(Found { status, end: start - base, rest: held[line_end + 1..].to_vec() })
    }
}

/// The last [`MAX_OUTPUT_BYTES`] of an output (the buffer held a little more,
/// room for the marker line).
fn cap((mut output, truncated): (Vec<u8>, bool)) -> (Vec<u8>, bool) {
    if output.len() <= MAX_OUTPUT_BYTES {
        return (output, truncated);
    }
    output.drain(..output.len() - MAX_OUTPUT_BYTES);
    (output, true)
}

fn lossy_tail(bytes: &[u8]) -> String {
    const KEEP: usize = 2000;
    let start = bytes.len().saturating_sub(KEEP);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
