//! The report etcd's `benchmark` prints, so numbers from both tools read the same way.

use std::time::Duration;

/// Latencies of the successful requests, the failures, and the wall time they took.
pub struct Results {
    pub samples: Vec<Duration>,
    pub errors: usize,
    pub total: Duration,
}

impl Results {
    pub fn print(&self) {
        let mut s: Vec<f64> = self.samples.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let n = s.len().max(1) as f64;
        let avg = s.iter().sum::<f64>() / n;
        let stddev = (s.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n).sqrt();
        let (fastest, slowest) = (s.first().copied().unwrap_or(0.0), s.last().copied().unwrap_or(0.0));
        println!("Summary:");
        println!("  Total:\t{:.4} secs.", self.total.as_secs_f64());
        println!("  Slowest:\t{slowest:.4} secs.");
        println!("  Fastest:\t{fastest:.4} secs.");
        println!("  Average:\t{avg:.4} secs.");
        println!("  Stddev:\t{stddev:.4} secs.");
        println!("  Requests/sec:\t{:.4}", s.len() as f64 / self.total.as_secs_f64().max(f64::MIN_POSITIVE));
        if self.errors > 0 {
            println!("  Errors:\t{}", self.errors);
        }
        if !s.is_empty() {
            println!("\nResponse time histogram:");
            for (upper, count, bar) in histogram(&s, fastest, slowest) {
                println!("  {upper:.4} [{count}]\t|{bar}");
            }
        }
        println!("\nLatency distribution:");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            println!("  {p}% in {:.4} secs.", percentile(&s, p));
        }
        println!("  max in {slowest:.4} secs.");
    }
}

/// The value at percentile `p` of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// etcd's histogram: 10 equal-width buckets from fastest to slowest plus the fastest itself,
/// bars scaled so the fullest bucket has 40 marks.
fn histogram(sorted: &[f64], fastest: f64, slowest: f64) -> Vec<(f64, usize, String)> {
    const BUCKETS: usize = 10;
    const BAR: usize = 40;
    let step = (slowest - fastest) / BUCKETS as f64;
    let uppers: Vec<f64> = (0..=BUCKETS).map(|i| fastest + step * i as f64).collect();
    let mut counts = vec![0usize; uppers.len()];
    let mut b = 0;
    for &x in sorted {
        while b < uppers.len() - 1 && x > uppers[b] {
            b += 1;
        }
        counts[b] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1);
    uppers.into_iter().zip(counts).map(|(u, c)| (u, c, "∎".repeat(c * BAR / max))).collect()
}

/// A process's resident memory (VmRSS) as "N MiB", or "n/a" without a PID or once it is gone.
pub fn rss(pid: Option<u32>) -> String {
    let Some(pid) = pid else { return "n/a".into() };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kb.map(|kb| format!("{} MiB", kb / 1024)).unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_sample_once() {
        let s: Vec<f64> = (1..=100).map(|i| i as f64 / 1000.0).collect();
        let h = histogram(&s, 0.001, 0.1);
        assert_eq!(h.iter().map(|(_, c, _)| c).sum::<usize>(), 100);
        assert_eq!(h.len(), 11);
        assert!(h.iter().any(|(_, _, bar)| bar.chars().count() == 40));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s: Vec<f64> = (0..=1000).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 500.0);
        assert_eq!(percentile(&s, 99.9), 999.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
