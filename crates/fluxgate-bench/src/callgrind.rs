//! Instructions per request, counted by callgrind (valgrind's instruction counter) in a server
//! process run under it: exact and repeatable where throughput on a shared 2-core VM moves by
//! ±10 % from one minute to the next — and blind to the kernel, whose share wrk's table shows.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The program and arguments that run a server under callgrind, its counts written to
/// `out`-prefixed files.
pub fn wrapper(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--dump-instr=no".into(),
    ]
}

/// Whether valgrind's callgrind is installed (`scripts/bench-verify` installs it).
pub fn available() -> bool {
    Command::new("callgrind_control")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Forgets what the callgrind process `pid` counted so far: the load to count starts next.
pub fn zero(pid: u32) -> anyhow::Result<()> {
    control(pid, "--zero")
}

/// Writes what `pid` counted since [`zero`] to a new file next to `out`; its path.
pub fn dump(pid: u32, out: &Path) -> anyhow::Result<PathBuf> {
    control(pid, "--dump")?;
    // callgrind numbers its dumps `<out>.1`, `<out>.2`, …: the newest is this one
    let dir = out.parent().context("callgrind output directory")?;
    let prefix = format!(
        "{}.",
        out.file_name().context("file name")?.to_string_lossy()
    );
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u32>().ok())
        {
            if newest.as_ref().is_none_or(|(m, _)| n > *m) {
                newest = Some((n, entry.path()));
            }
        }
    }
    newest.map(|(_, path)| path).context("no callgrind dump")
}

fn control(pid: u32, what: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(what)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running callgrind_control")?;
    anyhow::ensure!(status.success(), "callgrind_control {what} {pid} failed");
    Ok(())
}

/// Instructions in a dump: in all, and for each of `functions` — names or parts of names,
/// alternatives separated by `|` (the compiler inlines some functions in one build and not in
/// another) — under the outermost function that matches, inclusive of what it calls.
pub fn instructions(dump: &Path, functions: &[&str]) -> anyhow::Result<(u64, Vec<u64>)> {
    let output = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(dump)
        .output()
        .context("running callgrind_annotate")?;
    anyhow::ensure!(output.status.success(), "callgrind_annotate failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let count = |line: &str| -> Option<u64> {
        line.split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    };
    let total = text
        .lines()
        .find(|line| line.contains("PROGRAM TOTALS"))
        .and_then(count)
        .context("no program total in callgrind's report")?;
    let under = functions
        .iter()
        .map(|function| {
            text.lines()
                .filter(|line| function.split('|').any(|name| line.contains(name)))
                .filter_map(count)
                .max()
                .unwrap_or(0)
        })
        .collect();
    Ok((total, under))
}
