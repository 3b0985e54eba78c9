//! Latency and throughput accounting: every request's latency in microseconds, merged across
//! client threads, summarised as requests/s and p50/p90/p99/max.

use std::time::Duration;

/// Measurements of one run.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Per-request latency, microseconds.
    pub latencies_us: Vec<u32>,
    /// Transactions committed.
    pub transactions: u64,
    /// Transaction retries after EAGAIN.
    pub eagain_retries: u64,
    /// Watch events received.
    pub events: u64,
    /// Requests that failed with an unexpected error.
    pub errors: u64,
}

impl Samples {
    /// Records one request.
    pub fn record(&mut self, elapsed: Duration) {
        self.latencies_us
            .push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Adds another thread's samples.
    pub fn merge(&mut self, other: Samples) {
        self.latencies_us.extend(other.latencies_us);
        self.transactions += other.transactions;
        self.eagain_retries += other.eagain_retries;
        self.events += other.events;
        self.errors += other.errors;
    }
}

/// A summary line's numbers.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rate: f64,
    /// Percentiles in microseconds.
    pub p50: u32,
    /// p90.
    pub p90: u32,
    /// p99.
    pub p99: u32,
    /// Maximum.
    pub max: u32,
    /// Counters copied from the samples.
    pub transactions: u64,
    /// EAGAIN retries.
    pub eagain_retries: u64,
    /// Watch events.
    pub events: u64,
    /// Unexpected errors.
    pub errors: u64,
}

fn percentile(sorted: &[u32], fraction: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// Summarises `samples` taken over `wall`.
    pub fn of(mut samples: Samples, wall: Duration) -> Summary {
        samples.latencies_us.sort_unstable();
        let requests = samples.latencies_us.len() as u64;
        let seconds = wall.as_secs_f64().max(1e-9);
        Summary {
            requests,
            seconds,
            rate: requests as f64 / seconds,
            p50: percentile(&samples.latencies_us, 0.50),
            p90: percentile(&samples.latencies_us, 0.90),
            p99: percentile(&samples.latencies_us, 0.99),
            max: samples.latencies_us.last().copied().unwrap_or(0),
            transactions: samples.transactions,
            eagain_retries: samples.eagain_retries,
            events: samples.events,
            errors: samples.errors,
        }
    }

    /// The Xen lab's lines (`scripts/lab/scenarios/bench.sh` turns `LAB-BENCH <metric> <value>
    /// <unit>` into the server's `loadgen-<metric>` row).
    pub fn lab_lines(&self, workload: &str) -> [String; 3] {
        [
            format!("LAB-BENCH {workload}-rate {:.0} req/s", self.rate),
            format!("LAB-BENCH {workload}-p50 {} us", self.p50),
            format!("LAB-BENCH {workload}-p99 {} us", self.p99),
        ]
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        format!(
            "{} requests in {:.2}s = {:.0} req/s; latency us p50 {} p90 {} p99 {} max {}; \
             transactions {} (EAGAIN retries {}), watch events {}, errors {}",
            self.requests,
            self.seconds,
            self.rate,
            self.p50,
            self.p90,
            self.p99,
            self.max,
            self.transactions,
            self.eagain_retries,
            self.events,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut samples = Samples::default();
        for micros in 1..=100u64 {
            samples.record(Duration::from_micros(micros));
        }
        let summary = Summary::of(samples, Duration::from_secs(2));
        assert_eq!(
            (summary.p50, summary.p90, summary.p99, summary.max),
            (50, 90, 99, 100)
        );
        assert_eq!(summary.requests, 100);
        assert!((summary.rate - 50.0).abs() < 1e-9);
    }

    #[test]
    fn lab_lines_have_the_bench_sh_format() {
        let mut samples = Samples::default();
        for micros in 1..=100u64 {
            samples.record(Duration::from_micros(micros));
        }
        let lines = Summary::of(samples, Duration::from_secs(2)).lab_lines("rw");
        assert_eq!(
            lines,
            [
                "LAB-BENCH rw-rate 50 req/s",
                "LAB-BENCH rw-p50 50 us",
                "LAB-BENCH rw-p99 99 us"
            ]
        );
    }

    #[test]
    fn empty_samples_summarise_to_zero() {
        let summary = Summary::of(Samples::default(), Duration::from_secs(1));
        assert_eq!((summary.requests, summary.p50, summary.max), (0, 0, 0));
    }
}
