//! The TCP and UDP clients (and the UDP server) the privileged tests run inside their
//! namespaces or pods: one Python script each, its argv built and its output parsed here. The
//! caller runs the argv through its own runner (`Netns::exec_timeout`, a CRI pod's
//! `exec_timeout`, or `spawn` for a client left running), so the traffic stays in the lab.

use std::process::{Child, Output};
use std::time::Duration;

use crate::{Announced, Netns};

/// One TCP connection per source port, one after the other, from `src` to `dst:dport`: set
/// `TCP_SYNCNT` (0: the kernel's default), connect within `timeout` seconds, then `msgs` times
/// send `ping I\n` and wait for its echo; once connected, wait `hold` seconds before closing.
/// Prints `SPORT RESULT ELAPSED_MS` per connection: RESULT `ok N` (connected, N messages
/// echoed), `timeout` (no errno: the socket timeout) or `error ERRNO` (the kernel's ETIMEDOUT
/// under TCP_SYNCNT is `error 110`); ELAPSED_MS the time connect() took.
pub const TCP_CLIENT: &str = r#"
import socket, sys, time
src, dst, dport, timeout, msgs, syncnt, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
for sport in [int(p) for p in sys.argv[8:]]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if syncnt > 0:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
    s.bind((src, sport))
    s.settimeout(timeout)
    t = time.monotonic()
    ms = None
    try:
        s.connect((dst, dport))
        ms = round((time.monotonic() - t) * 1000)
        n = 0
        for i in range(msgs):
            m = b"ping %d\n" % i
            s.sendall(m)
            got = b""
            while len(got) < len(m):
                d = s.recv(64)
                if not d:
                    break
                got += d
            if got != m:
                break
            n += 1
        r = "ok %d" % n
    except OSError as e:
        # socket.timeout is TimeoutError: it also catches the kernel's ETIMEDOUT, which has an errno.
        r = "error %d" % e.errno if e.errno else "timeout"
    if ms is None:
        ms = round((time.monotonic() - t) * 1000)
    print("%d %s %d" % (sport, r, ms), flush=True)
    if r.startswith("ok"):
        time.sleep(hold)
    s.close()
"#;

/// A [`TCP_CLIENT`] run: from `src` to `dst:dport`, `timeout` seconds per connect (and per
/// echo), `msgs` messages per connection, `syncnt` (0: the kernel's), `hold` seconds.
#[derive(Clone, Debug)]
pub struct TcpClient<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub dport: u16,
    pub timeout: f64,
    pub msgs: u32,
    pub syncnt: u32,
    pub hold: f64,
}

/// One line of [`TCP_CLIENT`]: the source port, `ok N` / `timeout` / `error ERRNO`, and how
/// long connect() took in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpResult {
    pub sport: u16,
    pub result: String,
    pub connect_ms: f64,
}

impl<'a> TcpClient<'a> {
    /// Connect only (no message), the kernel's SYN count, no hold.
    pub fn new(src: &'a str, dst: &'a str, dport: u16, timeout: f64) -> Self {
        TcpClient { src, dst, dport, timeout, msgs: 0, syncnt: 0, hold: 0.0 }
    }

    /// `msgs` echoed messages per connection.
    pub fn msgs(self, msgs: u32) -> Self {
        TcpClient { msgs, ..self }
    }

    /// `TCP_SYNCNT` of each socket.
    pub fn syncnt(self, syncnt: u32) -> Self {
        TcpClient { syncnt, ..self }
    }

    /// Seconds a connected socket stays open.
    pub fn hold(self, hold: f64) -> Self {
        TcpClient { hold, ..self }
    }

    /// argv for `sports`, for `Netns::spawn`/`exec_timeout` or `Pod::spawn`/`exec_timeout`.
    pub fn argv(&self, sports: &[u16]) -> Vec<String> {
        assert!(sports.len() <= 32 && self.msgs <= 20 && self.timeout <= 15.0 && self.hold <= 10.0, "bounded traffic only");
        let (dport, timeout, msgs) = (self.dport.to_string(), self.timeout.to_string(), self.msgs.to_string());
        let (syncnt, hold) = (self.syncnt.to_string(), self.hold.to_string());
        python(TCP_CLIENT, &[self.src, self.dst, &dport, &timeout, &msgs, &syncnt, &hold], sports)
    }

    /// The longest the run over `sports` can take, with 15 s to spare.
    pub fn bound(&self, sports: &[u16]) -> Duration {
        Duration::from_secs_f64(sports.len() as f64 * (self.timeout * f64::from(self.msgs + 2) + self.hold) + 15.0)
    }

    /// Runs the client through `exec` (argv, bound; e.g. `|a, t| ns.exec_timeout(a, t)`) and
    /// returns one result per source port, in order; panics when a port printed none.
    pub fn run(&self, exec: impl FnOnce(&[&str], Duration) -> Output, sports: &[u16]) -> Vec<TcpResult> {
        let argv = self.argv(sports);
        let out = exec(&crate::argv_refs(&argv), self.bound(sports));
        let results = tcp_results(&out);
        assert_eq!(
            results.iter().map(|r| r.sport).collect::<Vec<_>>(),
            sports,
            "TCP client {} -> {}:{} printed {:?}; stderr: {}",
            self.src,
            self.dst,
            self.dport,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        results
    }

    /// [`TcpClient::run`] as (source port, result) pairs.
    pub fn run_each(&self, exec: impl FnOnce(&[&str], Duration) -> Output, sports: &[u16]) -> Vec<(u16, String)> {
        self.run(exec, sports).into_iter().map(|r| (r.sport, r.result)).collect()
    }
}

/// The `SPORT RESULT ELAPSED_MS` lines of [`TCP_CLIENT`].
pub fn tcp_results(out: &Output) -> Vec<TcpResult> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (sport, rest) = l.split_once(' ')?;
            let (result, ms) = rest.rsplit_once(' ')?;
            Some(TcpResult { sport: sport.parse().ok()?, result: result.to_string(), connect_ms: ms.parse().ok()? })
        })
        .collect()
}

/// One TCP connect (no message) from `src:sport` to `dst:dport` inside `ns`, giving up after
/// `timeout`: `ok 0` (connected), `timeout` or `error ERRNO`.
pub fn tcp_connect(ns: &Netns, src: &str, sport: u16, dst: &str, dport: u16, timeout: f64) -> String {
    let c = TcpClient::new(src, dst, dport, timeout);
    c.run(|a, t| ns.exec_timeout(a, t), &[sport]).remove(0).result
}

/// `python3 -c SCRIPT ARGS... SPORTS...`.
fn python(script: &str, args: &[&str], sports: &[u16]) -> Vec<String> {
    let mut v: Vec<String> = ["python3", "-c", script].iter().chain(args).map(|a| a.to_string()).collect();
    v.extend(sports.iter().map(u16::to_string));
    v
}

/// Answers every UDP datagram on `ip:port` with the same bytes (or, with `answer` 0, reads and
/// never answers), for at most `life` seconds; prints `listening` first.
pub const UDP_SERVER: &str = r#"
import socket, sys, time
ip, port, life, answer = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.settimeout(0.5)
print("listening", flush=True)
end = time.time() + life
while time.time() < end:
    try:
        d, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    if answer:
        s.sendto(d, peer)
"#;

/// A running [`UDP_SERVER`] on `ip:port` for at most `life_s` seconds, answering or silent,
/// started with `spawn` (a namespace's or a pod's); killed on drop.
pub fn udp_server(spawn: impl FnOnce(&[&str]) -> Child, ip: &str, port: u16, life_s: u32, answer: bool) -> Announced {
    let (port, life) = (port.to_string(), life_s.to_string());
    let what = format!("UDP server on {ip}:{port} (answers: {answer})");
    Announced::start(spawn, &["python3", "-c", UDP_SERVER, ip, &port, &life, if answer { "1" } else { "0" }], "listening", &what)
}

/// One query per source port, one after the other: send a DNS question for example.com whose
/// ID is the source port to `dst:dport`, wait up to `timeout` for the answer. Prints `SPORT ok`
/// (answered with the same bytes, from `dst:dport`), `SPORT bad ...` (anything else),
/// `SPORT timeout` or `SPORT error ERRNO`.
pub const UDP_CLIENT: &str = r#"
import socket, struct, sys
src, dst, dport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for sport in [int(p) for p in sys.argv[5:]]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, sport))
    s.settimeout(timeout)
    q = struct.pack(">H", sport) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    try:
        s.sendto(q, (dst, dport))
        d, peer = s.recvfrom(2048)
        r = "ok" if d == q and peer == (dst, dport) else "bad %r from %r" % (d, peer)
    except OSError as e:
        r = "error %d" % e.errno if e.errno else "timeout"
    print("%d %s" % (sport, r), flush=True)
    s.close()
"#;

/// argv of [`UDP_CLIENT`], for `Netns::exec_timeout` or `Pod::exec_timeout`.
pub fn udp_client_argv(src: &str, dst: &str, dport: u16, timeout: f64, sports: &[u16]) -> Vec<String> {
    assert!(sports.len() <= 32 && timeout <= 5.0, "bounded traffic only");
    python(UDP_CLIENT, &[src, dst, &dport.to_string(), &timeout.to_string()], sports)
}

/// Runs [`UDP_CLIENT`] through `exec` (argv, bound) and returns (source port, result) per
/// port, in order; panics when a port printed none.
pub fn udp_queries(exec: impl FnOnce(&[&str], Duration) -> Output, src: &str, dst: &str, dport: u16, timeout: f64, sports: &[u16]) -> Vec<(u16, String)> {
    let argv = udp_client_argv(src, dst, dport, timeout, sports);
    let out = exec(&crate::argv_refs(&argv), Duration::from_secs_f64(sports.len() as f64 * timeout + 15.0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let results: Vec<(u16, String)> =
        text.lines().filter_map(|l| l.split_once(' ').and_then(|(p, r)| Some((p.parse().ok()?, r.to_string())))).collect();
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        sports,
        "UDP client {src} -> {dst}:{dport} printed {text:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}
