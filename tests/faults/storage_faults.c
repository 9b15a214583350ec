/*
 * A storage fault injector for the storage-fault tests (tests/tests/storage_faults.rs),
 * loaded into the child process with LD_PRELOAD.
 *
 * It counts the storage operations the process makes on files under one
 * directory (writes, syncs, renames, unlinks, truncations, creations of
 * files, links and directories, removals of directories) and, at the k-th,
 * injects a fault:
 *
 *   crash   a write writes only the first half of its bytes, any other
 *           operation is not made; then the process kills itself with SIGKILL
 *           (a crash at that syscall boundary: the page cache keeps what was
 *           written, as it does when a process dies);
 *   eio     the operation is not made and fails with EIO; when it is a sync
 *   enospc  (fsync, fdatasync, sync_file_range) of a log segment (a file
 *           whose name ends in ".wal"), the writes made to that file since
 *           its last successful sync are first overwritten with zeroes, as if
 *           the kernel had dropped those dirty pages (what a prepared segment
 *           held before they were written). Later operations are made
 *           normally: the process must not take a later successful sync as
 *           proof that the lost writes are durable.
 *   power   a power loss: the operation is not made, every write to a file
 *           under the directory since that file's last successful fsync or
 *           fdatasync is undone (its old bytes written back, its old size
 *           restored: the shim keeps them from before each write), then the
 *           process kills itself with SIGKILL. What the next process reads is
 *           what the disk held. Only file data is undone: creations, renames
 *           and unlinks stay (LazyFS's model of a power loss does the same).
 *   power-dirs  a power loss that also loses the changes of directory
 *           entries not yet durable: every creation (of a file or a
 *           directory), rename and removal made since the last successful
 *           fsync of the directory holding the entry (both directories, for a
 *           rename between two) is undone, newest first, after the file data:
 *           a created entry is removed (a directory with all it holds), a
 *           rename is renamed back and what it replaced restored, a removed
 *           file is restored with its synced contents. That is the POSIX
 *           rule, directory by directory: only a directory's fsync makes its
 *           entries durable (an fsync of a new file does not make its name
 *           durable here, though ext4 does), and a change in one directory
 *           may be lost while a later one in another is kept, which is
 *           stricter than any journaled file system. Changes inside a
 *           directory whose removal is durable are gone with it. Not
 *           modelled: symbolic links, RENAME_EXCHANGE (the shim aborts),
 *           sync(2) and syncfs(2) (not counted as syncs), and two threads
 *           changing one name at once (the order noted may differ from the
 *           kernel's).
 *
 * In the power modes the operations run under a lock the power loss takes, so
 * that none is in flight, made but not yet noted, while the state is undone
 * (reads are not held: a thread reading meanwhile may see a half-undone
 * state, and dies with the rest at the SIGKILL).
 *
 * Environment: LOGBOOK_FAULT_DIR (absolute path; required), LOGBOOK_FAULT_AT
 * (k, counting from 1; 0 or unset only counts), LOGBOOK_FAULT_MODE (crash,
 * eio, enospc, power or power-dirs); LOGBOOK_FAULT_OP and LOGBOOK_FAULT_SUFFIX, when set,
 * count only the operations of that name (e.g. fdatasync) on paths ending so
 * (e.g. .wal). When the fault is injected the shim writes one line to
 * standard output, "fault K OPERATION PATH", before anything else happens, so
 * that the parent sees it in order with the child's own output.
 *
 * This is test code: it aborts on anything it cannot handle rather than
 * guess.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum mode { MODE_CRASH, MODE_EIO, MODE_ENOSPC, MODE_POWER };

static void die(const char *what) __attribute__((noreturn));
static void *real(const char *name);

static char dir[PATH_MAX];
static size_t dir_len;
static unsigned long fault_at;
static enum mode mode;
static unsigned long ops;
static const char *only_op;     /* NULL: every operation */
static const char *only_suffix; /* NULL: every path */
static int lose_entries;        /* power-dirs: unsynced directory entries are lost too */

/* Up to MAX_TRACKED log segments, each with the ranges written since its last sync. */
#define MAX_TRACKED 256
#define MAX_RANGES 4096
struct range { off_t offset; size_t len; };
struct tracked { dev_t dev; ino_t ino; size_t n; struct range ranges[MAX_RANGES]; };
static struct tracked *tracked;
static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;

/* Power mode: what each unsynced write overwrote, oldest first. */
#define MAX_UNDO_BYTES (512UL << 20)
struct undo {
    int fd; /* the file's kept descriptor (see undo_fd): it may be renamed or closed since */
    dev_t dev;
    ino_t ino;
    off_t offset;
    char *old;      /* the bytes the write overwrote (those below the old size) */
    size_t old_len;
    off_t old_size; /* the file's size before the write */
    unsigned long id;
    unsigned long seq; /* when the write returned (PENDING before): a sync drops only what returned before it began */
};
#define PENDING (~0UL)
static struct undo *undos;
static size_t n_undos, cap_undos, undo_bytes;
static unsigned long undo_seq, undo_ids;

/* One descriptor per file written (read and write, whatever the writer's
 * was), kept to the end: undo records share it.
 * It is a new open of the file (through /proc/self/fd), not a dup: a dup
 * would share the writer's open file description, and with it any flock,
 * which would then outlive the writer's close (sled locks its db file). */
static struct { dev_t dev; ino_t ino; int fd; } undo_fds[MAX_TRACKED];
static int n_undo_fds;

/* The descriptor kept for fd's file (tracked_lock held). */
static int undo_fd(int fd, const struct stat *st) {
    for (int i = 0; i < n_undo_fds; i++) {
        if (undo_fds[i].dev == st->st_dev && undo_fds[i].ino == st->st_ino) return undo_fds[i].fd;
    }
    if (n_undo_fds == MAX_TRACKED) die("too many files to undo writes of");
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int (*real_open)(const char *, int, ...) = real("open");
    int copy = real_open(link, O_RDWR | O_CLOEXEC);
    if (copy < 0) die("reopening a written file");
    undo_fds[n_undo_fds].dev = st->st_dev;
    undo_fds[n_undo_fds].ino = st->st_ino;
    undo_fds[n_undo_fds].fd = copy;
    n_undo_fds++;
    return copy;
}

static void die(const char *what) {
    char line[512];
    int n = snprintf(line, sizeof line, "storage_faults: %s\n", what);
    if (n > 0) {
        ssize_t (*real_write)(int, const void *, size_t) = dlsym(RTLD_NEXT, "write");
        if (real_write) real_write(2, line, (size_t)n);
    }
    abort();
}

static void *real(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) die(name);
    return f;
}

__attribute__((constructor)) static void init(void) {
    const char *d = getenv("LOGBOOK_FAULT_DIR");
    if (!d || d[0] != '/' || strlen(d) >= sizeof dir) die("LOGBOOK_FAULT_DIR must be an absolute path");
    strcpy(dir, d);
    dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/') dir[--dir_len] = '\0';
    const char *at = getenv("LOGBOOK_FAULT_AT");
    fault_at = at ? strtoul(at, NULL, 10) : 0;
    const char *m = getenv("LOGBOOK_FAULT_MODE");
    if (!m || strcmp(m, "crash") == 0) mode = MODE_CRASH;
    else if (strcmp(m, "eio") == 0) mode = MODE_EIO;
    else if (strcmp(m, "enospc") == 0) mode = MODE_ENOSPC;
    else if (strcmp(m, "power") == 0) mode = MODE_POWER;
    else if (strcmp(m, "power-dirs") == 0) {
        mode = MODE_POWER;
        lose_entries = 1;
    } else die("LOGBOOK_FAULT_MODE must be crash, eio, enospc, power or power-dirs");
    only_op = getenv("LOGBOOK_FAULT_OP");
    only_suffix = getenv("LOGBOOK_FAULT_SUFFIX");
    tracked = calloc(MAX_TRACKED, sizeof *tracked);
    if (!tracked) die("out of memory");
}

static int under_dir(const char *path) {
    return strncmp(path, dir, dir_len) == 0 && (path[dir_len] == '\0' || path[dir_len] == '/');
}

/* The path an fd names, or "" when it is not a file under the directory. */
static void fd_path(int fd, char *out, size_t size) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, size - 1);
    if (n < 0) n = 0;
    out[n] = '\0';
    if (!under_dir(out)) out[0] = '\0';
}

/* An absolute path for `path` relative to `dirfd`, or "" when it is not under the directory. */
static void at_path(int dirfd, const char *path, char *out, size_t size) {
    out[0] = '\0';
    if (path[0] == '/') {
        snprintf(out, size, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0) return;
            base[n] = '\0';
        }
        int n = snprintf(out, size, "%s/%s", base, path);
        if (n < 0 || (size_t)n >= size) {
            out[0] = '\0';
            return;
        }
    }
    if (!under_dir(out)) out[0] = '\0';
}

static int is_segment(const char *path) {
    size_t n = strlen(path);
    return n > 4 && strcmp(path + n - 4, ".wal") == 0;
}

static struct tracked *find_tracked(int fd, int create) {
    struct stat st;
    if (fstat(fd, &st) != 0) return NULL;
    struct tracked *free_slot = NULL;
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i].ino == 0) {
            if (!free_slot) free_slot = &tracked[i];
        } else if (tracked[i].dev == st.st_dev && tracked[i].ino == st.st_ino) {
            return &tracked[i];
        }
    }
    if (!create) return NULL;
    if (!free_slot) die("too many log segments to track");
    free_slot->dev = st.st_dev;
    free_slot->ino = st.st_ino;
    free_slot->n = 0;
    return free_slot;
}

/* Remembers a write to a log segment, until the segment's next successful sync. */
static void note_write(int fd, const char *path, off_t offset, ssize_t written) {
    if (written <= 0 || !is_segment(path)) return;
    pthread_mutex_lock(&tracked_lock);
    struct tracked *t = find_tracked(fd, 1);
    if (t) {
        if (t->n == MAX_RANGES) die("too many unsynced writes to one log segment");
        t->ranges[t->n].offset = offset;
        t->ranges[t->n].len = (size_t)written;
        t->n++;
    }
    pthread_mutex_unlock(&tracked_lock);
}

static void synced(int fd, const char *path) {
    if (!is_segment(path)) return;
    pthread_mutex_lock(&tracked_lock);
    struct tracked *t = find_tracked(fd, 0);
    if (t) t->n = 0;
    pthread_mutex_unlock(&tracked_lock);
}

/* The kernel dropped the segment's dirty pages: they read as what the disk held, zeroes. */
static void drop_unsynced(int fd, const char *path) {
    if (!is_segment(path)) return;
    ssize_t (*real_pwrite)(int, const void *, size_t, off_t) = real("pwrite64");
    static const char zeroes[65536];
    pthread_mutex_lock(&tracked_lock);
    struct tracked *t = find_tracked(fd, 0);
    if (t) {
        for (size_t i = 0; i < t->n; i++) {
            size_t done = 0;
            while (done < t->ranges[i].len) {
                size_t chunk = t->ranges[i].len - done;
                if (chunk > sizeof zeroes) chunk = sizeof zeroes;
                ssize_t n = real_pwrite(fd, zeroes, chunk, t->ranges[i].offset + (off_t)done);
                if (n <= 0) die("could not drop unsynced writes");
                done += (size_t)n;
            }
        }
        t->n = 0;
    }
    pthread_mutex_unlock(&tracked_lock);
}

/* Power mode: remembers what a change of [offset, offset + len) of fd's file
 * overwrites (and its size), before the change is made. `len` may reach past
 * the end; a truncation passes its new size as `offset` and the rest of the
 * file as `len`. */
static unsigned long note_undo(int fd, const char *path, off_t offset, size_t len) {
    if (mode != MODE_POWER || path[0] == '\0') return PENDING;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return PENDING;
    size_t old_len = 0;
    if (offset < st.st_size) {
        old_len = (size_t)(st.st_size - offset);
        if (old_len > len) old_len = len;
    }
    pthread_mutex_lock(&tracked_lock);
    if (undo_bytes + old_len > MAX_UNDO_BYTES) die("too many unsynced bytes to undo");
    if (n_undos == cap_undos) {
        cap_undos = cap_undos ? cap_undos * 2 : 1024;
        undos = realloc(undos, cap_undos * sizeof *undos);
        if (!undos) die("out of memory");
    }
    struct undo *u = &undos[n_undos];
    u->fd = undo_fd(fd, &st);
    u->dev = st.st_dev;
    u->ino = st.st_ino;
    u->offset = offset;
    u->old_len = old_len;
    u->old_size = st.st_size;
    u->id = undo_ids++;
    u->seq = PENDING;
    unsigned long id = u->id;
    u->old = malloc(old_len ? old_len : 1);
    if (!u->old) die("out of memory");
    size_t done = 0;
    while (done < old_len) {
        ssize_t n = pread(u->fd, u->old + done, old_len - done, offset + (off_t)done);
        if (n < 0) die("could not read what a write overwrites");
        if (n == 0) {
            /* Another thread truncated the file since its size was read: less was there. */
            u->old_len = old_len = done;
            break;
        }
        done += (size_t)n;
    }
    undo_bytes += old_len;
    n_undos++;
    pthread_mutex_unlock(&tracked_lock);
    return id;
}

/* Power mode: the write noted as `id` returned. */
static void stamp_undo(unsigned long id) {
    if (id == PENDING) return;
    pthread_mutex_lock(&tracked_lock);
    for (size_t i = n_undos; i-- > 0;) {
        if (undos[i].id == id) {
            undos[i].seq = undo_seq++;
            break;
        }
    }
    pthread_mutex_unlock(&tracked_lock);
}

/* Power mode: where the undo records stood when a sync began. */
static unsigned long undo_mark(void) {
    pthread_mutex_lock(&tracked_lock);
    unsigned long mark = undo_seq;
    pthread_mutex_unlock(&tracked_lock);
    return mark;
}

/* Power mode: a sync of fd's file that began at `mark` succeeded: the writes
 * noted before it are durable, their undo records go. */
static void forget_undo(int fd, unsigned long mark) {
    if (mode != MODE_POWER) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    pthread_mutex_lock(&tracked_lock);
    size_t kept = 0;
    for (size_t i = 0; i < n_undos; i++) {
        if (undos[i].dev == st.st_dev && undos[i].ino == st.st_ino && undos[i].seq < mark) {
            undo_bytes -= undos[i].old_len;
            free(undos[i].old);
        } else {
            undos[kept++] = undos[i];
        }
    }
    n_undos = kept;
    pthread_mutex_unlock(&tracked_lock);
}

/* Power mode: undoes every unsynced write, newest first, so each file holds
 * what it held at its last sync. The lock stays held: the process dies next. */
static void undo_unsynced(void) {
    ssize_t (*real_pwrite)(int, const void *, size_t, off_t) = real("pwrite64");
    int (*real_ftruncate)(int, off_t) = real("ftruncate64");
    pthread_mutex_lock(&tracked_lock);
    for (size_t i = n_undos; i-- > 0;) {
        struct undo *u = &undos[i];
        size_t done = 0;
        while (done < u->old_len) {
            ssize_t n = real_pwrite(u->fd, u->old + done, u->old_len - done, u->offset + (off_t)done);
            if (n <= 0) die("could not undo a write");
            done += (size_t)n;
        }
        if (real_ftruncate(u->fd, u->old_size) != 0) die("could not restore a size");
    }
}

/* Power modes: each storage operation runs under a read lock, and the power
 * loss takes it to write before it undoes anything, so that no operation is
 * in flight (made but not yet noted) while the state is undone. An operation
 * that starts after the power loss never returns: the SIGKILL comes first. */
static pthread_rwlock_t ops_lock = PTHREAD_RWLOCK_INITIALIZER;
static int power_lost;

static int op_begin(int tracked) {
    if (mode != MODE_POWER || !tracked) return 0;
    pthread_rwlock_rdlock(&ops_lock);
    if (!__atomic_load_n(&power_lost, __ATOMIC_SEQ_CST)) return 1;
    pthread_rwlock_unlock(&ops_lock);
    for (;;) pause();
}

static void op_end(int held) {
    if (held) pthread_rwlock_unlock(&ops_lock);
}

/* Power-dirs mode: the changes of directory entries made since their
 * directory's last successful fsync, oldest first. Each names its directory
 * by a kept O_PATH descriptor (the directory may be renamed since) and the
 * entry by its name in it. */
enum entry_op { ENTRY_CREATED, ENTRY_MKDIR, ENTRY_RENAMED, ENTRY_UNLINKED, ENTRY_RMDIR };
struct place { int dir; dev_t dev; ino_t ino; char name[NAME_MAX + 1]; };
struct entry_change {
    enum entry_op op;
    struct place at;   /* the entry made or removed; a rename's target */
    struct place from; /* a rename's source */
    int gone;          /* the file removed or replaced, kept open to restore it; -1 for none */
    mode_t gone_mode;  /* its mode; 0 when nothing was replaced */
    dev_t gone_dev;    /* a removed directory's identity */
    ino_t gone_ino;
    unsigned long seq; /* when it returned: only a sync that began later makes it durable */
    int unsynced_at, unsynced_from; /* the syncs it still waits for */
};
static struct entry_change *changes;
static size_t n_changes, cap_changes;

/* A kept O_PATH descriptor per directory, found again by identity while that
 * directory exists. */
static struct { dev_t dev; ino_t ino; int fd; } dir_fds[MAX_TRACKED];
static int n_dir_fds;

static char why[PATH_MAX + 128];

/* Splits `path` (relative to dirfd) into its directory, kept open, and its
 * last name; false when it is not under the fault directory or its directory
 * does not exist (tracked_lock held). */
static int place_of(int dirfd, const char *path, struct place *out) {
    char full[PATH_MAX];
    at_path(dirfd, path, full, sizeof full);
    if (full[0] == '\0') return 0;
    size_t n = strlen(full);
    while (n > 1 && full[n - 1] == '/') full[--n] = '\0';
    char *slash = strrchr(full, '/');
    if (!slash || strlen(slash + 1) > NAME_MAX || slash[1] == '\0') die("a path with no last name");
    snprintf(out->name, sizeof out->name, "%s", slash + 1);
    if (slash == full) slash[1] = '\0'; else slash[0] = '\0';
    int (*real_open)(const char *, int, ...) = real("open");
    int fd = real_open(full, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) return 0; /* the change will fail: nothing to note */
    if (fd < 0) die("opening the directory of a changed entry");
    struct stat st;
    if (fstat(fd, &st) != 0) die("stat of a directory");
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    for (int i = 0; i < n_dir_fds; i++) {
        struct stat kept;
        /* A directory since removed may share its inode number with a new one. */
        if (dir_fds[i].dev == st.st_dev && dir_fds[i].ino == st.st_ino && fstat(dir_fds[i].fd, &kept) == 0
            && kept.st_nlink > 0) {
            close(fd);
            out->dir = dir_fds[i].fd;
            return 1;
        }
    }
    if (n_dir_fds == MAX_TRACKED) die("too many directories to undo changes in");
    dir_fds[n_dir_fds].dev = st.st_dev;
    dir_fds[n_dir_fds].ino = st.st_ino;
    dir_fds[n_dir_fds].fd = fd;
    n_dir_fds++;
    out->dir = fd;
    return 1;
}

/* What an entry change is about to remove or replace: the file, kept open
 * for restoring it, or a directory's identity. */
struct gone { int fd; mode_t mode; dev_t dev; ino_t ino; };

static struct gone gone_at(const struct place *at) {
    struct gone g = { -1, 0, 0, 0 };
    struct stat st;
    if (fstatat(at->dir, at->name, &st, AT_SYMLINK_NOFOLLOW) != 0) return g;
    g.mode = st.st_mode;
    g.dev = st.st_dev;
    g.ino = st.st_ino;
    if (S_ISREG(st.st_mode)) {
        int (*real_openat)(int, const char *, int, ...) = real("openat");
        g.fd = real_openat(at->dir, at->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (g.fd < 0) die("keeping a file a change removes");
    } else if (!S_ISDIR(st.st_mode)) {
        die("a change removes something neither a file nor a directory");
    }
    return g;
}

/* Notes a change made (tracked_lock held). */
static void note_change(enum entry_op op, const struct place *at, const struct place *from, struct gone g) {
    if (n_changes == cap_changes) {
        cap_changes = cap_changes ? cap_changes * 2 : 256;
        changes = realloc(changes, cap_changes * sizeof *changes);
        if (!changes) die("out of memory");
    }
    struct entry_change *c = &changes[n_changes++];
    memset(c, 0, sizeof *c);
    c->op = op;
    c->at = *at;
    c->unsynced_at = 1;
    if (from) c->from = *from;
    c->unsynced_from = from && (from->dev != at->dev || from->ino != at->ino);
    c->gone = g.fd;
    c->gone_mode = g.mode;
    c->gone_dev = g.dev;
    c->gone_ino = g.ino;
    c->seq = undo_seq++;
}

/* Power-dirs mode: a sync of directory `fd` that began at `mark` succeeded:
 * the changes of its entries made before it are durable. */
static void forget_changes(int fd, unsigned long mark) {
    if (!lose_entries) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) return;
    pthread_mutex_lock(&tracked_lock);
    size_t kept = 0;
    for (size_t i = 0; i < n_changes; i++) {
        struct entry_change *c = &changes[i];
        if (c->seq < mark && c->at.dev == st.st_dev && c->at.ino == st.st_ino) c->unsynced_at = 0;
        if (c->seq < mark && c->from.dev == st.st_dev && c->from.ino == st.st_ino) c->unsynced_from = 0;
        if (c->unsynced_at || c->unsynced_from) {
            changes[kept++] = *c;
        } else if (c->gone >= 0) {
            close(c->gone);
        }
    }
    n_changes = kept;
    pthread_mutex_unlock(&tracked_lock);
}

static void undo_failed(const char *what, const struct place *at) {
    snprintf(why, sizeof why, "could not undo a change of directory entries: %s %s: %s", what, at->name,
             strerror(errno));
    die(why);
}

/* Gives back a removed or replaced file its entry, with what its kept
 * descriptor reads (its synced contents: its unsynced writes are undone). */
static void restore_file(const struct place *at, int gone, mode_t m) {
    int (*real_openat)(int, const char *, int, ...) = real("openat");
    ssize_t (*real_write)(int, const void *, size_t) = real("write");
    int fd = real_openat(at->dir, at->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, m & 07777);
    if (fd < 0) undo_failed("restoring", at);
    char buf[65536];
    off_t offset = 0;
    for (;;) {
        ssize_t n = pread(gone, buf, sizeof buf, offset);
        if (n < 0) undo_failed("reading what to restore", at);
        if (n == 0) break;
        for (ssize_t done = 0; done < n;) {
            ssize_t w = real_write(fd, buf + done, (size_t)(n - done));
            if (w <= 0) undo_failed("restoring", at);
            done += w;
        }
        offset += n;
    }
    close(fd);
}

/* Whether the directory kept open as `fd` still exists (a removed one has no
 * links): changes inside one whose removal is durable are gone with it. */
static int dir_alive(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_nlink > 0;
}

/* Makes the older changes (before index `i`) that name the directory
 * (dev, ino), since removed, name its replacement at `at` instead. */
static void repoint(size_t i, dev_t dev, ino_t ino, const struct place *at) {
    int (*real_openat)(int, const char *, int, ...) = real("openat");
    int fd = real_openat(at->dir, at->name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) undo_failed("opening the made again", at);
    for (size_t j = 0; j < i; j++) {
        if (changes[j].at.dev == dev && changes[j].at.ino == ino) changes[j].at.dir = fd;
        if (changes[j].from.dev == dev && changes[j].from.ino == ino) changes[j].from.dir = fd;
    }
}

/* Removes the tree `name` in directory `dir`. */
static void remove_tree(int dir, const char *name) {
    int (*real_openat)(int, const char *, int, ...) = real("openat");
    int (*real_unlinkat)(int, const char *, int) = real("unlinkat");
    int fd = real_openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, sizeof why, "could not undo a directory's creation: opening %s: %s", name, strerror(errno));
        die(why);
    }
    DIR *d = fdopendir(fd);
    if (!d) die("listing a directory to remove");
    struct dirent *item;
    while ((item = readdir(d)) != NULL) {
        if (strcmp(item->d_name, ".") == 0 || strcmp(item->d_name, "..") == 0) continue;
        int is_dir = item->d_type == DT_DIR;
        struct stat st;
        if (item->d_type == DT_UNKNOWN && fstatat(fd, item->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            is_dir = S_ISDIR(st.st_mode);
        }
        if (is_dir) remove_tree(fd, item->d_name);
        else if (real_unlinkat(fd, item->d_name, 0) != 0) die("removing a file of a directory whose creation is lost");
    }
    closedir(d);
    if (real_unlinkat(dir, name, AT_REMOVEDIR) != 0) die("removing a directory whose creation is lost");
}

/* Power-dirs mode: undoes every unsynced change of directory entries, newest
 * first, after the file data is undone (tracked_lock held). */
static void undo_changes(void) {
    int (*real_unlinkat)(int, const char *, int) = real("unlinkat");
    int (*real_renameat2)(int, const char *, int, const char *, unsigned int) = real("renameat2");
    int (*real_mkdirat)(int, const char *, mode_t) = real("mkdirat");
    for (size_t i = n_changes; i-- > 0;) {
        struct entry_change *c = &changes[i];
        if (!dir_alive(c->at.dir) || (c->op == ENTRY_RENAMED && !dir_alive(c->from.dir))) continue;
        switch (c->op) {
        case ENTRY_CREATED:
            if (real_unlinkat(c->at.dir, c->at.name, 0) != 0) undo_failed("removing the created", &c->at);
            break;
        case ENTRY_MKDIR:
            remove_tree(c->at.dir, c->at.name);
            break;
        case ENTRY_RENAMED:
            /* Never over an entry made since: that would be a conflict of the model, not a state. */
            if (real_renameat2(c->at.dir, c->at.name, c->from.dir, c->from.name, RENAME_NOREPLACE) != 0)
                undo_failed("renaming back", &c->at);
            if (c->gone >= 0) {
                restore_file(&c->at, c->gone, c->gone_mode);
            } else if (S_ISDIR(c->gone_mode)) {
                if (real_mkdirat(c->at.dir, c->at.name, c->gone_mode & 07777) != 0)
                    undo_failed("making again the directory a rename replaced", &c->at);
                repoint(i, c->gone_dev, c->gone_ino, &c->at);
            }
            break;
        case ENTRY_UNLINKED:
            restore_file(&c->at, c->gone, c->gone_mode);
            break;
        case ENTRY_RMDIR:
            if (real_mkdirat(c->at.dir, c->at.name, c->gone_mode & 07777) != 0)
                undo_failed("making again the removed", &c->at);
            /* The older changes inside it name the removed directory: make them name this one. */
            repoint(i, c->gone_dev, c->gone_ino, &c->at);
            break;
        }
    }
}

/* Counts an operation on `path`; true when this is the one to fault (after reporting it). */
static int fault_here(const char *op, const char *path) {
    if (path[0] == '\0') return 0;
    if (only_op && strcmp(op, only_op) != 0) return 0;
    if (only_suffix) {
        size_t n = strlen(path), m = strlen(only_suffix);
        if (n < m || strcmp(path + n - m, only_suffix) != 0) return 0;
    }
    unsigned long n = __atomic_add_fetch(&ops, 1, __ATOMIC_SEQ_CST);
    if (fault_at == 0 || n != fault_at) return 0;
    char line[PATH_MAX + 128];
    int len = snprintf(line, sizeof line, "fault %lu %s %s\n", n, op, path);
    ssize_t (*real_write)(int, const void *, size_t) = real("write");
    if (len > 0) real_write(1, line, (size_t)len);
    return 1;
}

static int fail_errno(void) {
    return mode == MODE_ENOSPC ? ENOSPC : EIO;
}

static int crashes(void) {
    return mode == MODE_CRASH || mode == MODE_POWER;
}

static void crash(void) {
    if (mode == MODE_POWER) {
        __atomic_store_n(&power_lost, 1, __ATOMIC_SEQ_CST);
        pthread_rwlock_wrlock(&ops_lock);
        undo_unsynced();
        if (lose_entries) undo_changes();
    }
    kill(getpid(), SIGKILL);
    die("still alive after SIGKILL");
}

/* Writes: a crash writes half the bytes first. */

/* Where a write(2) on fd writes: the end of the file when it appends (as
 * the file stands now: `written_at` says where it went once it is made). */
static off_t write_offset(int fd) {
    struct stat st;
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_APPEND) && fstat(fd, &st) == 0) return st.st_size;
    return lseek(fd, 0, SEEK_CUR);
}

/* Where a write(2) of `n` bytes on fd went, once made: right before the
 * file offset it left (appending writers may have raced each other). */
static off_t written_at(int fd, off_t before, ssize_t n) {
    if (n <= 0) return before;
    off_t now = lseek(fd, 0, SEEK_CUR);
    return now >= n ? now - n : before;
}

ssize_t write(int fd, const void *buf, size_t count) {
    ssize_t (*f)(int, const void *, size_t) = real("write");
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (path[0] == '\0') return f(fd, buf, count);
    off_t offset = write_offset(fd);
    if (fault_here("write", path)) {
        if (!crashes()) { errno = fail_errno(); return -1; }
        if (mode == MODE_CRASH) f(fd, buf, count / 2);
        crash();
    }
    int held = op_begin(1);
    unsigned long undo = note_undo(fd, path, offset, count);
    ssize_t n = f(fd, buf, count);
    stamp_undo(undo);
    note_write(fd, path, written_at(fd, offset, n), n);
    op_end(held);
    return n;
}

static ssize_t do_pwrite(const char *name, int fd, const void *buf, size_t count, off_t offset) {
    ssize_t (*f)(int, const void *, size_t, off_t) = real(name);
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here(name, path)) {
        if (!crashes()) { errno = fail_errno(); return -1; }
        if (mode == MODE_CRASH) f(fd, buf, count / 2, offset);
        crash();
    }
    int held = op_begin(path[0] != '\0');
    unsigned long undo = note_undo(fd, path, offset, count);
    ssize_t n = f(fd, buf, count, offset);
    stamp_undo(undo);
    if (path[0] != '\0') note_write(fd, path, offset, n);
    op_end(held);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    return do_pwrite("pwrite", fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    return do_pwrite("pwrite64", fd, buf, count, offset);
}

static size_t iov_len(const struct iovec *iov, int iovcnt) {
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
    return total;
}

/* Vectored writes: the first half of the bytes is written as one buffer. */
static void write_half(int fd, const struct iovec *iov, int iovcnt, off_t offset, int positioned) {
    size_t half = iov_len(iov, iovcnt) / 2;
    char *flat = malloc(half ? half : 1);
    if (!flat) die("out of memory");
    size_t at = 0;
    for (int i = 0; i < iovcnt && at < half; i++) {
        size_t n = iov[i].iov_len < half - at ? iov[i].iov_len : half - at;
        memcpy(flat + at, iov[i].iov_base, n);
        at += n;
    }
    if (positioned) {
        ssize_t (*f)(int, const void *, size_t, off_t) = real("pwrite64");
        f(fd, flat, half, offset);
    } else {
        ssize_t (*f)(int, const void *, size_t) = real("write");
        f(fd, flat, half);
    }
    free(flat);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    ssize_t (*f)(int, const struct iovec *, int) = real("writev");
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (path[0] == '\0') return f(fd, iov, iovcnt);
    off_t offset = write_offset(fd);
    if (fault_here("writev", path)) {
        if (!crashes()) { errno = fail_errno(); return -1; }
        if (mode == MODE_CRASH) write_half(fd, iov, iovcnt, 0, 0);
        crash();
    }
    int held = op_begin(1);
    unsigned long undo = note_undo(fd, path, offset, iov_len(iov, iovcnt));
    ssize_t n = f(fd, iov, iovcnt);
    stamp_undo(undo);
    note_write(fd, path, written_at(fd, offset, n), n);
    op_end(held);
    return n;
}

static ssize_t do_pwritev(const char *name, int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags,
                          int with_flags) {
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here(name, path)) {
        if (!crashes()) { errno = fail_errno(); return -1; }
        if (mode == MODE_CRASH) write_half(fd, iov, iovcnt, offset, 1);
        crash();
    }
    int held = op_begin(path[0] != '\0');
    unsigned long undo = note_undo(fd, path, offset, iov_len(iov, iovcnt));
    ssize_t n;
    if (with_flags) {
        ssize_t (*f)(int, const struct iovec *, int, off_t, int) = real(name);
        n = f(fd, iov, iovcnt, offset, flags);
    } else {
        ssize_t (*f)(int, const struct iovec *, int, off_t) = real(name);
        n = f(fd, iov, iovcnt, offset);
    }
    stamp_undo(undo);
    if (path[0] != '\0') note_write(fd, path, offset, n);
    op_end(held);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    return do_pwritev("pwritev", fd, iov, iovcnt, offset, 0, 0);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    return do_pwritev("pwritev64", fd, iov, iovcnt, offset, 0, 0);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    return do_pwritev("pwritev2", fd, iov, iovcnt, offset, flags, 1);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags) {
    return do_pwritev("pwritev64v2", fd, iov, iovcnt, offset, flags, 1);
}

/* Syncs: a failed one drops a log segment's unsynced writes. */

static int do_sync(const char *name, int fd) {
    int (*f)(int) = real(name);
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here(name, path)) {
        if (crashes()) crash();
        drop_unsynced(fd, path);
        errno = fail_errno();
        return -1;
    }
    /* A directory outside the fault directory may hold a change of entries in it (its creation). */
    struct stat st;
    int dir_sync = lose_entries && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    int held = op_begin(path[0] != '\0' || dir_sync);
    unsigned long mark = undo_mark();
    int r = f(fd);
    if (r == 0 && path[0] != '\0') {
        synced(fd, path);
        forget_undo(fd, mark);
    }
    if (r == 0 && dir_sync) forget_changes(fd, mark);
    op_end(held);
    return r;
}

int fsync(int fd) { return do_sync("fsync", fd); }

int fdatasync(int fd) { return do_sync("fdatasync", fd); }

int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags) {
    int (*f)(int, off_t, off_t, unsigned int) = real("sync_file_range");
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here("sync_file_range", path)) {
        if (crashes()) crash();
        drop_unsynced(fd, path);
        errno = fail_errno();
        return -1;
    }
    /* Not a durability barrier: the tracked writes stay unsynced. */
    return f(fd, offset, nbytes, flags);
}

/* Size changes. */

static int do_ftruncate(const char *name, int fd, off_t len) {
    int (*f)(int, off_t) = real(name);
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here(name, path)) {
        if (crashes()) crash();
        errno = fail_errno();
        return -1;
    }
    int held = op_begin(path[0] != '\0');
    unsigned long undo = note_undo(fd, path, len, (size_t)-1);
    int r = f(fd, len);
    stamp_undo(undo);
    op_end(held);
    return r;
}

int ftruncate(int fd, off_t len) { return do_ftruncate("ftruncate", fd, len); }

int ftruncate64(int fd, off_t len) { return do_ftruncate("ftruncate64", fd, len); }

static int do_fallocate(const char *name, int fd, int fmode, off_t offset, off_t len) {
    int (*f)(int, int, off_t, off_t) = real(name);
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    if (fault_here(name, path)) {
        if (crashes()) crash();
        errno = fail_errno();
        return -1;
    }
    int held = op_begin(path[0] != '\0');
    unsigned long undo = note_undo(fd, path, offset, (size_t)len);
    int r = f(fd, fmode, offset, len);
    stamp_undo(undo);
    op_end(held);
    return r;
}

int fallocate(int fd, int fmode, off_t offset, off_t len) { return do_fallocate("fallocate", fd, fmode, offset, len); }

int fallocate64(int fd, int fmode, off_t offset, off_t len) {
    return do_fallocate("fallocate64", fd, fmode, offset, len);
}

/* Name changes. In power-dirs mode each is noted, with what it removes or
 * replaces, to be undone unless its directory is synced after it. */

/* A change of entries about to be made, in power-dirs mode. */
struct change {
    int noted;
    int under;  /* the entry is under the fault directory */
    int exists; /* an open with O_CREAT of an existing file: no change of entries */
    int held;
    struct place at, from;
    struct gone gone;
};

/* Counts the change of `path`'s entry and, unless it is the one faulted,
 * prepares to note it; 1 when it is faulted (errno set; a crash does not
 * return). `removes`: whether it removes (or replaces) what is at `path`. */
static int change_begin(const char *name, int dirfd, const char *path, int fromfd, const char *from, int removes,
                        struct change *c) {
    char full[PATH_MAX];
    at_path(dirfd, path, full, sizeof full);
    c->noted = 0;
    c->under = full[0] != '\0';
    c->exists = 0;
    c->gone = (struct gone){ -1, 0, 0, 0 };
    if (fault_here(name, full)) {
        if (crashes()) crash();
        errno = fail_errno();
        return 1;
    }
    c->held = op_begin(full[0] != '\0');
    if (lose_entries && full[0] != '\0') {
        pthread_mutex_lock(&tracked_lock);
        c->noted = place_of(dirfd, path, &c->at) && (!from || place_of(fromfd, from, &c->from));
        if (c->noted && removes) c->gone = gone_at(&c->at);
        pthread_mutex_unlock(&tracked_lock);
    }
    return 0;
}

/* The change prepared by change_begin was made (`made`) or not. */
static void change_end(struct change *c, enum entry_op op, int made, int has_from) {
    /* Every change made under the directory is noted (one from or to outside it is not modelled). */
    if (lose_entries && made && c->under && !c->noted && !c->exists) die("a change of entries made but not noted");
    if (c->noted) {
        pthread_mutex_lock(&tracked_lock);
        if (made) note_change(op, &c->at, has_from ? &c->from : NULL, c->gone);
        else if (c->gone.fd >= 0) close(c->gone.fd);
        pthread_mutex_unlock(&tracked_lock);
    }
    op_end(c->held);
}

static int do_rename(const char *name, int fromfd, const char *from, int tofd, const char *to, unsigned int flags) {
    if (lose_entries && (flags & RENAME_EXCHANGE)) die("power-dirs cannot undo RENAME_EXCHANGE");
    struct change c;
    if (change_begin(name, tofd, to, fromfd, from, 1, &c)) return -1;
    int r;
    if (strcmp(name, "rename") == 0) {
        int (*f)(const char *, const char *) = real("rename");
        r = f(from, to);
    } else if (strcmp(name, "renameat") == 0) {
        int (*f)(int, const char *, int, const char *) = real("renameat");
        r = f(fromfd, from, tofd, to);
    } else {
        int (*f)(int, const char *, int, const char *, unsigned int) = real("renameat2");
        r = f(fromfd, from, tofd, to, flags);
    }
    int saved = errno;
    change_end(&c, ENTRY_RENAMED, r == 0, 1);
    errno = saved;
    return r;
}

int rename(const char *from, const char *to) { return do_rename("rename", AT_FDCWD, from, AT_FDCWD, to, 0); }

int renameat(int fromfd, const char *from, int tofd, const char *to) {
    return do_rename("renameat", fromfd, from, tofd, to, 0);
}

int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags) {
    return do_rename("renameat2", fromfd, from, tofd, to, flags);
}

static int do_unlink(const char *name, int dirfd, const char *path, int flags) {
    struct change c;
    if (change_begin(name, dirfd, path, AT_FDCWD, NULL, 1, &c)) return -1;
    int (*f)(int, const char *, int) = real("unlinkat");
    int r = f(dirfd, path, flags);
    int saved = errno;
    change_end(&c, (flags & AT_REMOVEDIR) ? ENTRY_RMDIR : ENTRY_UNLINKED, r == 0, 0);
    errno = saved;
    return r;
}

int unlink(const char *path) { return do_unlink("unlink", AT_FDCWD, path, 0); }

int unlinkat(int dirfd, const char *path, int flags) { return do_unlink("unlinkat", dirfd, path, flags); }

int rmdir(const char *path) { return do_unlink("rmdir", AT_FDCWD, path, AT_REMOVEDIR); }

static int do_link(const char *name, int fromfd, const char *from, int tofd, const char *to, int flags) {
    struct change c;
    if (change_begin(name, tofd, to, AT_FDCWD, NULL, 0, &c)) return -1;
    int (*f)(int, const char *, int, const char *, int) = real("linkat");
    int r = f(fromfd, from, tofd, to, flags);
    int saved = errno;
    change_end(&c, ENTRY_CREATED, r == 0, 0);
    errno = saved;
    return r;
}

int link(const char *from, const char *to) { return do_link("link", AT_FDCWD, from, AT_FDCWD, to, 0); }

int linkat(int fromfd, const char *from, int tofd, const char *to, int flags) {
    return do_link("linkat", fromfd, from, tofd, to, flags);
}

static int do_mkdir(const char *name, int dirfd, const char *path, mode_t m) {
    struct change c;
    if (change_begin(name, dirfd, path, AT_FDCWD, NULL, 0, &c)) return -1;
    int (*f)(int, const char *, mode_t) = real("mkdirat");
    int r = f(dirfd, path, m);
    int saved = errno;
    change_end(&c, ENTRY_MKDIR, r == 0, 0);
    errno = saved;
    return r;
}

int mkdir(const char *path, mode_t m) { return do_mkdir("mkdir", AT_FDCWD, path, m); }

int mkdirat(int dirfd, const char *path, mode_t m) { return do_mkdir("mkdirat", dirfd, path, m); }

/* Creations: an open that may create or truncate a file. */

static int creates(int flags) {
    return (flags & (O_CREAT | O_TRUNC)) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

static int real_open_named(const char *name, int dirfd, const char *path, int flags, mode_t m, int at) {
    if (at) {
        int (*f)(int, const char *, int, ...) = real(name);
        return f(dirfd, path, flags, m);
    }
    int (*f)(const char *, int, ...) = real(name);
    return f(path, flags, m);
}

static int do_openat(const char *name, int dirfd, const char *path, int flags, mode_t m, int at) {
    if (!creates(flags)) return real_open_named(name, dirfd, path, flags, m, at);
    struct change c;
    if (change_begin(name, dirfd, path, AT_FDCWD, NULL, 0, &c)) return -1;
    /* Only a new entry is a change of entries. */
    struct stat st;
    if (c.noted && ((flags & O_CREAT) == 0 || fstatat(c.at.dir, c.at.name, &st, AT_SYMLINK_NOFOLLOW) == 0)) {
        c.noted = 0;
        c.exists = 1;
    }
    int fd = real_open_named(name, dirfd, path, flags, m, at);
    int saved = errno;
    change_end(&c, ENTRY_CREATED, fd >= 0, 0);
    errno = saved;
    return fd;
}

/* The mode argument is there only with O_CREAT or O_TMPFILE. */
static mode_t mode_arg(int flags, va_list ap) {
    int has_mode = (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
    return has_mode ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat("open", AT_FDCWD, path, flags, m, 0);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat("open64", AT_FDCWD, path, flags, m, 0);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat("openat", dirfd, path, flags, m, 1);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = mode_arg(flags, ap);
    va_end(ap);
    return do_openat("openat64", dirfd, path, flags, m, 1);
}
