//! Isolation probes (reliability goals G-X1, G-X4, G-X6), run as the agent
//! would run them: through the bash tool of an attacker session.
//!
//! Every probe is an attack that exits 0 only if it worked, and a positive
//! control: the same operation done outside the attacker's sandbox (on the
//! host as root, or in the victim session's own sandbox for cross-session
//! probes), which must succeed, so a probe that cannot detect anything fails
//! the test instead of passing. Network probes also count what reaches
//! loopback listeners on the host (TCP on 127.0.0.1 and ::1, UDP): after the
//! attacks, the counts must equal the connections the controls made.
//!
//! This VM kind does not let even root read the real `/proc/1/environ`, so
//! a canary process started by the test (its environment holds a canary) is
//! the host process whose environment the sandbox must not read.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use logbook_core::SessionId;
use logbook_server::api::environments::Environment;
use logbook_server::sandbox::layout::SANDBOX_UID;

use crate::harness::{Sbx, host, install_probe, limited, session, text, unrestricted};

/// Where a probe's control runs.
enum Control {
    /// `sh -c` on the host, as root.
    Host(String),
    /// In the victim session's sandbox.
    Victim(String),
}

struct Probe {
    name: &'static str,
    attack: String,
    control: Control,
    /// The listener the control connects to (tcp, tcp6, udp), if any.
    reaches: Option<usize>,
}

fn probe(name: &'static str, attack: impl Into<String>, control: Control) -> Probe {
    Probe { name, attack: attack.into(), control, reaches: None }
}

const TCP4: usize = 0;
const TCP6: usize = 1;
const UDP: usize = 2;

fn net(name: &'static str, attack: impl Into<String>, control: Control, listener: usize) -> Probe {
    Probe { name, attack: attack.into(), control, reaches: Some(listener) }
}

fn on_host(script: impl Into<String>) -> Control {
    Control::Host(script.into())
}

fn in_victim(script: impl Into<String>) -> Control {
    Control::Victim(script.into())
}

/// A loopback HTTP responder that counts connections.
struct Listener {
    port: u16,
    n_connections: Arc<AtomicUsize>,
}

fn http_listener(addr: &str, body: &'static str) -> Listener {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    let n_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n_connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Listener { port, n_connections }
}

fn udp_listener() -> Listener {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let n_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n_connections);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while socket.recv_from(&mut buf).is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Listener { port, n_connections }
}

/// A host process killed (and reaped) when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BODY: &str = "logbook-probe-listener-reached";
const CANARY: &str = "logbook-canary-7f3e9a";

struct Setup {
    sbx: Sbx,
    attacker: SessionId,
    victim: SessionId,
    env: Environment,
    probes: Vec<Probe>,
    tcp: Listener,
    tcp6: Listener,
    udp: Listener,
    /// Controls that connect to each listener.
    expected: [usize; 3],
    _canary_process: KillOnDrop,
    _abstract: UnixListener,
}

fn build(env: Environment) -> Setup {
    let sbx = Sbx::new();
    let (attacker, victim) = (session(), session());
    let (a, v) = (sbx.paths(attacker), sbx.paths(victim));
    install_probe(&a);
    v.create().unwrap();
    std::fs::write(v.workspace().join("canary.txt"), CANARY).unwrap();
    std::fs::write(v.outputs().join("canary.txt"), CANARY).unwrap();
    std::fs::write(sbx.data.join("canary.txt"), CANARY).unwrap();
    let canary_process = KillOnDrop(
        std::process::Command::new("/bin/sleep")
            .arg("600")
            .env("LOGBOOK_PROBE_CANARY", CANARY)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = canary_process.0.id();
    let abstract_name = format!("logbook-probe-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    };
    let tcp = http_listener("127.0.0.1:0", BODY);
    let tcp6 = http_listener("[::1]:0", BODY);
    let udp = udp_listener();
    let (port, port6, udp_port) = (tcp.port, tcp6.port, udp.port);
    let probe_py = a.workspace().join("probe.py");
    let py = format!("/usr/bin/python3 {}", probe_py.display());
    let data = sbx.data.display().to_string();
    let (a_ws, a_up, a_run) = (a.workspace(), a.uploads(), a.run());
    let (a_ws, a_up, a_run) = (a_ws.display(), a_up.display(), a_run.display());
    let (v_ws, v_out, v_run) = (v.workspace(), v.outputs(), v.run());
    let (v_ws, v_out, v_run) = (v_ws.display(), v_out.display(), v_run.display());
    let exe = std::env::current_exe().unwrap();
    let exe = exe.display();
    let forwarder = env!("CARGO_BIN_EXE_logbook");
    // Through the proxy even for loopback names (NO_PROXY lists them for
    // servers inside the sandbox).
    let fetch = |url: String| format!("curl -sf --noproxy '' --max-time 10 {url} | grep -q {BODY}");
    let fetch_direct = |url: String| format!("curl -sf --noproxy '*' --max-time 10 {url} | grep -q {BODY}");
    let probes = vec![
        // Files of the host and of other sessions.
        probe("read /etc/shadow", "cat /etc/shadow", on_host("cat /etc/shadow")),
        probe("read /etc/gshadow", "cat /etc/gshadow", on_host("cat /etc/gshadow")),
        probe("read the data dir", format!("cat {data}/canary.txt"), on_host(format!("cat {data}/canary.txt"))),
        probe("list the data dir", format!("ls {data}"), on_host(format!("ls {data}"))),
        probe(
            "list the sandbox system dir",
            format!("ls {data}/sandboxes/.system"),
            on_host(format!("ls {data}/sandboxes/.system")),
        ),
        probe(
            "read another session's workspace",
            format!("cat {v_ws}/canary.txt"),
            on_host(format!("cat {v_ws}/canary.txt")),
        ),
        probe(
            "read another session's outputs",
            format!("cat {v_out}/canary.txt"),
            on_host(format!("cat {v_out}/canary.txt")),
        ),
        probe(
            "find another session's files",
            "find / -name canary.txt -not -path '/proc/*' 2>/dev/null | grep -q .",
            on_host(format!("find {data} -name canary.txt | grep -q .")),
        ),
        probe(
            "a symlink to another session",
            format!("ln -sfn {v_ws}/canary.txt /workspace/victim-link && grep -q {CANARY} /workspace/victim-link"),
            on_host(format!("grep -q {CANARY} {a_ws}/victim-link")),
        ),
        probe(
            "a symlink to the root",
            "ln -sfn / /workspace/rootlink && cat /workspace/rootlink/etc/shadow",
            on_host(format!("cat {a_ws}/rootlink/etc/shadow")),
        ),
        probe(
            "a hard link to /etc/shadow",
            "ln /etc/shadow /workspace/shadow-link",
            on_host(format!("ln /etc/shadow {data}/shadow-link && rm {data}/shadow-link")),
        ),
        probe(
            "the session directory above /workspace",
            "ls -a /workspace/.. | grep -qx uploads",
            on_host(format!("ls -a {a_ws}/.. | grep -qx uploads")),
        ),
        probe("read /root", "ls /root", on_host("ls /root")),
        probe("see the test binary", format!("test -e {exe}"), on_host(format!("test -e {exe}"))),
        probe(
            "read a process's root: /proc/*/root/etc/shadow",
            "cat /proc/[0-9]*/root/etc/shadow",
            on_host(format!("cat /proc/{pid}/root/etc/shadow")),
        ),
        probe(
            "read a host process's environment",
            format!("grep -qa {CANARY} /proc/{pid}/environ"),
            on_host(format!("grep -qa {CANARY} /proc/{pid}/environ")),
        ),
        probe(
            "find the canary in any environment",
            format!("cat /proc/[0-9]*/environ 2>/dev/null | grep -qa {CANARY}"),
            on_host(format!("cat /proc/[0-9]*/environ 2>/dev/null | grep -qa {CANARY}")),
        ),
        probe(
            "/proc/1/environ holds the host's canary",
            format!("grep -qa {CANARY} /proc/1/environ"),
            on_host(format!("grep -qa {CANARY} /proc/{pid}/environ")),
        ),
        probe(
            "see a host process",
            format!("test -e /proc/{pid}/status"),
            on_host(format!("test -e /proc/{pid}/status")),
        ),
        probe("signal a host process", format!("kill -0 {pid}"), on_host(format!("kill -0 {pid}"))),
        probe("list /sys/fs/cgroup", "ls /sys/fs/cgroup", on_host("ls /sys/fs/cgroup")),
        probe(
            "join the root cgroup",
            "echo $$ > /sys/fs/cgroup/pids/cgroup.procs",
            on_host("test -w /sys/fs/cgroup/pids/cgroup.procs"),
        ),
        probe(
            "see block devices",
            "ls /dev | grep -qE '^(vd|sd|nvme|xvd)'",
            on_host("ls /dev | grep -qE '^(vd|sd|nvme|xvd)'"),
        ),
        probe("/dev/kmsg exists", "test -e /dev/kmsg", on_host("test -e /dev/kmsg")),
        probe("/dev/kvm exists", "test -e /dev/kvm", on_host("test -e /dev/kvm")),
        probe("/dev/loop-control exists", "test -e /dev/loop-control", on_host("test -e /dev/loop-control")),
        probe("dmesg", "dmesg", on_host("dmesg > /dev/null")),
        probe(
            "another session's proxy socket",
            format!("test -S {v_run}/proxy.sock"),
            on_host(format!("test -S {v_run}/proxy.sock")),
        ),
        probe(
            "a host abstract unix socket",
            format!("python3 probe.py abstract {abstract_name}"),
            on_host(format!("{py} abstract {abstract_name}")),
        ),
        // Writes outside the workspace.
        probe("write /usr", "touch /usr/.logbook-probe", on_host("test -w /usr")),
        probe("write /etc", "touch /etc/.logbook-probe", on_host("test -w /etc")),
        probe("write /etc/passwd", "echo x >> /etc/passwd", on_host("test -w /etc/passwd")),
        probe("write /", "touch /.logbook-probe", on_host("test -w /")),
        probe("write a sysctl", "echo 1 > /proc/sys/vm/drop_caches", on_host("test -w /proc/sys/vm/drop_caches")),
        probe("write the uploads", "touch /mnt/session/uploads/x", on_host(format!("touch {a_up}/x && rm {a_up}/x"))),
        probe("write the run directory", "touch /run/logbook/x", on_host(format!("touch {a_run}/x && rm {a_run}/x"))),
        probe("replace the proxy socket", "rm -f /run/logbook/proxy.sock", on_host(format!("test -w {a_run}"))),
        probe("write the forwarder binary", "echo > /opt/logbook/bin/logbook", on_host(format!("test -w {forwarder}"))),
        probe(
            "write through /proc/*/root",
            "for r in /proc/[0-9]*/root; do touch $r/usr/.logbook-probe && exit 0; done; exit 1",
            on_host(format!("test -w /proc/{pid}/root/usr")),
        ),
        probe(
            "write another session's workspace",
            format!("touch {v_ws}/pwned"),
            on_host(format!("touch {v_ws}/control && rm {v_ws}/control")),
        ),
        // Identity and privileges.
        probe(
            "effective capabilities",
            r"grep -Eq '^CapEff:\s*0*[1-9a-f]' /proc/self/status",
            on_host(r"grep -Eq '^CapEff:\s*0*[1-9a-f]' /proc/self/status"),
        ),
        probe(
            "permitted capabilities",
            r"grep -Eq '^CapPrm:\s*0*[1-9a-f]' /proc/self/status",
            on_host(r"grep -Eq '^CapPrm:\s*0*[1-9a-f]' /proc/self/status"),
        ),
        probe(
            "bounding capabilities",
            r"grep -Eq '^CapBnd:\s*0*[1-9a-f]' /proc/self/status",
            on_host(r"grep -Eq '^CapBnd:\s*0*[1-9a-f]' /proc/self/status"),
        ),
        probe(
            "no_new_privs off",
            r"grep -Eq '^NoNewPrivs:\s*0' /proc/self/status",
            on_host(r"grep -Eq '^NoNewPrivs:\s*0' /proc/self/status"),
        ),
        probe("uid 0", r#"[ "$(id -u)" = 0 ]"#, on_host(r#"[ "$(id -u)" = 0 ]"#)),
        probe("gid 0", r#"[ "$(id -g)" = 0 ]"#, on_host(r#"[ "$(id -g)" = 0 ]"#)),
        probe("su to root (setuid)", "su -c true root", on_host("su -c true root")),
        probe("chroot", "python3 probe.py chroot", on_host(format!("{py} chroot"))),
        probe("mount(2)", "python3 probe.py mount_tmpfs", on_host(format!("unshare -m {py} mount_tmpfs"))),
        probe(
            "mount a tmpfs",
            "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
            on_host("unshare -m sh -c 'mount -t tmpfs none /mnt'"),
        ),
        probe("unshare -U", "unshare -U true", on_host("unshare -U true")),
        probe("unshare -r", "unshare -r true", on_host("unshare -r true")),
        probe("unshare -m", "unshare -m true", on_host("unshare -m true")),
        probe("unshare -n", "unshare -n true", on_host("unshare -n true")),
        probe("unshare -p", "unshare -p -f true", on_host("unshare -p -f true")),
        probe("unshare(CLONE_NEWUSER)", "python3 probe.py unshare_user", on_host(format!("{py} unshare_user"))),
        probe("setns", "python3 probe.py setns", on_host(format!("{py} setns"))),
        probe("change the hostname", "hostname evil", on_host("unshare -u hostname evil")),
        probe(
            "ptrace pid 1",
            "python3 probe.py ptrace_attach 1",
            on_host(format!("sleep 30 & {py} ptrace_attach $!; r=$?; kill -9 $!; exit $r")),
        ),
        probe(
            "ptrace a child",
            "sleep 30 & python3 probe.py ptrace_attach $!; r=$?; kill -9 $!; exit $r",
            on_host(format!("sleep 30 & {py} ptrace_attach $!; r=$?; kill -9 $!; exit $r")),
        ),
        probe(
            "process_vm_readv",
            "sleep 30 & python3 probe.py process_vm_readv $!; r=$?; kill -9 $!; exit $r",
            on_host(format!("sleep 30 & {py} process_vm_readv $!; r=$?; kill -9 $!; exit $r")),
        ),
        probe("bpf", "python3 probe.py bpf", on_host(format!("{py} bpf"))),
        probe("perf_event_open", "python3 probe.py perf_event_open", on_host(format!("{py} perf_event_open"))),
        probe("keyctl", "python3 probe.py keyctl", on_host(format!("{py} keyctl"))),
        probe("add_key", "python3 probe.py add_key", on_host(format!("{py} add_key"))),
        probe("io_uring_setup", "python3 probe.py io_uring_setup", on_host(format!("{py} io_uring_setup"))),
        probe("userfaultfd", "python3 probe.py userfaultfd", on_host(format!("{py} userfaultfd"))),
        probe("AF_VSOCK socket", "python3 probe.py vsock", on_host(format!("{py} vsock"))),
        probe("raw ICMP socket", "python3 probe.py raw_socket", on_host(format!("{py} raw_socket"))),
        probe("AF_PACKET socket", "python3 probe.py packet_socket", on_host(format!("{py} packet_socket"))),
        probe(
            "the server's environment",
            "env | grep -qiE '^(CARGO|RUSTUP|NEXTEST|LOGBOOK|ANTHROPIC)'",
            on_host("env | grep -qiE '^(CARGO|RUSTUP|NEXTEST|LOGBOOK|ANTHROPIC)'"),
        ),
        // Other sessions.
        probe(
            "another session's /tmp",
            format!("grep -q {CANARY} /tmp/canary"),
            in_victim(format!("grep -q {CANARY} /tmp/canary")),
        ),
        probe(
            "another session's /dev/shm",
            format!("grep -q {CANARY} /dev/shm/canary"),
            in_victim(format!("grep -q {CANARY} /dev/shm/canary")),
        ),
        probe("another session's processes", "pgrep -f 'sleep 600'", in_victim("pgrep -f 'sleep 600'")),
        probe("kill another session's processes", "pkill -f 'sleep 600'", in_victim("pgrep -f 'sleep 600'")),
        probe(
            "another session's SysV shared memory",
            r#"[ "$(ipcs -m | grep -c '^0x')" -gt 0 ]"#,
            in_victim(r#"[ "$(ipcs -m | grep -c '^0x')" -gt 0 ]"#),
        ),
        // The network: no way to the host's loopback.
        net(
            "TCP to host loopback",
            format!("python3 probe.py tcp 127.0.0.1:{port}"),
            on_host(format!("{py} tcp 127.0.0.1:{port}")),
            TCP4,
        ),
        net(
            "TCP to host ::1",
            format!("python3 probe.py tcp ::1:{port6}"),
            on_host(format!("{py} tcp ::1:{port6}")),
            TCP6,
        ),
        net(
            "bash /dev/tcp to host loopback",
            format!("echo x > /dev/tcp/127.0.0.1/{port}"),
            on_host(format!("bash -c 'echo x > /dev/tcp/127.0.0.1/{port}'")),
            TCP4,
        ),
        net(
            "curl without the proxy",
            fetch_direct(format!("http://127.0.0.1:{port}/")),
            on_host(fetch_direct(format!("http://127.0.0.1:{port}/"))),
            TCP4,
        ),
        net(
            "curl through the proxy",
            fetch(format!("http://127.0.0.1:{port}/")),
            on_host(fetch_direct(format!("http://127.0.0.1:{port}/"))),
            TCP4,
        ),
        net(
            "CONNECT to loopback",
            fetch(format!("-p http://127.0.0.1:{port}/")),
            on_host(fetch_direct(format!("http://127.0.0.1:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: localhost",
            fetch(format!("http://localhost:{port}/")),
            on_host(fetch_direct(format!("http://localhost:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: decimal IP",
            fetch(format!("http://2130706433:{port}/")),
            on_host(fetch_direct(format!("http://2130706433:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: octal IP",
            fetch(format!("http://0177.0.0.1:{port}/")),
            on_host(fetch_direct(format!("http://0177.0.0.1:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: hex IP",
            fetch(format!("http://0x7f.0.0.1:{port}/")),
            on_host(fetch_direct(format!("http://0x7f.0.0.1:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: short IP",
            fetch(format!("http://127.1:{port}/")),
            on_host(fetch_direct(format!("http://127.1:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: 0.0.0.0",
            fetch(format!("http://0.0.0.0:{port}/")),
            on_host(fetch_direct(format!("http://0.0.0.0:{port}/"))),
            TCP4,
        ),
        net(
            "proxy: IPv4-mapped IPv6",
            fetch(format!("'http://[::ffff:127.0.0.1]:{port}/'")),
            on_host(fetch_direct(format!("'http://[::ffff:127.0.0.1]:{port}/'"))),
            TCP4,
        ),
        net(
            "proxy: ::1",
            fetch(format!("'http://[::1]:{port6}/'")),
            on_host(fetch_direct(format!("'http://[::1]:{port6}/'"))),
            TCP6,
        ),
        net(
            "proxy: Host header to loopback",
            fetch(format!("-H 'Host: 127.0.0.1:{port}' http://pypi.org:{port}/")),
            on_host(fetch_direct(format!("-H 'Host: pypi.org' http://127.0.0.1:{port}/"))),
            TCP4,
        ),
        // A datagram "succeeds" whether or not it arrives: the attack always
        // exits 1, and the listener's count is the test.
        net(
            "UDP to host loopback",
            format!(
                "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('127.0.0.1', {udp_port}))\"; exit 1"
            ),
            on_host(format!(
                "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('127.0.0.1', {udp_port}))\""
            )),
            UDP,
        ),
        probe("resolve names (DNS)", "getent hosts pypi.org", on_host("getent hosts pypi.org")),
    ];
    let expected = [TCP4, TCP6, UDP].map(|idx| probes.iter().filter(|p| p.reaches == Some(idx)).count());
    Setup {
        sbx,
        attacker,
        victim,
        env,
        probes,
        tcp,
        tcp6,
        udp,
        expected,
        _canary_process: canary_process,
        _abstract: abstract_listener,
    }
}

/// Goal: G-X1/G-X4/G-X6 with ≥ 50 probes, zero escapes, zero bytes at the
/// listeners from the sandbox. Method: see the module docs; the attacker's
/// environment is `unrestricted` (the widest egress a sandbox gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_escapes_and_every_control_succeeds() {
    let setup = build(unrestricted());
    run_probes(setup).await;
}

/// The same corpus in `limited` mode, with an allowlist that names loopback
/// (`localhost`) and the package managers: still nothing reaches the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_escapes_in_limited_mode_either() {
    let setup = build(limited(&["localhost", "*.localhost", "pypi.org"], true));
    run_probes(setup).await;
}

async fn run_probes(setup: Setup) {
    let Setup { sbx, attacker, victim, env, probes, tcp, tcp6, udp, expected, .. } = setup;
    assert!(probes.len() >= 50, "only {} probes", probes.len());
    // The victim leaves traces in its own /tmp, /dev/shm, process table and IPC.
    sbx.ok(victim, &env, &format!("echo {CANARY} > /tmp/canary; echo {CANARY} > /dev/shm/canary; ipcmk -M 4096 >/dev/null; (sleep 600 &) ; echo ok"))
        .await;
    let mut escapes = Vec::new();
    let mut broken_controls = Vec::new();
    for probe in &probes {
        let attack = sbx.bash(attacker, &env, &probe.attack).await;
        if !attack.is_error {
            escapes.push(format!("{}: `{}` succeeded: {}", probe.name, probe.attack, text(&attack)));
        }
        match &probe.control {
            Control::Host(script) => {
                let out = host(script);
                if !out.status.success() {
                    broken_controls.push(format!(
                        "{}: host control `{script}` failed: {}{}",
                        probe.name,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Control::Victim(script) => {
                let out = sbx.bash(victim, &env, script).await;
                if out.is_error {
                    broken_controls.push(format!("{}: victim control `{script}` failed: {}", probe.name, text(&out)));
                }
            }
        }
    }
    assert!(escapes.is_empty(), "{} of {} probes escaped:\n{}", escapes.len(), probes.len(), escapes.join("\n"));
    assert!(broken_controls.is_empty(), "controls that do not work:\n{}", broken_controls.join("\n"));
    // Only the controls reached the listeners.
    let counts = [&tcp, &tcp6, &udp].map(|l| l.n_connections.load(Ordering::SeqCst));
    let settled = crate::harness::eventually(std::time::Duration::from_secs(10), || {
        [&tcp, &tcp6, &udp].map(|l| l.n_connections.load(Ordering::SeqCst)) >= expected
    })
    .await;
    assert!(settled, "controls did not all reach the listeners: {counts:?} < {expected:?}");
    let counts = [&tcp, &tcp6, &udp].map(|l| l.n_connections.load(Ordering::SeqCst));
    assert_eq!(counts, expected, "connections at the listeners (tcp, tcp6, udp) beyond the controls'");
}

/// Goal: the sandbox's processes are a real unprivileged host uid with no
/// capabilities, in the jail's own cgroup with its limits, with nothing but
/// the allowlisted environment. Method: read the jail's process tree from the
/// host's /proc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jail_processes_run_as_the_sandbox_uid_on_the_host() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    sbx.ok(s, &env, "sleep 300 & echo started").await;
    let jail = sbx.tools.jail_pid(s).await.unwrap();
    // The jail's process tree, from the host's view.
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse::<u32>().ok());
        parents.insert(pid, (ppid.unwrap_or(0), status));
    }
    let in_jail = |mut pid: u32| loop {
        if pid == jail {
            return true;
        }
        match parents.get(&pid) {
            Some((ppid, _)) if *ppid != 0 => pid = *ppid,
            _ => return false,
        }
    };
    let tree: Vec<&String> = parents.iter().filter(|(pid, _)| in_jail(**pid)).map(|(_, (_, status))| status).collect();
    assert!(tree.len() >= 4, "bwrap, its init, bash and sleep: found {}", tree.len());
    for status in tree {
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
        assert!(uid.split_whitespace().all(|u| u == SANDBOX_UID.to_string()), "{status}");
        let cap = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
        assert_eq!(cap.trim(), "0000000000000000", "{status}");
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{jail}/cgroup")).unwrap();
    let pids_path = cgroup
        .lines()
        .find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == "pids").then(|| path.to_owned())
        })
        .expect("a pids cgroup (this machine kind has cgroup v1)");
    assert!(pids_path.contains("/logbook/"), "{pids_path}");
    let max = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup/pids").join(pids_path.trim_start_matches('/')).join("pids.max"),
    )
    .unwrap();
    assert_eq!(max.trim(), logbook_server::sandbox::cgroup::PIDS_MAX.to_string());
    let env_names = sbx.ok(s, &env, "env | cut -d= -f1 | sort | tr '\\n' ' '").await;
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TERM",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "PWD",
        "SHLVL",
        "OLDPWD",
        "_",
    ];
    for name in env_names.split_whitespace() {
        assert!(allowed.contains(&name), "unexpected variable {name} in the sandbox's environment");
    }
}

/// Goal: the host's package-manager and git configuration is not visible in
/// a sandbox, wherever the host's tools keep it (docs/sandbox.md: never
/// `gitconfig` nor `npmrc`/`pip.conf`, which often hold registry tokens and
/// credential helpers). Tools installed under `/usr` or `/usr/local` read
/// their system configuration below their prefix, which the sandbox gets
/// whole: npm's global `npmrc` is `$PREFIX/etc/npmrc` (`npm config get
/// globalconfig` says `/usr/etc/npmrc` on this machine, where the operator's
/// `npm config set --global` writes tokens), a source-built git's system
/// `gitconfig` is `$PREFIX/etc/gitconfig` (this machine's git is
/// `/usr/local/bin/git`), pip's site configuration `$PREFIX/pip.conf`.
/// Method: every such file the host has must be unreadable in the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_package_manager_configuration_under_usr_is_not_visible() {
    let sbx = Sbx::new();
    let (s, env) = (session(), unrestricted());
    let candidates = [
        "/usr/etc/npmrc",
        "/usr/local/etc/npmrc",
        "/usr/etc/gitconfig",
        "/usr/local/etc/gitconfig",
        "/usr/pip.conf",
        "/usr/local/pip.conf",
    ];
    let mut visible = Vec::new();
    for path in candidates.iter().filter(|path| Path::new(path).is_file()) {
        let outcome = sbx.bash(s, &env, &format!("cat {path}")).await;
        if !outcome.is_error {
            visible.push(*path);
        }
    }
    assert!(visible.is_empty(), "the sandbox reads the host's configuration files {visible:?}");
    // The rest of /usr is still there, /usr/local's programs included (this
    // machine's git is /usr/local/bin/git): hiding rebuilds /usr around the
    // hidden paths. (Which paths are hidden, on a host with or without them:
    // `sandbox::jail::tests::configuration_under_usr_is_hidden_and_everything_else_bound`.)
    for dir in ["/usr/bin", "/usr/lib", "/usr/share", "/usr/local/bin"].iter().filter(|dir| Path::new(dir).is_dir()) {
        let host = std::fs::read_dir(dir).unwrap().count();
        let inside = sbx.ok(s, &env, &format!("ls -A {dir} | wc -l")).await;
        assert_eq!(inside.trim(), host.to_string(), "{dir} in the sandbox");
    }
    assert!(sbx.ok(s, &env, "git --version").await.starts_with("git version"));
}
