//! What a phase measured, the table, and the verdicts against the targets.

use std::time::Duration;

// SCIM's targets.
const TARGET_GET_RATE: f64 = 10_000.0;
const TARGET_GET_P99_MS: f64 = 5.0;
const TARGET_GRPC_OVER_GET: f64 = 1.5;
// Wren's REST API against SCIM (issue 14): a REST read costs at most 1.1×
// the same read over SCIM, and Basic calls keep 90 % of the bearer rate.
const TARGET_REST_OVER_SCIM: f64 = 1.1;
const TARGET_BASIC_OF_BEARER: f64 = 0.9;

/// What one phase measured.
pub struct Phase {
    pub label: &'static str,
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub seconds: f64,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// Nearest-rank percentile, in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = (p * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn p99(&self) -> f64 {
        self.percentile_ms(0.99)
    }
}

pub fn print_table(phases: &[Phase]) {
    println!(
        "{:<34} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "phase", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for phase in phases {
        println!(
            "{:<34} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            phase.label,
            phase.latencies.len(),
            phase.errors,
            phase.rate(),
            phase.percentile_ms(0.50),
            phase.percentile_ms(0.90),
            phase.p99(),
            phase.percentile_ms(1.0),
        );
    }
    for phase in phases {
        if let Some(error) = &phase.first_error {
            println!("first error in {}: {error}", phase.label);
        }
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// SCIM's `GET /Users/{id}` against the same read as direct gRPC.
pub fn print_scim_verdicts(get: &Phase, grpc: &Phase) {
    let over = grpc.rate() / get.rate();
    let get_p99 = get.p99();
    println!();
    println!(
        "gateway GET ÷ direct gRPC:  {:.2} x the req/s (gRPC is {over:.2} x the gateway)",
        get.rate() / grpc.rate()
    );
    println!(
        "gateway adds:               p50 {:+.2} ms, p99 {:+.2} ms",
        get.percentile_ms(0.50) - grpc.percentile_ms(0.50),
        get_p99 - grpc.p99()
    );
    println!(
        "target GET ≥ {TARGET_GET_RATE:.0} req/s:      {:>9.0}  {}",
        get.rate(),
        verdict(get.rate() >= TARGET_GET_RATE)
    );
    println!(
        "target GET p99 ≤ {TARGET_GET_P99_MS:.0} ms:         {get_p99:>9.2}  {}",
        verdict(get_p99 <= TARGET_GET_P99_MS)
    );
    println!(
        "target gRPC ÷ GET ≤ {TARGET_GRPC_OVER_GET}:      {over:>9.2}  {}",
        verdict(over <= TARGET_GRPC_OVER_GET)
    );
}

/// A REST read against the same read over SCIM: the cost ratio is SCIM's
/// rate over REST's (how much more time a REST request takes on the
/// saturated box), and REST's p99 over SCIM's.
pub fn print_rest_verdicts(
    rest_get: &Phase,
    scim_get: &Phase,
    rest_query: &Phase,
    scim_filter: &Phase,
    basic_get: &Phase,
) {
    println!();
    for (what, rest, scim) in [
        ("REST GET", rest_get, scim_get),
        ("REST query", rest_query, scim_filter),
    ] {
        let cost = scim.rate() / rest.rate();
        let p99 = rest.p99() / scim.p99();
        println!(
            "target {what:<10} ≤ {TARGET_REST_OVER_SCIM}x SCIM: req/s {cost:.2}x  {}, \
             p99 {p99:.2}x ({:.2} vs {:.2} ms)  {}",
            verdict(cost <= TARGET_REST_OVER_SCIM),
            rest.p99(),
            scim.p99(),
            verdict(p99 <= TARGET_REST_OVER_SCIM),
        );
    }
    let share = basic_get.rate() / rest_get.rate();
    println!(
        "target Basic ≥ {:.0} % of bearer:  {:.0} %  {}",
        TARGET_BASIC_OF_BEARER * 100.0,
        share * 100.0,
        verdict(share >= TARGET_BASIC_OF_BEARER)
    );
}
