//! Leader election for active/standby components (the scheduler, the controller manager): every
//! copy runs, one leads, chosen through a `coordination.k8s.io/v1` Lease read and written
//! through the API server, with client-go's algorithm and flags.
//!
//! - [`LeaderElectionFlags`]: upstream's `--leader-elect*` flags and component-base's checks;
//! - [`Elector`] (`elector.rs`): the algorithm (acquire, renew, release) and the [`Term`] a
//!   leader works under;
//! - `record.rs`: the Lease's fields as client-go writes them;
//! - [`Fence`] (`fence.rs`): the leader's writes conditioned, by the API server, on the Lease
//!   being as the leader last wrote it (upstream has no fencing).
//!
//! Written here rather than taken from a crate (kube-rs has no leader election; the crates
//! around it judge expiry by the holder's `renewTime`, i.e. by another machine's clock): the
//! algorithm must be client-go's, judging expiry only by when *this* candidate observed the
//! record change, and it must do better than client-go where the issue asks (standbys watch
//! the Lease, so a released lease is taken at once and an expired one at its expiry rather than
//! at the next poll).

mod elector;
mod fence;
mod record;

pub use elector::{Elector, Outcome, Term};
pub use fence::{Fence, FenceLayer, HEADER as FENCE_HEADER};
pub use record::Record;

use std::time::Duration;

use clap::Args;

/// client-go's `JitterFactor`: candidates poll every retry period times up to 1.2.
pub const JITTER_FACTOR: f64 = 1.2;

/// kube-scheduler's and kube-controller-manager's `--leader-elect*` flags (component-base's
/// `BindLeaderElectionFlags`), with upstream's defaults. The Lease's name defaults to the
/// component's (`kube-scheduler`, `kube-controller-manager`): [`LeaderElectionFlags::config`].
#[derive(Args, Debug, Clone)]
pub struct LeaderElectionFlags {
    /// Start a leader election client and gain leadership before executing the main loop.
    /// Enable this when running replicated components for high availability.
    #[arg(
        long = "leader-elect",
        default_value = "true",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub leader_elect: bool,
    /// The duration that non-leader candidates will wait after observing a leadership renewal
    /// until attempting to acquire leadership of a led but unrenewed leader slot.
    #[arg(long, default_value = "15s", value_parser = kaname_goflags::duration::parse)]
    pub leader_elect_lease_duration: Duration,
    /// The interval between attempts by the acting master to renew a leadership slot before it
    /// stops leading. This must be less than the lease duration.
    #[arg(long, default_value = "10s", value_parser = kaname_goflags::duration::parse)]
    pub leader_elect_renew_deadline: Duration,
    /// The duration the clients should wait between attempting acquisition and renewal of a
    /// leadership.
    #[arg(long, default_value = "2s", value_parser = kaname_goflags::duration::parse)]
    pub leader_elect_retry_period: Duration,
    /// The type of resource object that is used for locking during leader election. Supported
    /// options are 'leases'.
    #[arg(long, default_value = "leases")]
    pub leader_elect_resource_lock: String,
    /// The name of resource object that is used for locking during leader election.
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// The namespace of resource object that is used for locking during leader election.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
}

/// What an [`Elector`] runs with: the flags resolved for one component.
#[derive(Clone, Debug)]
pub struct Config {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub namespace: String,
    pub name: String,
    /// `<hostname>_<uuid>`, as upstream's components name themselves.
    pub identity: String,
    /// Who the Lease's events come from (`kube-scheduler`, ...).
    pub component: String,
}

/// Parses the flags alone, for their defaults.
#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    flags: LeaderElectionFlags,
}

impl LeaderElectionFlags {
    /// Upstream's defaults (what the flags are when none is given).
    pub fn defaults(&self) -> LeaderElectionFlags {
        <DefaultsOnly as clap::Parser>::parse_from(["defaults"]).flags
    }

    /// Copies from `flags` the ones named in `explicit` (clap ids: the field names), i.e. set
    /// on the command line: upstream's `ApplyLeaderElectionTo` over a configuration file.
    pub fn overlay(&mut self, flags: &LeaderElectionFlags, explicit: &[String]) {
        for id in explicit {
            match id.as_str() {
                "leader_elect" => self.leader_elect = flags.leader_elect,
                "leader_elect_lease_duration" => self.leader_elect_lease_duration = flags.leader_elect_lease_duration,
                "leader_elect_renew_deadline" => self.leader_elect_renew_deadline = flags.leader_elect_renew_deadline,
                "leader_elect_retry_period" => self.leader_elect_retry_period = flags.leader_elect_retry_period,
                "leader_elect_resource_lock" => {
                    self.leader_elect_resource_lock = flags.leader_elect_resource_lock.clone()
                }
                "leader_elect_resource_name" => {
                    self.leader_elect_resource_name = flags.leader_elect_resource_name.clone()
                }
                "leader_elect_resource_namespace" => {
                    self.leader_elect_resource_namespace = flags.leader_elect_resource_namespace.clone()
                }
                _ => {}
            }
        }
    }

    /// Component-base's `ValidateLeaderElectionConfiguration` under `leaderElection`, as the
    /// field errors upstream prints at start; empty when election is off or all is well.
    pub fn validate(&self) -> Vec<String> {
        if !self.leader_elect {
            return Vec::new();
        }
        let mut errs = Vec::new();
        let show = |d: Duration| kaname_goflags::duration::format(d);
        for (field, d) in [
            ("leaseDuration", self.leader_elect_lease_duration),
            ("renewDeadline", self.leader_elect_renew_deadline),
            ("retryPeriod", self.leader_elect_retry_period),
        ] {
            if d.is_zero() {
                errs.push(format!("leaderElection.{field}: Invalid value: {}: must be greater than 0", show(d)));
            }
        }
        if self.leader_elect_lease_duration <= self.leader_elect_renew_deadline {
            // Upstream shows the renew deadline as the bad value.
            errs.push(format!(
                "leaderElection.leaseDuration: Invalid value: {}: LeaseDuration must be greater than RenewDeadline",
                show(self.leader_elect_renew_deadline)
            ));
        }
        for (field, v) in [
            ("resourceLock", &self.leader_elect_resource_lock),
            ("resourceNamespace", &self.leader_elect_resource_namespace),
        ] {
            if v.is_empty() {
                errs.push(format!("leaderElection.{field}: Invalid value: \"\": {field} is required"));
            }
        }
        if self.leader_elect_resource_name.as_deref() == Some("") {
            errs.push("leaderElection.resourceName: Invalid value: \"\": resourceName is required".into());
        }
        errs
    }

    /// The election of `component` (whose name is also the Lease's by default) under a fresh
    /// identity. Err with client-go's words when the lock type is not one client-go knows or the
    /// timings break `NewLeaderElector`'s rules.
    pub fn config(&self, component: &str) -> Result<Config, String> {
        if self.leader_elect_resource_lock != "leases" {
            return Err(format!("Invalid lock-type {}", self.leader_elect_resource_lock));
        }
        let host = hostname::get().map_err(|e| format!("unable to get hostname: {e}"))?;
        let cfg = Config {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            namespace: self.leader_elect_resource_namespace.clone(),
            name: self.leader_elect_resource_name.clone().unwrap_or_else(|| component.to_string()),
            identity: format!("{}_{}", host.to_string_lossy(), uuid::Uuid::new_v4()),
            component: component.to_string(),
        };
        cfg.check()?;
        Ok(cfg)
    }
}

impl Config {
    /// client-go's `NewLeaderElector` checks, with its texts.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("leaseDuration must be greater than renewDeadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err("renewDeadline must be greater than retryPeriod*JitterFactor".into());
        }
        if self.lease_duration.is_zero() {
            return Err("leaseDuration must be greater than zero".into());
        }
        if self.renew_deadline.is_zero() {
            return Err("renewDeadline must be greater than zero".into());
        }
        if self.retry_period.is_zero() {
            return Err("retryPeriod must be greater than zero".into());
        }
        if self.identity.is_empty() {
            return Err("Lock identity is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        le: LeaderElectionFlags,
    }

    fn parse(args: &[&str]) -> Result<LeaderElectionFlags, clap::Error> {
        Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.le)
    }

    #[test]
    fn upstream_defaults_and_go_flag_syntax() {
        let f = parse(&[]).unwrap();
        assert!(f.leader_elect);
        assert_eq!(
            (f.leader_elect_lease_duration, f.leader_elect_renew_deadline, f.leader_elect_retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
        );
        assert_eq!(
            (f.leader_elect_resource_lock.as_str(), f.leader_elect_resource_namespace.as_str()),
            ("leases", "kube-system")
        );
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
        // A Go bool flag takes no separate value.
        assert!(parse(&["--leader-elect", "false"]).is_err());
        let f = parse(&["--leader-elect-lease-duration=1m0s", "--leader-elect-retry-period=500ms"]).unwrap();
        assert_eq!(
            (f.leader_elect_lease_duration, f.leader_elect_retry_period),
            (Duration::from_secs(60), Duration::from_millis(500))
        );
        assert!(parse(&["--leader-elect-renew-deadline=10"])
            .unwrap_err()
            .to_string()
            .contains("time: missing unit in duration \"10\""));
    }

    #[test]
    fn component_base_and_client_go_checks_with_their_words() {
        let f = parse(&["--leader-elect-lease-duration=10s"]).unwrap();
        assert_eq!(
            f.validate(),
            ["leaderElection.leaseDuration: Invalid value: 10s: LeaseDuration must be greater than RenewDeadline"]
        );
        let off = parse(&["--leader-elect=false", "--leader-elect-lease-duration=1s"]).unwrap();
        assert!(off.validate().is_empty(), "nothing is checked when election is off");
        let f = parse(&["--leader-elect-retry-period=0s"]).unwrap();
        assert_eq!(f.validate(), ["leaderElection.retryPeriod: Invalid value: 0s: must be greater than 0"]);

        let f = parse(&["--leader-elect-retry-period=9s"]).unwrap();
        assert!(f.validate().is_empty());
        assert_eq!(
            f.config("kube-scheduler").unwrap_err(),
            "renewDeadline must be greater than retryPeriod*JitterFactor"
        );
        let f = parse(&["--leader-elect-resource-lock=endpoints"]).unwrap();
        assert_eq!(f.config("kube-scheduler").unwrap_err(), "Invalid lock-type endpoints");

        let c = parse(&[]).unwrap().config("kube-scheduler").unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("kube-system", "kube-scheduler"));
        let (host, id) = c.identity.rsplit_once('_').unwrap();
        assert!(!host.is_empty() && uuid::Uuid::parse_str(id).is_ok(), "{}", c.identity);
    }
}
