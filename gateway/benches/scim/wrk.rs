//! `GET /Users/{id}` under wrk (2 threads, the bench's concurrency as
//! connections), the load generator issue 18 measured with: a C program
//! costs the shared cores less a request than the bench's own reqwest
//! workers, so it shows what the gateway and idmd serve when the load
//! itself is cheap. Skipped when `wrk` is not on the PATH.

use std::path::Path;
use std::process::Command;

use crate::report::{Phase, verdict};

// Issue 18: `GET /Users/{id}` under wrk 2 × 16 at twice the 3,750 req/s it
// served before the issue, p99 ≤ 5 ms.
const ISSUE_18_BEFORE_GET_RATE: f64 = 3_750.0;
const ISSUE_18_GET_P99_MS: f64 = 5.0;

/// What wrk reported for one run.
pub struct WrkPhase {
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    /// Responses other than 2xx/3xx, plus socket errors.
    pub errors: u64,
}

/// Whether `wrk` can be run.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// A warm-up run, then `seconds` measured, each request a random one of `ids`.
pub fn get_users(
    scratch: &Path,
    users_url: &str,
    bearer: &str,
    ids: &[String],
    connections: u64,
    warm_up: u64,
    seconds: u64,
) -> Result<WrkPhase, String> {
    let (origin, path) = split_origin(users_url)?;
    let script = scratch.join("get-users.lua");
    std::fs::write(&script, lua_script(&path, bearer, ids)).map_err(|e| e.to_string())?;
    run(&script, &origin, connections, warm_up)?;
    let output = run(&script, &origin, connections, seconds)?;
    parse(&output)
}

fn run(script: &Path, origin: &str, connections: u64, seconds: u64) -> Result<String, String> {
    let output = Command::new("wrk")
        .args(["-t2", "--latency"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(origin)
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(text)
}

/// `http://127.0.0.1:8443/scim/v2/Users` → (`http://127.0.0.1:8443`, `/scim/v2/Users`).
fn split_origin(url: &str) -> Result<(String, String), String> {
    let after_scheme = url.find("://").map(|i| i + 3).ok_or("no scheme")?;
    let path_at = url[after_scheme..]
        .find('/')
        .map(|i| i + after_scheme)
        .ok_or("no path")?;
    Ok((url[..path_at].to_string(), url[path_at..].to_string()))
}

fn lua_script(path: &str, bearer: &str, ids: &[String]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("{id:?}")).collect();
    format!(
        "wrk.headers[\"Authorization\"] = {bearer:?}\n\
         local ids = {{{}}}\n\
         request = function()\n  \
           return wrk.format(\"GET\", {path:?} .. \"/\" .. ids[math.random(#ids)])\n\
         end\n",
        ids.join(",")
    )
}

fn parse(output: &str) -> Result<WrkPhase, String> {
    let mut phase = WrkPhase {
        rate: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        requests: 0,
        errors: 0,
    };
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => phase.rate = rate.parse().map_err(|_| line.to_string())?,
            ["50%", t] => phase.p50_ms = millis(t)?,
            ["90%", t] => phase.p90_ms = millis(t)?,
            ["99%", t] => phase.p99_ms = millis(t)?,
            // "Latency   1.23ms  0.45ms  12.34ms  90.00%": mean, stdev, max.
            ["Latency", _, _, max, _] => phase.max_ms = millis(max)?,
            [n, "requests", "in", ..] => phase.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => phase.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                phase.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if phase.rate == 0.0 {
        return Err(format!("no rate in wrk's output:\n{output}"));
    }
    Ok(phase)
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn millis(text: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return Err(format!("not a wrk duration: {text}"));
    };
    number
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| format!("not a wrk duration: {text}"))
}

/// The wrk run of `GET /Users/{id}` beside the bench's own (`reqwest`) one.
pub fn print_verdicts(wrk: &WrkPhase, get: &Phase) {
    println!();
    println!(
        "{:<34} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        "GET /Users/{id} (wrk -t2)",
        wrk.requests,
        wrk.errors,
        wrk.rate,
        wrk.p50_ms,
        wrk.p90_ms,
        wrk.p99_ms,
        wrk.max_ms,
    );
    println!(
        "wrk ÷ the bench's own load:  {:.2} x the req/s",
        wrk.rate / get.rate()
    );
    let before = wrk.rate / ISSUE_18_BEFORE_GET_RATE;
    println!(
        "issue 18 GET ≥ 2 x {ISSUE_18_BEFORE_GET_RATE:.0} req/s: {:>9.0} ({before:.2} x)  {}",
        wrk.rate,
        verdict(before >= 2.0)
    );
    println!(
        "issue 18 GET p99 ≤ {ISSUE_18_GET_P99_MS:.0} ms:       {:>9.2}  {}",
        wrk.p99_ms,
        verdict(wrk.p99_ms <= ISSUE_18_GET_P99_MS)
    );
}

/// Turns of `GET /Users/{id}` under wrk, the baseline build's and this
/// build's in alternation: each turn, then the medians and their ratio.
pub fn print_against_baseline(baseline: &str, turns: &[(&str, WrkPhase)]) {
    println!();
    println!("GET /Users/{{id}} under wrk, in turns with the baseline ({baseline}):");
    for (build, phase) in turns {
        println!(
            "  {build:<12} {:>8.0} req/s  p50 {:>5.2} ms  p99 {:>5.2} ms  errors {}",
            phase.rate, phase.p50_ms, phase.p99_ms, phase.errors
        );
    }
    let of = |wanted: &str, pick: fn(&WrkPhase) -> f64| {
        median(
            turns
                .iter()
                .filter(|(build, _)| *build == wanted)
                .map(|(_, phase)| pick(phase))
                .collect(),
        )
    };
    let (before, now) = (of("baseline", |p| p.rate), of("this build", |p| p.rate));
    let (before_p99, now_p99) = (of("baseline", |p| p.p99_ms), of("this build", |p| p.p99_ms));
    let ratio = now / before;
    println!(
        "medians: baseline {before:.0} req/s (p99 {before_p99:.2} ms), this build {now:.0} req/s \
         (p99 {now_p99:.2} ms)"
    );
    println!(
        "issue 18 GET ≥ 2 x the baseline:   {ratio:.2} x  {}",
        verdict(ratio >= 2.0)
    );
    println!(
        "issue 18 GET p99 ≤ {ISSUE_18_GET_P99_MS:.0} ms:       {now_p99:>9.2}  {}",
        verdict(now_p99 <= ISSUE_18_GET_P99_MS)
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
