//! The external load generator: runs `wrk` (Debian's package, installed by the bench scripts)
//! as its own process — optionally cycling over many request bodies with a Lua script — and
//! reads its throughput, latency percentiles and refusals.

use anyhow::Context;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How hard and how long each row is driven.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// wrk threads (each drives its share of the connections).
    pub threads: usize,
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// How long a row runs.
    pub duration: Duration,
}

impl Load {
    /// The same load for two seconds: fills caches and leases before a measured row.
    pub fn warm_up(self) -> Self {
        Self {
            duration: Duration::from_secs(2),
            ..self
        }
    }
}

/// What one wrk run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests answered.
    pub requests: u64,
    /// Answers other than 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
}

/// A Lua script for wrk that sends each thread through the bodies in a file (one JSON body a
/// line), round-robin from a random start, with the method and the `-H` headers given.
const CYCLE_LUA: &str = r#"
local requests = {}
local count = 0
local next_index = 0
function init(args)
  for line in io.lines(args[1]) do
    count = count + 1
    requests[count] = wrk.format(args[2], nil, nil, line)
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  next_index = math.random(count) - 1
end
function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
"#;

/// A Lua script for wrk that refreshes one session per thread (run it with one connection a
/// thread): thread i starts from line i of the file of refresh tokens and sends each answer's
/// successor next — a refresh token is single-use, so the chain is the only honest load.
const REFRESH_LUA: &str = r#"
local count = 0
function setup(thread)
  count = count + 1
  thread:set("line", count)
end
function init(args)
  local n = 0
  for token in io.lines(args[1]) do
    n = n + 1
    if n == line then current = token end
  end
end
function request()
  return wrk.format("POST", nil, nil, '{"refresh_token":"' .. current .. '"}')
end
function response(status, headers, body)
  local successor = body:match('"refresh_token":"([^"]+)"')
  if successor then current = successor end
end
"#;

/// Where requests come from for one run.
pub enum Requests<'a> {
    /// The same `GET` every time.
    Get,
    /// `POST`s cycling over the bodies in this file (one a line).
    PostEach(&'a Path),
    /// `POST {"refresh_token"}` chains, one per thread, from the tokens in this file.
    RefreshChains(&'a Path),
}

/// Runs wrk against `url` with these headers.
pub fn run(
    load: Load,
    url: &str,
    headers: &[(&str, &str)],
    requests: Requests<'_>,
    scripts: &Path,
) -> anyhow::Result<Measured> {
    run_together(load, &[url], headers, requests, scripts)
}

/// Runs one wrk per URL at the same time, the connections split evenly between them, and
/// adds up what they measured: throughput and refusals summed, latencies the worst of them.
pub fn run_together(
    load: Load,
    urls: &[&str],
    headers: &[(&str, &str)],
    requests: Requests<'_>,
    scripts: &Path,
) -> anyhow::Result<Measured> {
    let share = Load {
        connections: (load.connections / urls.len().max(1)).max(1),
        threads: load.threads,
        ..load
    };
    let running: Vec<Child> = urls
        .iter()
        .map(|url| {
            command(share, url, headers, &requests, scripts)?
                .spawn()
                .context("running wrk (scripts/bench-verify installs it)")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut total = Measured::default();
    for child in running {
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let one = parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))?;
        total.rps += one.rps;
        total.requests += one.requests;
        total.p50 = total.p50.max(one.p50);
        total.p99 = total.p99.max(one.p99);
        total.non_2xx += one.non_2xx;
        total.socket_errors += one.socket_errors;
    }
    Ok(total)
}

/// The wrk command line for one run, its output captured.
fn command(
    load: Load,
    url: &str,
    headers: &[(&str, &str)],
    requests: &Requests<'_>,
    scripts: &Path,
) -> anyhow::Result<Command> {
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    let (name, script, script_args): (&str, &str, Vec<&OsStr>) = match requests {
        Requests::Get => {
            command.arg(url);
            return Ok(command);
        }
        Requests::PostEach(bodies) => (
            "cycle.lua",
            CYCLE_LUA,
            vec![bodies.as_os_str(), "POST".as_ref()],
        ),
        Requests::RefreshChains(tokens) => ("refresh.lua", REFRESH_LUA, vec![tokens.as_os_str()]),
    };
    let path = scripts.join(name);
    std::fs::write(&path, script)?;
    command
        .arg("-s")
        .arg(&path)
        .arg(url)
        .arg("--")
        .args(script_args);
    Ok(command)
}

/// Reads wrk's `--latency` report.
pub fn parse(report: &str) -> anyhow::Result<Measured> {
    let mut measured = Measured::default();
    for line in report.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rps] => measured.rps = rps.parse()?,
            [count, "requests", "in", ..] => measured.requests = count.parse()?,
            ["50%", latency] => measured.p50 = duration(latency)?,
            ["99%", latency] => measured.p99 = duration(latency)?,
            ["Non-2xx", "or", "3xx", "responses:", count] => measured.non_2xx = count.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                measured.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    anyhow::ensure!(measured.rps > 0.0, "no Requests/sec line");
    Ok(measured)
}

/// `436.00us`, `1.10ms`, `2.00s`.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        anyhow::bail!("latency without a unit: {text}")
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

/// Writes one JSON body a line for [`Requests::PostEach`].
pub fn write_bodies(path: &PathBuf, bodies: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut text = String::new();
    for body in bodies {
        text.push_str(&body);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 2s test @ http://127.0.0.1:1/verify
  1 threads and 64 connections
  Latency Distribution
     50%  436.00us
     75%  600.00us
     90%  800.00us
     99%    1.10ms
  123456 requests in 2.00s, 12.34MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  61728.00
Transfer/sec:      6.17MB
";
        let measured = parse(report).unwrap();
        assert_eq!(measured.rps, 61728.0);
        assert_eq!(measured.requests, 123456);
        assert_eq!(measured.p50, Duration::from_micros(436));
        assert_eq!(measured.p99, Duration::from_micros(1100));
        assert_eq!(measured.non_2xx, 12);
        assert_eq!(measured.socket_errors, 3);
    }
}
