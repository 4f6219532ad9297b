//! Prometheus metrics of the datastore.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<MethodLabels, Counter>,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub revision: Gauge,
    pub watchers: Gauge,
    pub db_up: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            revision: Gauge::default(),
            watchers: Gauge::default(),
            db_up: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("k3rs_datastore");
        r.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            m.requests.clone(),
        );
        r.register(
            "write_batch_size",
            "Requests group-committed per database transaction",
            m.batch_size.clone(),
        );
        r.register(
            "write_batch_seconds",
            "Time to evaluate and commit one write batch",
            m.commit_seconds.clone(),
        );
        r.register("revision", "Current committed revision", m.revision.clone());
        r.register("watchers", "Active watches", m.watchers.clone());
        r.register(
            "database_up",
            "1 when the last database transaction succeeded",
            m.db_up.clone(),
        );
        m
    }

    pub fn observe_batch(&self, n: usize, took: Duration) {
        self.batch_size.observe(n as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn count(&self, method: &'static str, code: tonic::Code) {
        let code = match code {
            tonic::Code::Ok => "OK",
            tonic::Code::InvalidArgument => "InvalidArgument",
            tonic::Code::NotFound => "NotFound",
            tonic::Code::OutOfRange => "OutOfRange",
            tonic::Code::FailedPrecondition => "FailedPrecondition",
            tonic::Code::Unavailable => "Unavailable",
            _ => "Other",
        };
        self.requests
            .get_or_create(&MethodLabels { method, code })
            .inc();
    }
}
