//! Leader election over a `coordination.k8s.io/v1` Lease, with the semantics of
//! client-go's `leaderelection` package: one holder at a time, optimistic
//! concurrency on `resourceVersion`, and take-over only once the holder has not
//! renewed for a full lease duration *as measured by our own clock* (clocks of
//! different hosts are never compared).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use rand::Rng;

/// Where the lease lives and how aggressively it is renewed.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease, `kube-system` by default.
    pub namespace: String,
    /// Lease name, e.g. `kube-scheduler`.
    pub name: String,
    /// This candidate's identity: host name + `_` + a random suffix.
    pub identity: String,
    /// How long a non-leader waits after the last observed change before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps retrying a failing renewal before giving up.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream defaults (15 s / 10 s / 2 s) for the lease `kube-system/<name>`.
    pub fn new(name: &str) -> Self {
        let suffix: u64 = rand::rng().random();
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{}_{suffix:016x}", crate::pki::hostname()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// Renewals failed for longer than the renew deadline; another candidate may
    /// already lead, so the caller must stop doing leader work (and exit).
    #[error("lost leader lease {namespace}/{name} held as {identity}")]
    LostLease {
        namespace: String,
        name: String,
        identity: String,
    },
    #[error("lease API: {0}")]
    Api(#[from] kube::Error),
}

/// What a candidate should do after observing the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists yet: create it as holder.
    Create,
    /// We already hold it: renew.
    Renew,
    /// Nobody holds it, or the holder has not renewed for a lease duration: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Wait,
}

/// The pure decision. `observed_at` is when *we* last saw the lease record change
/// (local monotonic clock), which is what the expiry is measured from.
pub fn decide(
    observed: Option<&LeaseSpec>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = observed else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map_or(default_duration, |s| Duration::from_secs(s as u64));
    if observed_at + duration > now {
        Decision::Wait
    } else {
        Decision::TakeOver
    }
}

struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    /// The last lease record seen and when it (last) changed.
    observed: Option<(LeaseSpec, Instant)>,
    /// Our last successfully written lease (its resourceVersion guards the release).
    held: Option<Lease>,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    fn spec_for_us(&self, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire_time.unwrap_or_else(micro_now)),
            renew_time: Some(micro_now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt; `Ok(true)` when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = self.config.name.clone();
        let current = self.api.get_opt(&name).await?;
        let now = Instant::now();
        let spec = current.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        if let Some(spec) = &spec {
            let changed = self.observed.as_ref().is_none_or(|(seen, _)| seen != spec);
            if changed {
                self.observed = Some((spec.clone(), now));
            }
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let decision = decide(
            spec.as_ref(),
            &self.config.identity,
            observed_at,
            now,
            self.config.lease_duration,
        );
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec_for_us(None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    self.spec_for_us(old.acquire_time, transitions)
                } else {
                    self.spec_for_us(None, transitions.saturating_add(1))
                });
                // resourceVersion stays set: a concurrent writer makes this a 409.
                self.api
                    .replace(&name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                self.observed = Some((spec, Instant::now()));
                self.held = Some(lease);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn jittered_retry(&self) -> Duration {
        // client-go jitters the acquire retry by up to 20% so candidates spread out.
        let extra = rand::rng().random_range(0.0..0.2);
        self.config.retry_period.mul_f64(1.0 + extra)
    }

    async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "lease acquire attempt failed")
                }
            }
            tokio::time::sleep(self.jittered_retry()).await;
        }
    }

    /// Renews every retry period; returns once renewals failed for renew_deadline.
    async fn keep_renewing(&mut self) -> LeaderElectionError {
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renew.elapsed());
            let attempt = tokio::time::timeout(
                left.max(Duration::from_millis(1)),
                self.try_acquire_or_renew(),
            )
            .await;
            match attempt {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => tracing::warn!(lease = %self.config.name, "lease renewal refused"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "lease renewal failed")
                }
                Err(_) => tracing::warn!(lease = %self.config.name, "lease renewal timed out"),
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                return LeaderElectionError::LostLease {
                    namespace: self.config.namespace.clone(),
                    name: self.config.name.clone(),
                    identity: self.config.identity.clone(),
                };
            }
        }
    }

    /// Hands the lease back so the next candidate need not wait for expiry.
    async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else {
            return;
        };
        let old = lease.spec.take().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(micro_now()),
            renew_time: Some(micro_now()),
            lease_transitions: old.lease_transitions,
            ..LeaseSpec::default()
        });
        let name = self.config.name.clone();
        match tokio::time::timeout(
            self.config.renew_deadline,
            self.api.replace(&name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(Ok(_)) => tracing::info!(lease = %name, "released leader lease"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, lease = %name, "could not release leader lease")
            }
            Err(_) => tracing::warn!(lease = %name, "releasing leader lease timed out"),
        }
    }
}

/// Waits to acquire the Lease, runs `work` while leading; returns
/// `Err(LostLease)` if renewals fail for longer than `renew_deadline` (the
/// daemon then exits non-zero and is restarted, as upstream). Releases the
/// lease (holderIdentity cleared) when `work` returns — so a daemon's work
/// future should return on SIGTERM/SIGINT for a clean hand-over.
pub async fn run_while_leader<F, Fut>(
    client: kube::Client,
    config: LeaderElectionConfig,
    work: F,
) -> Result<(), LeaderElectionError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut elector = Elector {
        api,
        config,
        observed: None,
        held: None,
    };
    tracing::info!(lease = %elector.config.name, identity = %elector.config.identity, "waiting to acquire leader lease");
    elector.acquire().await;
    tracing::info!(lease = %elector.config.name, identity = %elector.config.identity, "acquired leader lease");
    let work = work();
    let lost = tokio::select! {
        () = work => None,
        err = elector.keep_renewing() => Some(err),
    };
    match lost {
        Some(err) => {
            tracing::error!(error = %err, "leader election lost");
            Err(err)
        }
        None => {
            elector.release().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn missing_lease_is_created() {
        let now = Instant::now();
        assert_eq!(decide(None, "me", now, now, D), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_if_stale() {
        let t0 = Instant::now();
        let s = spec(Some("me"), Some(15));
        assert_eq!(decide(Some(&s), "me", t0, t0 + D * 10, D), Decision::Renew);
    }

    #[test]
    fn empty_holder_is_taken_over_immediately() {
        let t0 = Instant::now();
        assert_eq!(
            decide(Some(&spec(None, Some(15))), "me", t0, t0, D),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec(Some(""), Some(15))), "me", t0, t0, D),
            Decision::TakeOver
        );
    }

    #[test]
    fn live_foreign_lease_waits_until_duration_since_observation() {
        let t0 = Instant::now();
        let s = spec(Some("other"), Some(15));
        assert_eq!(decide(Some(&s), "me", t0, t0, D), Decision::Wait);
        assert_eq!(
            decide(Some(&s), "me", t0, t0 + Duration::from_secs(14), D),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&s), "me", t0, t0 + Duration::from_secs(15), D),
            Decision::TakeOver
        );
    }

    #[test]
    fn record_duration_wins_over_local_default() {
        let t0 = Instant::now();
        let s = spec(Some("other"), Some(3));
        assert_eq!(
            decide(Some(&s), "me", t0, t0 + Duration::from_secs(4), D),
            Decision::TakeOver
        );
        let unset = spec(Some("other"), None);
        assert_eq!(
            decide(Some(&unset), "me", t0, t0 + Duration::from_secs(4), D),
            Decision::Wait
        );
    }

    #[test]
    fn default_identity_has_host_and_suffix() {
        let a = LeaderElectionConfig::new("kube-scheduler");
        let b = LeaderElectionConfig::new("kube-scheduler");
        assert_eq!(a.namespace, "kube-system");
        assert!(
            a.identity
                .starts_with(&format!("{}_", crate::pki::hostname()))
        );
        assert_ne!(a.identity, b.identity);
        assert_eq!(a.lease_duration, Duration::from_secs(15));
        assert_eq!(a.renew_deadline, Duration::from_secs(10));
        assert_eq!(a.retry_period, Duration::from_secs(2));
    }
}
