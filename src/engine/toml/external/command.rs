//! The program target of `command` nodes and tools: a checked command line run in its own
//! process group with the input on stdin, stdout fed to a sink as it comes, the end of stderr
//! kept for errors, and the whole group killed when the exchange ends or is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::failure::{Failure, FailureKind};

/// How much of a program's stderr is kept for error messages: its end.
const STDERR_TAIL_BYTES: usize = 4096;

/// A program with arguments, extra environment variables, and the directory it runs in.
pub(in crate::engine::toml) struct Program {
    pub(super) program: PathBuf,
    args: Vec<String>,
    /// May hold secrets: `Debug` shows only the names.
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Program {
    /// Checks and builds the program `command` of `owner`: it runs in `dir`, and a relative
    /// program path with a `/` starts there.
    pub(super) fn new(
        owner: &str,
        command: &[String],
        env: &BTreeMap<String, String>,
        dir: &Path,
    ) -> Result<Self, String> {
        let Some((program, args)) = command.split_first() else {
            return Err(format!(
                "{owner} has an empty command; expected [program, arguments…]"
            ));
        };
        if program.is_empty() {
            return Err(format!("{owner} has a command whose program is empty"));
        }
        if let Some(name) = env
            .keys()
            .find(|name| name.is_empty() || name.contains(['=', '\0']))
        {
            return Err(format!(
                "{owner} has env variable {name:?}; names must be non-empty, without '=' or NUL"
            ));
        }
        let path = Path::new(program);
        let program = if program.contains('/') && path.is_relative() {
            dir.join(path)
        } else {
            path.to_path_buf()
        };
        Ok(Program {
            program,
            args: args.to_vec(),
            env: env.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Runs the program with `input` on its stdin (then closed), feeding stdout to `sink` as it
    /// comes. A failed exit fails with the status and the end of stderr. The child is killed
    /// when the future is dropped (a timeout, a cancelled run) or `sink` refuses more.
    pub(super) async fn run(
        &self,
        input: Bytes,
        sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that stopping it stops what it started too.
            .process_group(0);
        if !self.dir.as_os_str().is_empty() {
            command.current_dir(&self.dir);
        }
        let started = |error: std::io::Error| {
            Failure::new(
                FailureKind::Spawn,
                format!("could not start {}: {error}", self.program.display()),
            )
        };
        let mut child = command.spawn().map_err(started)?;
        let _group = GroupKiller(child.id());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(started(std::io::Error::other("its pipes are missing")));
        };
        let write = async move {
            // A program may exit without reading its input; its exit status tells what matters.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            Ok::<(), Failure>(())
        };
        let mut tail = Vec::new();
        let mut stderr_bytes = 0;
        let read_stderr = async {
            let _ = read_pipe(stderr, |chunk| {
                stderr_bytes += chunk.len();
                tail.extend_from_slice(chunk);
                if tail.len() > 2 * STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
                Ok(())
            })
            .await;
            Ok::<(), Failure>(())
        };
        tokio::try_join!(write, read_pipe(stdout, sink), read_stderr)?;
        let status = child.wait().await.map_err(|error| {
            Failure::new(
                FailureKind::Exit,
                format!("could not be waited for: {error}"),
            )
        })?;
        if status.success() {
            return Ok(());
        }
        // A cut tail starts at its first whole line.
        let cut = stderr_bytes > STDERR_TAIL_BYTES;
        let mut tail = &tail[tail.len().saturating_sub(STDERR_TAIL_BYTES)..];
        if let Some(newline) = tail.iter().position(|byte| *byte == b'\n').filter(|_| cut) {
            tail = &tail[newline + 1..];
        }
        let stderr = String::from_utf8_lossy(tail);
        let stderr = match (stderr.trim(), cut) {
            ("", _) => "stderr was empty".to_owned(),
            (text, false) => format!("stderr: {text}"),
            (text, true) => format!("stderr ends: {text}"),
        };
        Err(Failure::new(
            FailureKind::Exit,
            format!("exited unsuccessfully ({status}); {stderr}"),
        ))
    }
}

/// Kills a program's whole process group when dropped: whatever it started and left behind
/// when it ended, or everything when it is stopped early (a cancelled or rolled-back run, a
/// timeout, output refused). `kill_on_drop` alone would reach only the program, not the
/// processes it started (a shell script's commands, say).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let Some(leader) = self.0.and_then(|pid| i32::try_from(pid).ok()) else {
            return;
        };
        use nix::sys::signal::{killpg, Signal};
        // The group may be gone already; there is nothing to do about a failure here.
        if let Err(error) = killpg(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL) {
            log::debug!("killing process group {leader}: {error}");
        }
    }
}

async fn read_pipe(
    mut pipe: impl AsyncRead + Unpin,
    mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut buffer = vec![0; 8192];
    loop {
        let count = pipe.read(&mut buffer).await.map_err(|error| {
            Failure::new(
                FailureKind::Transport,
                format!("could not read its output: {error}"),
            )
        })?;
        if count == 0 {
            return Ok(());
        }
        sink(&buffer[..count])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_program_paths_start_at_the_graph_directory() {
        let program = |name: &str| {
            Program::new(
                "node 'n'",
                &[name.to_owned()],
                &BTreeMap::new(),
                Path::new("/graphs"),
            )
            .unwrap()
            .program
        };
        assert_eq!(
            program("tools/run.sh"),
            PathBuf::from("/graphs/tools/run.sh")
        );
        assert_eq!(program("/bin/sh"), PathBuf::from("/bin/sh"));
        assert_eq!(program("python3"), PathBuf::from("python3"));
    }
}
