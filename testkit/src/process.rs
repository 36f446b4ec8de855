//! Child processes for tests: a guard that kills its child when dropped, waiting for children
//! with a limit, and the free ports and host files a local cluster needs.

use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// A running child, killed (SIGKILL) and reaped when the guard is dropped unless it has exited:
/// a test that fails half-way leaves no process behind.
///
/// Derefs to the [`Child`] (its id, pipes, `try_wait`, ...).
#[derive(Debug)]
pub struct ChildGuard {
    /// `None` once handed on by [`ChildGuard::wait_with_output`].
    child: Option<Child>,
    /// The program's file name and first argument (`basketflow run`), for messages.
    label: String,
}

impl ChildGuard {
    /// Spawns `command` (it must start).
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let program = Path::new(command.get_program())
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let label = match command.get_args().next() {
            Some(first) => format!("{program} {}", first.to_string_lossy()),
            None => program,
        };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {label}: {e}"));
        ChildGuard {
            child: Some(child),
            label,
        }
    }

    /// The program's file name and first argument, e.g. `basketflow run`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends SIGTERM (asks it to stop); whether the signal was sent.
    pub fn terminate(&self) -> bool {
        Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGKILL, then waits for it to be gone.
    pub fn kill_and_wait(&mut self) {
        self.kill().expect("sending SIGKILL");
        self.wait().expect("waiting for the killed child");
    }

    /// Waits for it to exit, collecting its piped output.
    pub fn wait_with_output(mut self) -> Output {
        self.child
            .take()
            .expect("a child")
            .wait_with_output()
            .expect("waiting for the child")
    }

    /// Waits up to `limit` for it to exit; `None` if it is still running then.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait().expect("polling the child") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.child.as_ref().expect("a child")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("a child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Waits for every child to exit successfully within `limit`; kills the rest (the guards do)
/// and fails if one does not.
pub fn wait_all(mut children: Vec<ChildGuard>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !children.is_empty() {
        children.retain_mut(|c| match c.try_wait().expect("polling a child") {
            Some(status) => {
                assert!(status.success(), "{} exited with {status}", c.label);
                false
            }
            None => true,
        });
        if Instant::now() > deadline {
            let label = children[0].label.clone();
            drop(children);
            panic!("{label} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes every `BASKETFLOW_*` variable of this process from `command`'s environment, so that
/// a developer's environment cannot change what a child answers.
pub fn clear_basketflow_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BASKETFLOW_") {
            command.env_remove(name);
        }
    }
    command
}

/// A free TCP port on loopback (free when asked: bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on loopback")
        .port()
}

/// Writes `dir/hosts`: one `127.0.0.1:<free port>` line per process of an `n`-process
/// cluster; its path.
pub fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("hosts");
    let lines: String = (0..n)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&path, lines).expect("writing the host file");
    path
}
