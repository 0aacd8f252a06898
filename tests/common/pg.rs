//! A database of its own for each test on the PostgreSQL server that
//! `ARCHGRAM_TEST_PG` names.

use archgram::store::postgres::{migrate, Target};
use postgres::Client;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A database made for one test, dropped when the test ends (passed or
/// not).
pub struct TestDb {
    pub server: Target,
    pub name: String,
    pub target: Target,
}

impl TestDb {
    /// A fresh database on the test server, or `None` (reported as
    /// skipped) when `ARCHGRAM_TEST_PG` is unset.
    pub fn new(check: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("ARCHGRAM_TEST_PG") else {
            super::skip(
                check,
                "ARCHGRAM_TEST_PG names no PostgreSQL server (start one with `scripts/pg-throwaway.sh`)",
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server = Target::parse(&url).expect("ARCHGRAM_TEST_PG");
        let name = format!(
            "archgram_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = server.connect().expect("connect to ARCHGRAM_TEST_PG");
        // Two statements: neither may run inside a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).unwrap();
        }
        let target = server.with_dbname(&name);
        Some(TestDb {
            server,
            name,
            target,
        })
    }

    pub fn connect(&self) -> Client {
        self.target.connect().unwrap()
    }

    /// A connection to the database with archgram's schema in it.
    pub fn migrated(&self) -> Client {
        let mut c = self.connect();
        migrate(&mut c).unwrap();
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = self.server.connect() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
