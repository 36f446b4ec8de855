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

/// A free TCP port on loopback (free when asked: bind it soon), below the kernel's ephemeral
/// range.
///
/// A port from the ephemeral range (what binding port 0 gives) can be taken at any moment by
/// the local end of an outgoing connection; a test that stops a server and starts it again on
/// the same port (the outage tests, a cluster process restarted from its host file) then finds
/// its port in use. Below the range nothing takes a port unless it asks for it by number.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let (low, _) = ephemeral_range();
    // Ports 10000.. up to the range (at least 2,000 of them), drawn from a sequence seeded by
    // the process id and clock so that concurrent test processes draw apart.
    let first = 10_000u32;
    let span = low.saturating_sub(first).max(2_000);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1_000 {
        let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
        let mixed = splitmix(seed ^ draw.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let port = (first + (mixed % u64::from(span)) as u32) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback below the ephemeral range after 1,000 draws");
}

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`), or Linux's
/// default where it cannot be read.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// SplitMix64's finalizer: a well-mixed 64-bit value from any input.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

/// The integer value of `key=` in the last line of a `basketflow` log (logfmt) that contains
/// `what`; `None` when there is no such line or field.
pub fn logged_u64(log: &str, what: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(what))?;
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// The resident memory of process `pid` now, in MiB (0 when it cannot be read).
pub fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_bindable() {
        let (low, high) = ephemeral_range();
        assert!(low <= high);
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for &port in &ports {
            assert!(u32::from(port) >= 10_000, "{port}");
            if low >= 12_000 {
                assert!(
                    u32::from(port) < low,
                    "{port} is in the ephemeral range from {low}"
                );
            }
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }
}
