//! The traffic the privileged tests make inside their namespaces or pods: TCP and UDP clients,
//! servers and senders ([`Udp`], [`TCP_SEND`], [`TcpSink`], [`tcp_echo_server`], ...), one
//! Python script each, its argv built and its output parsed here, and an iptables rule that
//! loses TCP data deterministically ([`lossy_input_rule`]). The caller runs the argv through its
//! own runner (`Netns::exec_timeout`, a CRI pod's `exec_timeout`, or `spawn` for a client left
//! running), so the traffic stays in the lab.

use std::{
    process::{Child, Output},
    time::Duration,
};

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
def bound(sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if syncnt > 0:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, syncnt)
    s.bind((src, sport))
    s.settimeout(timeout)
    return s
for sport in [int(p) for p in sys.argv[8:]]:
    s = bound(sport)
    t = time.monotonic()
    ms = None
    try:
        # A port used again at once: its last connection may still wait for the ACK of its FIN
        # (FIN_WAIT1, a peer slow to be scheduled), and connect says EADDRNOTAVAIL until then.
        while True:
            try:
                s.connect((dst, dport))
                break
            except OSError as e:
                if e.errno != 99 or time.monotonic() - t > timeout:
                    raise
                s.close()
                time.sleep(0.02)
                s = bound(sport)
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
pub fn udp_queries(
    exec: impl FnOnce(&[&str], Duration) -> Output,
    src: &str,
    dst: &str,
    dport: u16,
    timeout: f64,
    sports: &[u16],
) -> Vec<(u16, String)> {
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

/// A two-way UDP stream from one bound socket: for `seconds`, sends a numbered datagram from
/// `src:sport` to `dst:dport` every `gap` seconds and waits (up to `timeout`) for it to come back
/// (the same bytes from `dst:dport`), one at a time. Prints `SENT ANSWERED`.
pub const UDP_STREAM: &str = r#"
import socket, sys, time
src, sport, dst, dport, seconds, gap, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
s.settimeout(timeout)
sent = answered = 0
end = time.time() + seconds
while time.time() < end:
    q = b"%08d" % sent
    try:
        s.sendto(q, (dst, dport))
        sent += 1
        while time.time() < end + timeout:
            d, peer = s.recvfrom(2048)
            if d == q and peer == (dst, dport):
                answered += 1
                break
    except OSError:
        pass
    time.sleep(gap)
print("%d %d" % (sent, answered), flush=True)
"#;

/// argv of [`UDP_STREAM`] (at most 10 s, a datagram at most every 5 ms), for
/// `Netns::exec_timeout` or `Pod::exec_timeout`; bound it by `seconds + timeout + 15` s.
pub fn udp_stream_argv(src: &str, sport: u16, dst: &str, dport: u16, seconds: f64, gap: f64, timeout: f64) -> Vec<String> {
    assert!(seconds <= 10.0 && gap >= 0.005 && timeout <= 2.0, "bounded traffic only");
    let nums = [sport.to_string(), dport.to_string(), seconds.to_string(), gap.to_string(), timeout.to_string()];
    ["python3", "-c", UDP_STREAM, src, &nums[0], dst, &nums[1], &nums[2], &nums[3], &nums[4]].iter().map(|a| a.to_string()).collect()
}

const UDP_SENDER: &str = r#"
import socket, sys, time
src, sport, dst, dport, count, size, gap = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
p = b"x" * size
n = 0
for i in range(count):
    try:
        s.sendto(p, (dst, dport))
        n += 1
    except OSError:
        pass
    if gap > 0:
        time.sleep(gap)
print(n)
"#;

/// A UDP send job: `count` datagrams of `size` payload bytes from `src:sport` to `dst:dport`,
/// `gap` seconds apart.
#[derive(Clone, Debug)]
pub struct Udp<'a> {
    pub src: &'a str,
    pub sport: u16,
    pub dst: &'a str,
    pub dport: u16,
    pub count: u32,
    pub size: u32,
    pub gap: f64,
}

impl<'a> Udp<'a> {
    pub fn new(src: &'a str, sport: u16, dst: &'a str, dport: u16) -> Self {
        Udp { src, sport, dst, dport, count: 3, size: 100, gap: 0.01 }
    }

    /// argv of the sender, for `Netns::exec_timeout` or `Pod::exec_timeout`.
    pub fn argv(&self) -> Vec<String> {
        vec![
            "python3".into(),
            "-c".into(),
            UDP_SENDER.into(),
            self.src.into(),
            self.sport.to_string(),
            self.dst.into(),
            self.dport.to_string(),
            self.count.to_string(),
            self.size.to_string(),
            self.gap.to_string(),
        ]
    }

    /// Sends from inside `ns` and waits (bounded); returns how many sendto calls succeeded.
    pub fn send(&self, ns: &Netns) -> u32 {
        assert!(self.count <= 200_000, "bounded traffic only");
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = ns.exec_timeout(&argv, Duration::from_secs(60));
        assert!(out.status.success(), "udp sender failed in {}: {}", ns.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// Starts the sender in the background.
    pub fn spawn(&self, ns: &Netns) -> Child {
        assert!(self.count <= 200_000, "bounded traffic only");
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.spawn(&argv)
    }
}

/// Listens on `ip` (IPv4 or IPv6) and every port given after it, prints `listening` once all listen, then
/// serves one connection per port: reads a 16-byte decimal length, then that many bytes, answers
/// `ok <bytes read>`, and waits (bounded) for the client to close first, so the client's socket
/// never sees a FIN before all its data was acknowledged.
pub const TCP_SINK: &str = r#"
import socket, sys, threading
ip, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
listeners = []
for port in ports:
    l = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(8)
    l.settimeout(60)
    listeners.append(l)
def serve(l):
    try:
        c, _ = l.accept()
        c.settimeout(60)
        head = b""
        while len(head) < 16:
            d = c.recv(16 - len(head))
            if not d:
                return
            head += d
        want, got = int(head.decode().strip()), 0
        while got < want:
            d = c.recv(1 << 16)
            if not d:
                break
            got += len(d)
        c.sendall(b"ok %d\n" % got)
        c.recv(1)
        c.close()
    except OSError:
        pass
threads = [threading.Thread(target=serve, args=(l,)) for l in listeners]
for t in threads:
    t.start()
print("listening", flush=True)
for t in threads:
    t.join()
"#;

/// Connects from `src:sport` to `dst:dport` (IPv4 or IPv6), sends a 16-byte length and `bytes` bytes, waits for
/// the sink's `ok N`, closes; prints `ok N SECONDS` or `error ...`. Bounded by `timeout` per
/// socket operation.
pub const TCP_SEND: &str = r#"
import socket, sys, time
src, sport, dst, dport, size, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
s.settimeout(timeout)
t = time.time()
try:
    s.connect((dst, dport))
    s.sendall(b"%15d\n" % size)
    chunk = b"x" * (1 << 16)
    left = size
    while left > 0:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    r = b""
    while not r.endswith(b"\n"):
        d = s.recv(64)
        if not d:
            break
        r += d
    s.close()
    print("%s %.3f" % (r.decode().strip(), time.time() - t))
except OSError as e:
    # socket.timeout is TimeoutError: it also catches the kernel's ETIMEDOUT, which has an errno.
    print("error %d" % e.errno if e.errno else "error timeout")
"#;

/// argv of [`TCP_SEND`], for `Netns::spawn`/`exec_timeout` or `Pod::spawn`/`exec_timeout`.
pub fn tcp_send_argv(src: &str, sport: u16, dst: &str, dport: u16, bytes: u64, timeout: f64) -> Vec<String> {
    assert!(bytes <= 64 << 20, "bounded traffic only");
    vec![
        "python3".into(),
        "-c".into(),
        TCP_SEND.into(),
        src.into(),
        sport.to_string(),
        dst.into(),
        dport.to_string(),
        bytes.to_string(),
        timeout.to_string(),
    ]
}

/// A running [`TCP_SINK`]; killed on drop.
pub struct TcpSink {
    _process: Announced,
}

impl TcpSink {
    /// Starts the sink through `spawn` (e.g. `|a| ns.spawn(a)` or `|a| pod.spawn(a)`) and waits
    /// (up to 10 s) until it prints `listening`; killed on drop.
    pub fn start(spawn: impl FnOnce(&[&str]) -> Child, ip: &str, ports: &[u16]) -> TcpSink {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut argv = vec!["python3", "-c", TCP_SINK, ip];
        argv.extend(ports.iter().map(String::as_str));
        let what = format!("TCP sink on {ip} {ports:?}");
        TcpSink { _process: Announced::start(spawn, &argv, "listening", &what) }
    }
}

/// argv of an iptables-legacy rule (`-A INPUT ...`, for a `Netns::exec_ok` or `Pod::exec_ok`)
/// that sends every `every`-th TCP segment of at least 1000 bytes to `dport` to `target`
/// (`["DROP"]`, or `["NFQUEUE", "--queue-num", "7"]` for a loss no drop reason explains): data
/// segments only, never a SYN, a pure ACK or a FIN, so only the sender's data is retransmitted,
/// and deterministically (statistic `nth`, not random).
pub fn lossy_input_rule(dport: u16, every: u32, target: &[&str]) -> Vec<String> {
    let (dport, every) = (dport.to_string(), every.to_string());
    let rule = [
        "iptables-legacy",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &dport,
        "-m",
        "length",
        "--length",
        "1000:65535",
        "-m",
        "statistic",
        "--mode",
        "nth",
        "--every",
        &every,
        "--packet",
        "0",
        "-j",
    ];
    rule.iter().chain(target).map(|s| s.to_string()).collect()
}

/// Answers every TCP connection on `ip:port` with an echo of what it receives, each connection
/// in its own thread (10 s idle timeout), for at most `life` seconds; prints `listening` first.
pub const TCP_ECHO_SERVER: &str = r#"
import socket, sys, threading, time
ip, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((ip, port))
l.listen(64)
l.settimeout(0.5)
def serve(c):
    c.settimeout(10)
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
print("listening", flush=True)
end = time.time() + life
while time.time() < end:
    try:
        c, _ = l.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A running [`TCP_ECHO_SERVER`] on `ip:port` for at most `life_s` seconds, started with
/// `spawn` (a namespace's or a pod's); killed on drop.
pub fn tcp_echo_server(spawn: impl FnOnce(&[&str]) -> Child, ip: &str, port: u16, life_s: u32) -> Announced {
    let (port, life) = (port.to_string(), life_s.to_string());
    let what = format!("TCP echo server on {ip}:{port}");
    Announced::start(spawn, &["python3", "-c", TCP_ECHO_SERVER, ip, &port, &life], "listening", &what)
}
