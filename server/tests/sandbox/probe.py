"""System-call probes for the sandbox isolation tests: `probe.py NAME [ARG]`
exits 0 if the operation succeeded (an escape, inside a sandbox) and 1 if it
was refused. The tests run every probe inside a sandbox (must exit 1) and on
the host as root (the positive control: must exit 0)."""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(*args):
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return libc.syscall(*args)
name = sys.argv[1]
arg = sys.argv[2] if len(sys.argv) > 2 else None
ok = False
if name == "ptrace_attach":
    ok = libc.ptrace(16, int(arg), 0, 0) == 0
    if ok:
        libc.ptrace(17, int(arg), 0, 0)
elif name == "bpf":
    attr = (ctypes.c_uint32 * 30)(1, 4, 4, 1)
    ok = sc(321, 0, ctypes.byref(attr), 120) >= 0
elif name == "perf_event_open":
    attr = (ctypes.c_uint8 * 128)()
    ctypes.c_uint32.from_buffer(attr, 0).value = 1
    ctypes.c_uint32.from_buffer(attr, 4).value = 128
    ok = sc(298, ctypes.byref(attr), 0, -1, -1, 0) >= 0
elif name == "keyctl":
    ok = sc(250, 0, -3, 0) >= 0
elif name == "add_key":
    ok = sc(248, b"user", b"logbook-probe", b"x", 1, -2) >= 0
elif name == "io_uring_setup":
    params = (ctypes.c_uint8 * 120)()
    ok = sc(425, 1, ctypes.byref(params)) >= 0
elif name == "userfaultfd":
    ok = sc(323, 0) >= 0
elif name == "process_vm_readv":
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
    remote = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
    # EFAULT means the permission check passed (the address is ours, not the target's).
    ok = sc(310, int(arg), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0 or ctypes.get_errno() == 14
elif name == "setns":
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    ok = sc(308, fd, 0) == 0
elif name == "unshare_user":
    ok = sc(272, 0x10000000) == 0
elif name == "unshare_mount":
    ok = sc(272, 0x00020000) == 0
elif name == "vsock":
    try:
        socket.socket(40, socket.SOCK_STREAM); ok = True
    except OSError: ok = False
elif name == "raw_socket":
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); ok = True
    except OSError: ok = False
elif name == "packet_socket":
    try:
        socket.socket(17, socket.SOCK_RAW, 0); ok = True
    except OSError: ok = False
elif name == "abstract":
    try:
        s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect("\0" + arg); ok = True
    except OSError: ok = False
elif name == "mount_tmpfs":
    os.makedirs("/tmp/probe-mnt", exist_ok=True)
    ok = libc.mount(b"none", b"/tmp/probe-mnt", b"tmpfs", 0, None) == 0
elif name == "chroot":
    ok = libc.chroot(b"/") == 0
elif name == "open_by_handle_at":
    ok = sc(304, -100, 0, 0) >= 0 or ctypes.get_errno() not in (1, 38)
elif name == "tcp":
    host, port = arg.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=3); ok = True
    except OSError: ok = False
else:
    print("unknown probe", name); sys.exit(2)
sys.exit(0 if ok else 1)
