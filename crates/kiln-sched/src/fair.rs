//! Fair share: usage decays with a half-life, as Slurm's multifactor
//! priority does, so what a user ran last month weighs less than what they
//! ran today, and a user who ran nothing lately goes first.

/// Slurm's default `PriorityDecayHalfLife` is 7 days; kiln's too.
pub const DEFAULT_HALF_LIFE_SECS: u64 = 7 * 24 * 3600;

/// `value` measured at `from_ms`, decayed to `to_ms`.
pub fn decay(value: f64, from_ms: u64, to_ms: u64, half_life_secs: u64) -> f64 {
    if half_life_secs == 0 {
        return 0.0;
    }
    let elapsed = to_ms.saturating_sub(from_ms) as f64 / 1000.0;
    value * (-elapsed / half_life_secs as f64).exp2()
}

/// What holding resources costs per second, in GPU-seconds: a GPU is 1, a
/// CPU-only job pays for its CPUs at the cluster's CPUs-per-GPU rate (as
/// Slurm's TRESBillingWeights would be set), so CPU users share fairly with
/// GPU users. On a cluster without GPUs a CPU is 1.
pub fn billing(gpus: u64, cpus: u64, cluster_gpus: u64, cluster_cpus: u64) -> f64 {
    if cluster_gpus == 0 || cluster_cpus == 0 {
        return cpus as f64;
    }
    if gpus > 0 {
        gpus as f64
    } else {
        cpus as f64 * cluster_gpus as f64 / cluster_cpus as f64
    }
}

/// Usage charged for holding `rate` (see [`billing`]) from `start_ms` to
/// `end_ms`, decayed to `now_ms`: the integral of the decaying charge, so a
/// long job's early hours weigh less than its last.
pub fn charge(rate: f64, start_ms: u64, end_ms: u64, now_ms: u64, half_life_secs: u64) -> f64 {
    if end_ms <= start_ms || half_life_secs == 0 {
        return 0.0;
    }
    let h = half_life_secs as f64;
    let k = std::f64::consts::LN_2 / h;
    let to_end = now_ms.saturating_sub(end_ms) as f64 / 1000.0;
    let len = (end_ms - start_ms) as f64 / 1000.0;
    // ∫₀^len rate·2^{-(to_end + len - t)/h} dt
    rate * (-(to_end) * k).exp() * (1.0 - (-len * k).exp()) / k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_life_halves() {
        let v = decay(
            100.0,
            0,
            DEFAULT_HALF_LIFE_SECS * 1000,
            DEFAULT_HALF_LIFE_SECS,
        );
        assert!((v - 50.0).abs() < 1e-9, "{v}");
        assert_eq!(decay(100.0, 5, 5, 60), 100.0);
        assert_eq!(decay(100.0, 0, 1, 0), 0.0);
    }

    #[test]
    fn a_charge_is_close_to_rate_times_time_when_short() {
        // One GPU for an hour, measured at its end: just under 3600.
        let c = charge(1.0, 0, 3_600_000, 3_600_000, DEFAULT_HALF_LIFE_SECS);
        assert!(c > 3590.0 && c < 3600.0, "{c}");
        // The same hour a half-life ago counts half.
        let later = 3_600_000 + DEFAULT_HALF_LIFE_SECS * 1000;
        let old = charge(1.0, 0, 3_600_000, later, DEFAULT_HALF_LIFE_SECS);
        assert!((old - c / 2.0).abs() < 1e-6, "{old} vs {c}");
        assert_eq!(charge(1.0, 10, 5, 20, 60), 0.0);
    }

    #[test]
    fn cpu_jobs_pay_at_the_cluster_rate() {
        // 8 GPUs and 64 CPUs: 8 CPUs cost as much as one GPU.
        assert_eq!(billing(0, 8, 8, 64), 1.0);
        assert_eq!(billing(2, 8, 8, 64), 2.0);
        assert_eq!(billing(0, 4, 0, 16), 4.0);
    }
}
