//! Child processes the tests start: commands bounded by a timeout ([`run_timeout`], [`cmd`],
//! [`cmd_ok`], [`cmd_ok_retrying`]), background children waited for with a bound
//! ([`wait_child`]), and servers that announce with their first line that they serve
//! ([`Announced`]).

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Output, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Default bound for helper commands (ip, iptables, python senders).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

/// Runs `cmd` with piped output; kills it (and panics) if it runs longer than `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let out_t = spawn_reader(child.stdout.take());
    let err_t = spawn_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{desc} did not finish within {timeout:?}");
            }
            Err(e) => panic!("wait {desc}: {e}"),
        }
    };
    let stdout = out_t.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    let stderr = err_t.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    Output { status, stdout, stderr }
}

/// Runs a program with arguments (bounded by [`CMD_TIMEOUT`]).
pub fn cmd(args: &[&str]) -> Output {
    let (prog, rest) = args.split_first().expect("cmd: empty argv");
    run_timeout(Command::new(prog).args(rest), CMD_TIMEOUT)
}

/// Like [`cmd`] but panics with the command's stderr if it fails.
pub fn cmd_ok(args: &[&str]) -> Output {
    cmd_ok_retrying(args, 1, |_| false)
}

/// Like [`cmd_ok`], but a failure `transient` recognises (a race the command lost against
/// something going away, say) runs the command again, 100 ms later, up to `tries` runs in all;
/// any other failure panics at once.
pub fn cmd_ok_retrying(args: &[&str], tries: usize, transient: impl Fn(&Output) -> bool) -> Output {
    let mut runs = 1;
    let out = loop {
        let out = cmd(args);
        if out.status.success() || runs >= tries || !transient(&out) {
            break out;
        }
        runs += 1;
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "command failed ({}{}): {}\nstdout: {}\nstderr: {}",
        out.status,
        if runs > 1 { format!(", after {runs} tries") } else { String::new() },
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits (bounded) for a background child; kills it on timeout.
pub fn wait_child(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait_with_output().expect("wait_with_output")
}

/// `Vec<String>` argv as `Vec<&str>`.
pub fn argv_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A background process that prints a ready word as its first stdout line once it serves
/// (its later output is drained, so it never blocks on a full pipe). Killed on drop.
pub struct Announced {
    child: Option<Child>,
}

impl Announced {
    /// Starts `argv` through `spawn` (e.g. `|a| ns.spawn(a)` or `|a| pod.spawn(a)`) and waits up
    /// to 10 s for its first stdout line to be `ready`; panics naming `what` (and the process's
    /// stderr) otherwise.
    pub fn start(spawn: impl FnOnce(&[&str]) -> Child, argv: &[&str], ready: &str, what: &str) -> Announced {
        let mut child = spawn(argv);
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("{what}: stdout must be piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if line.trim() != ready {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "{what} did not start (first line {line:?}, want {ready:?}); stderr: {}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default()
            );
        }
        Announced { child: Some(child) }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
