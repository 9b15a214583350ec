//! Baseline: SQLite in WAL mode with `synchronous=FULL`, every commit durable.
//!
//! One table `events(session, seq, bytes)` with primary key `(session, seq)`,
//! holding each event's JSON. Two ways to append: [`SqliteLog::append`] runs
//! one transaction per event under a mutex around one connection (SQLite has
//! one writer at a time, and a mutex is far cheaper than its busy-retry sleeps
//! across connections); [`SqliteBatched`] hands events to a committer thread
//! that commits up to [`SQLITE_BATCH`] of them per transaction (group commit on
//! top of SQLite). Reads use their own connection, as WAL allows readers
//! beside the writer: the last `n` events of a session come from
//! `ORDER BY seq DESC LIMIT n`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use rusqlite::{Connection, params};

use crate::group::{CommitStats, GroupCommit};

/// Most events per transaction in [`SqliteBatched`].
pub const SQLITE_BATCH: usize = 32;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events (
    session BLOB NOT NULL,
    seq INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (session, seq)
)";

const INSERT: &str = "INSERT INTO events (session, seq, bytes) VALUES (?1, ?2, ?3)";

/// Opens `path` with the durability settings of the baseline and the schema.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(anyhow!("SQLite refused WAL mode: journal_mode is {mode}"));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// One transaction per event. See the module documentation.
#[derive(Debug)]
pub struct SqliteLog {
    conn: Mutex<Connection>,
}

impl SqliteLog {
    pub fn open(path: &Path) -> anyhow::Result<SqliteLog> {
        Ok(SqliteLog { conn: Mutex::new(open(path)?) })
    }

    /// Appends one event in its own transaction; returns once it is committed.
    pub fn append(&self, session: &[u8; 16], seq: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().map_err(|_| anyhow!("SQLite connection lock poisoned"))?;
        let tx = conn.transaction()?;
        tx.prepare_cached(INSERT)?.execute(params![&session[..], seq as i64, bytes])?;
        tx.commit()?;
        Ok(())
    }

    /// Appends many events in one transaction (to load data for read benchmarks).
    pub fn append_many<'a>(&self, rows: impl IntoIterator<Item = (&'a [u8; 16], u64, &'a [u8])>) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().map_err(|_| anyhow!("SQLite connection lock poisoned"))?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for (session, seq, bytes) in rows {
                insert.execute(params![&session[..], seq as i64, bytes])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// An event handed to the batched committer.
pub type SqliteRow = ([u8; 16], u64, Arc<[u8]>);

/// Group commit of up to [`SQLITE_BATCH`] events per transaction.
#[derive(Debug)]
pub struct SqliteBatched {
    committer: GroupCommit<SqliteRow>,
}

impl SqliteBatched {
    pub fn open(path: &Path) -> anyhow::Result<SqliteBatched> {
        let mut conn = open(path)?;
        let committer = GroupCommit::start(SQLITE_BATCH, move |batch: &mut Vec<SqliteRow>| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(INSERT)?;
                for (session, seq, bytes) in batch.iter() {
                    insert.execute(params![&session[..], *seq as i64, &bytes[..]])?;
                }
            }
            tx.commit()?;
            Ok(())
        });
        Ok(SqliteBatched { committer })
    }

    /// Appends one event; returns once its transaction is committed.
    pub fn append(&self, session: [u8; 16], seq: u64, bytes: Arc<[u8]>) -> anyhow::Result<()> {
        self.committer.submit((session, seq, bytes))
    }

    pub fn finish(self) -> anyhow::Result<CommitStats> {
        self.committer.finish()
    }
}

/// A read connection.
#[derive(Debug)]
pub struct SqliteReader {
    conn: Connection,
}

impl SqliteReader {
    pub fn open(path: &Path) -> anyhow::Result<SqliteReader> {
        Ok(SqliteReader { conn: open(path)? })
    }

    /// The last `n` events of `session`, newest first.
    pub fn read_last(&self, session: &[u8; 16], n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT bytes FROM events WHERE session = ?1 ORDER BY seq DESC LIMIT ?2")?;
        let rows = stmt.query_map(params![&session[..], n as i64], |row| row.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}
