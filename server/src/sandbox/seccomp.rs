//! The seccomp filter every sandbox runs under (bubblewrap's `--seccomp`), as
//! classic BPF bytes: defence in depth under the namespaces and the missing
//! capabilities, for kernel interfaces an agent has no use for and that have
//! a record of privilege escalations.
//!
//! Refused with `EPERM`: `ptrace` and cross-process memory access, `bpf`,
//! `perf_event_open`, the keyring, io_uring, `userfaultfd`, every mount and
//! namespace call, module loading, kexec, swap, reboot, accounting, quotas and
//! file handles. `socket(AF_VSOCK)` is refused with `EAFNOSUPPORT` (it reaches
//! the hypervisor on virtual machines). Two calls are refused by argument,
//! for what they would let a sandbox hide from the disk limit's watch:
//! `fcntl(F_SETLEASE)` with `EPERM` (a lease makes the workspace scan's
//! non-blocking open fail, so the file's contents never reach the log), and
//! `fallocate` with `FALLOC_FL_KEEP_SIZE` with `EOPNOTSUPP` (it allocates
//! blocks without growing the file, past `RLIMIT_FSIZE`; programs fall back
//! to writing, which the rlimit bounds). A call from another ABI (i386 through
//! `int 0x80`, or x32) is refused whatever its number, since the numbers above
//! are x86-64 ones. Everything else is allowed.
//!
//! Only x86-64 has a table; elsewhere [`program`] returns `None` and the
//! sandbox refuses to start rather than run without the filter.

/// `EPERM`, the errno of refused calls.
const EPERM: u32 = 1;
/// `EAFNOSUPPORT`, the errno of refused socket families.
const EAFNOSUPPORT: u32 = 97;
/// `EOPNOTSUPP`, the errno of refused `fallocate` modes.
const EOPNOTSUPP: u32 = 95;

// Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0: u32 = 16;
/// The low 32 bits of the second argument (x86-64 is little-endian); both
/// arguments checked by it are `int`s, whose high bits the kernel ignores.
const DATA_ARG1: u32 = 24;

#[cfg(target_arch = "x86_64")]
mod table {
    pub(super) const AUDIT_ARCH: u32 = 0xc000_003e;
    /// x32 system calls have this bit set.
    pub(super) const X32_BIT: u32 = 0x4000_0000;
    pub(super) const SOCKET: u32 = 41;
    pub(super) const AF_VSOCK: u32 = 40;
    pub(super) const FCNTL: u32 = 72;
    pub(super) const F_SETLEASE: u32 = 1024;
    pub(super) const FALLOCATE: u32 = 285;
    pub(super) const FALLOC_FL_KEEP_SIZE: u32 = 1;
    /// (number, name) of every refused call.
    pub(super) const DENIED: &[(u32, &str)] = &[
        (101, "ptrace"),
        (310, "process_vm_readv"),
        (311, "process_vm_writev"),
        (321, "bpf"),
        (298, "perf_event_open"),
        (248, "add_key"),
        (249, "request_key"),
        (250, "keyctl"),
        (425, "io_uring_setup"),
        (426, "io_uring_enter"),
        (427, "io_uring_register"),
        (323, "userfaultfd"),
        (165, "mount"),
        (166, "umount2"),
        (155, "pivot_root"),
        (428, "open_tree"),
        (429, "move_mount"),
        (430, "fsopen"),
        (431, "fsconfig"),
        (432, "fsmount"),
        (433, "fspick"),
        (442, "mount_setattr"),
        (272, "unshare"),
        (308, "setns"),
        (175, "init_module"),
        (313, "finit_module"),
        (176, "delete_module"),
        (246, "kexec_load"),
        (320, "kexec_file_load"),
        (167, "swapon"),
        (168, "swapoff"),
        (169, "reboot"),
        (163, "acct"),
        (179, "quotactl"),
        (303, "name_to_handle_at"),
        (304, "open_by_handle_at"),
        (161, "chroot"),
        (139, "sysfs"),
        (134, "uselib"),
        (156, "_sysctl"),
    ];
}

/// The names of the refused system calls (for documentation and tests).
pub fn denied_names() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        table::DENIED.iter().map(|(_, name)| *name).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// The filter as the bytes of a `struct sock_filter` array, or `None` on an
/// architecture without a table.
pub fn program() -> Option<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        use table::*;
        let mut insns: Vec<(u16, u8, u8, u32)> = vec![
            (BPF_LD_W_ABS, 0, 0, DATA_ARCH),
            (BPF_JEQ_K, 1, 0, AUDIT_ARCH),
            (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
            (BPF_LD_W_ABS, 0, 0, DATA_NR),
            (BPF_JGE_K, 0, 1, X32_BIT),
            (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        ];
        for (nr, _) in DENIED {
            insns.push((BPF_JEQ_K, 0, 1, *nr));
            insns.push((BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM));
        }
        // Calls refused by one argument: each block is entered with the
        // call's number loaded and falls through to the next if it is not its
        // call.
        let by_argument = [
            (SOCKET, DATA_ARG0, BPF_JEQ_K, AF_VSOCK, EAFNOSUPPORT),
            (FCNTL, DATA_ARG1, BPF_JEQ_K, F_SETLEASE, EPERM),
            (FALLOCATE, DATA_ARG1, BPF_JSET_K, FALLOC_FL_KEEP_SIZE, EOPNOTSUPP),
        ];
        for (nr, arg, test, value, errno) in by_argument {
            insns.extend([
                (BPF_LD_W_ABS, 0, 0, DATA_NR),
                (BPF_JEQ_K, 0, 4, nr),
                (BPF_LD_W_ABS, 0, 0, arg),
                (test, 0, 1, value),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            ]);
        }
        insns.push((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
        let mut bytes = Vec::with_capacity(insns.len() * 8);
        for (code, jt, jf, k) in insns {
            bytes.extend_from_slice(&code.to_le_bytes());
            bytes.push(jt);
            bytes.push(jf);
            bytes.extend_from_slice(&k.to_le_bytes());
        }
        Some(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the instructions the filter uses.
    fn run(program: &[u8], arch: u32, nr: u32, arg0: u32) -> u32 {
        run_args(program, arch, nr, [arg0, 0])
    }

    fn run_args(program: &[u8], arch: u32, nr: u32, [arg0, arg1]: [u32; 2]) -> u32 {
        let insns: Vec<(u16, u8, u8, u32)> = program
            .chunks(8)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]), c[2], c[3], u32::from_le_bytes([c[4], c[5], c[6], c[7]])))
            .collect();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = insns[pc];
            pc += 1;
            match code {
                BPF_LD_W_ABS => {
                    acc = match k {
                        DATA_NR => nr,
                        DATA_ARCH => arch,
                        DATA_ARG0 => arg0,
                        DATA_ARG1 => arg1,
                        other => panic!("load of offset {other}"),
                    }
                }
                BPF_JEQ_K => pc += usize::from(if acc == k { jt } else { jf }),
                BPF_JGE_K => pc += usize::from(if acc >= k { jt } else { jf }),
                BPF_JSET_K => pc += usize::from(if acc & k != 0 { jt } else { jf }),
                BPF_RET_K => return k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn refuses_the_listed_calls_and_allows_the_rest() {
        let program = program().unwrap();
        let arch = table::AUDIT_ARCH;
        for (nr, name) in table::DENIED {
            assert_eq!(run(&program, arch, *nr, 0), SECCOMP_RET_ERRNO | EPERM, "{name}");
        }
        for allowed in [0u32, 1, 2, 56, 57, 59, 231, 435] {
            assert_eq!(run(&program, arch, allowed, 0), SECCOMP_RET_ALLOW, "syscall {allowed}");
        }
        assert_eq!(run(&program, arch, table::SOCKET, 2), SECCOMP_RET_ALLOW, "AF_INET");
        assert_eq!(run(&program, arch, table::SOCKET, 40), SECCOMP_RET_ERRNO | EAFNOSUPPORT, "AF_VSOCK");
        // fcntl: everything but taking a lease (F_SETFL 4, F_SETLK 6, F_GETLEASE 1025).
        for cmd in [4, 6, 1025] {
            assert_eq!(run_args(&program, arch, table::FCNTL, [3, cmd]), SECCOMP_RET_ALLOW, "fcntl {cmd}");
        }
        assert_eq!(run_args(&program, arch, table::FCNTL, [3, 1024]), SECCOMP_RET_ERRNO | EPERM, "F_SETLEASE");
        // fallocate: plain allocation (mode 0) is allowed, keeping the size
        // (alone, or with punching a hole: 3) is not.
        assert_eq!(run_args(&program, arch, table::FALLOCATE, [3, 0]), SECCOMP_RET_ALLOW, "fallocate 0");
        for mode in [1, 3] {
            let refused = SECCOMP_RET_ERRNO | EOPNOTSUPP;
            assert_eq!(run_args(&program, arch, table::FALLOCATE, [3, mode]), refused, "fallocate mode {mode}");
        }
        assert_eq!(run(&program, 0x4000_0003, 1, 0), SECCOMP_RET_ERRNO | EPERM, "i386 ABI");
        assert_eq!(run(&program, arch, 0x4000_0001, 0), SECCOMP_RET_ERRNO | EPERM, "x32 ABI");
        assert!(program.len() / 8 < 4096, "BPF_MAXINSNS");
    }
}
