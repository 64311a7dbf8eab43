//! A private PostgreSQL server for one test — its own data directory and port — which the test
//! can shut down and start again (a real restart: every connection ends, the server comes back
//! with the same data). Uses the PostgreSQL binaries `scripts/test` installs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    running: bool,
}

/// `FLUXGATE_TEST_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
fn binaries() -> PathBuf {
    if let Ok(bin) = std::env::var("FLUXGATE_TEST_PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql (scripts/test installs it)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect("a PostgreSQL version with pg_ctl")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a PostgreSQL tool, as the `postgres` user when the tests run as root (PostgreSQL
/// refuses to run as root); the error is the tool's standard error.
fn run(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl PostgresServer {
    /// Creates a cluster in a new temporary directory and starts it on a free loopback port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            let owned = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(owned.success(), "hand the directory to the postgres user");
        }
        let bin = binaries();
        let data = dir.path().join("data");
        run(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .expect("initdb");
        let mut server = Self {
            port: super::free_port(),
            bin,
            dir,
            running: false,
        };
        server.restart();
        server
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server again on the same port and data, waiting until it accepts
    /// connections.
    pub fn restart(&mut self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .expect("pg_ctl start");
        self.running = true;
    }

    /// Shuts the server down the way an operator's restart does (`pg_ctl stop -m fast`: every
    /// session is ended, then the server exits).
    pub fn stop(&mut self) {
        self.shut_down().expect("pg_ctl stop");
    }

    fn shut_down(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        let data = self.dir.path().join("data");
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap_or(""),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )?;
        self.running = false;
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
