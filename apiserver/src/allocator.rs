//! Service ClusterIP and NodePort allocation.
//!
//! Every allocated address or port is one etcd key, created with
//! `create_revision == 0` so two API servers (or two requests) can never hand
//! out the same one, and the allocation survives restarts because it lives in
//! the datastore, not in memory. Addresses use upstream's IPAddress object
//! under `/registry/ipaddresses/<ip>`; node ports use
//! `/registry/servicenodeports/<port>` with the same parent reference.
//!
//! A request that allocates and then fails to store its Service rolls its
//! keys back; a crash in between leaves a key without a Service, which the
//! repair loop frees once it has seen it orphaned twice in a row.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use k3rs_apimachinery::{FieldError, FieldErrors};
use rand::Rng;
use serde_json::{Value, json};

use crate::store::{Cas, Store, StoreError};

pub const IP_PREFIX: &str = "/registry/ipaddresses/";
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";
const SERVICE_PREFIX: &str = "/registry/services/specs/";

/// Parses `a.b.c.d/n` (IPv4).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    (bits <= 30).then_some((ip, bits))
}

/// The first usable address of the range: the `kubernetes` Service's IP.
pub fn first_ip(cidr: &str) -> Option<Ipv4Addr> {
    ServiceRanges::new(cidr, (30000, 32767)).map(|r| r.ip_at(0))
}

/// The configured ranges: usable addresses are network+1 ..= broadcast-1.
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    network: u32,
    /// Number of usable addresses.
    ips: u32,
    cidr: String,
    ports: (u16, u16),
}

impl ServiceRanges {
    pub fn new(cidr: &str, ports: (u16, u16)) -> Option<Self> {
        let (ip, bits) = parse_cidr(cidr)?;
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        let size = 1u64 << (32 - u32::from(bits));
        Some(Self {
            network: u32::from(ip) & mask,
            ips: u32::try_from(size - 2).ok()?,
            cidr: format!("{}/{bits}", Ipv4Addr::from(u32::from(ip) & mask)),
            ports,
        })
    }

    fn ip_at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1 + offset)
    }

    fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.network && n <= self.network + self.ips
    }

    fn contains_port(&self, p: i64) -> bool {
        p >= i64::from(self.ports.0) && p <= i64::from(self.ports.1)
    }
}

/// Which Service an allocation belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

impl Owner {
    fn of(svc: &Value) -> Self {
        let m = &svc["metadata"];
        Self {
            namespace: m["namespace"].as_str().unwrap_or("").into(),
            name: m["name"].as_str().unwrap_or("").into(),
        }
    }

    fn parent_ref(&self) -> Value {
        json!({"group": "", "resource": "services", "namespace": self.namespace, "name": self.name})
    }

    fn matches(&self, record: &[u8]) -> bool {
        serde_json::from_slice::<Value>(record).is_ok_and(|v| {
            let p = &v["spec"]["parentRef"];
            p["namespace"] == self.namespace.as_str() && p["name"] == self.name.as_str()
        })
    }
}

pub fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

pub fn port_key(port: i64) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

/// The record stored for an address: an upstream-shaped IPAddress.
pub fn ip_record(ip: Ipv4Addr, owner: &Owner) -> Vec<u8> {
    let v = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": ip.to_string(), "labels": {
            "ipaddress.kubernetes.io/ip-family": "IPv4",
            "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
        "spec": {"parentRef": owner.parent_ref()},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn port_record(port: i64, owner: &Owner) -> Vec<u8> {
    let v = json!({"port": port, "spec": {"parentRef": owner.parent_ref()}});
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Why an allocation failed.
#[derive(Debug)]
pub enum AllocError {
    /// The request asked for something it cannot have (422 with these causes).
    Invalid(FieldErrors),
    /// Nothing left in the range.
    Full(&'static str),
    Store(StoreError),
}

impl From<StoreError> for AllocError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What one Service write allocated and what it gives up. Call
/// [`Claims::rollback`] when the write fails and [`Claims::commit`] when it
/// lands.
#[derive(Debug, Default)]
pub struct Claims {
    taken: Vec<String>,
    freed: Vec<String>,
    owner: Option<Owner>,
}

impl Claims {
    /// Undo the keys this request created.
    pub async fn rollback(self, store: &Store) {
        for key in &self.taken {
            release(store, key, self.owner.as_ref()).await;
        }
    }

    /// Free what the stored Service no longer uses.
    pub async fn commit(self, store: &Store) {
        for key in &self.freed {
            release(store, key, self.owner.as_ref()).await;
        }
    }
}

/// Deletes an allocation key if it still belongs to `owner` (a failure only
/// leaks the key until the repair loop frees it).
async fn release(store: &Store, key: &str, owner: Option<&Owner>) {
    let Ok(Some(kv)) = store.get(key).await else {
        return;
    };
    if owner.is_some_and(|o| !o.matches(&kv.value)) {
        return;
    }
    if let Err(e) = store.delete(key, kv.mod_rev).await {
        tracing::warn!(key, error = %e, "releasing a service allocation failed; repair will free it");
    }
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc["spec"]["type"].as_str() != Some("ExternalName") && svc["spec"]["clusterIP"] != "None"
}

fn wants_node_ports(svc: &Value) -> bool {
    match svc["spec"]["type"].as_str() {
        Some("NodePort") => true,
        Some("LoadBalancer") => svc["spec"]["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

fn wants_health_check_port(svc: &Value) -> bool {
    svc["spec"]["type"] == "LoadBalancer" && svc["spec"]["externalTrafficPolicy"] == "Local"
}

/// The cluster IP a Service holds (or asks for).
fn cluster_ip(svc: &Value) -> Option<&str> {
    let spec = &svc["spec"];
    spec["clusterIP"]
        .as_str()
        .or_else(|| spec["clusterIPs"][0].as_str())
        .filter(|s| !s.is_empty() && *s != "None")
}

/// Node ports a stored Service holds.
fn node_ports(svc: &Value) -> BTreeSet<i64> {
    let mut out: BTreeSet<i64> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .filter(|p| *p > 0)
        .collect();
    if let Some(h) = svc["spec"]["healthCheckNodePort"]
        .as_i64()
        .filter(|p| *p > 0)
    {
        out.insert(h);
    }
    out
}

/// Every allocation key a stored Service should hold.
fn keys_of(svc: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if needs_cluster_ip(svc)
        && let Some(ip) = cluster_ip(svc).and_then(|s| s.parse::<Ipv4Addr>().ok())
    {
        keys.push(ip_key(ip));
    }
    keys.extend(node_ports(svc).into_iter().map(port_key));
    keys
}

/// Allocates what a Service being created or updated needs: its cluster IP
/// and node ports, honouring ones the client asked for. `old` is the stored
/// Service on update. With `dry_run` nothing is written, but a requested
/// address or port that is taken is still an error.
pub async fn allocate(
    store: &Store,
    ranges: &ServiceRanges,
    svc: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<Claims, AllocError> {
    let owner = Owner::of(svc);
    let mut claims = Claims {
        owner: Some(owner.clone()),
        ..Claims::default()
    };
    match allocate_into(store, ranges, svc, old, dry_run, &owner, &mut claims).await {
        Ok(()) => Ok(claims),
        Err(e) => {
            claims.rollback(store).await;
            Err(e)
        }
    }
}

async fn allocate_into(
    store: &Store,
    ranges: &ServiceRanges,
    svc: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
    owner: &Owner,
    claims: &mut Claims,
) -> Result<(), AllocError> {
    if !svc["spec"].is_object() {
        // Validation reports a missing spec; there is nothing to allocate.
        return Ok(());
    }
    let old_ip = old
        .filter(|o| needs_cluster_ip(o))
        .and_then(cluster_ip)
        .map(str::to_string);
    let mut errs = FieldErrors::new();

    // The cluster IP.
    if needs_cluster_ip(svc) {
        match cluster_ip(svc).map(str::to_string) {
            Some(ip) if Some(&ip) == old_ip.as_ref() => {}
            Some(ip) => match ip.parse::<Ipv4Addr>() {
                Ok(addr) if ranges.contains_ip(addr) => {
                    if !take(store, &ip_key(addr), ip_record(addr, owner), dry_run, claims).await? {
                        errs.push(FieldError::invalid(
                            "spec.clusterIPs",
                            json!([ip]),
                            format!("failed to allocate IP {ip}: provided IP is already allocated"),
                        ));
                    }
                }
                // A malformed address is validation's to report.
                Err(_) => {}
                Ok(_) => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    json!([ip]),
                    format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        ranges.cidr
                    ),
                )),
            },
            None => {
                let ip = allocate_ip(store, ranges, owner, dry_run, claims).await?;
                let spec = &mut svc["spec"];
                spec["clusterIP"] = json!(ip.to_string());
                spec["clusterIPs"] = json!([ip.to_string()]);
            }
        }
    } else if svc["spec"]["clusterIP"] == "None" {
        svc["spec"]["clusterIPs"] = json!(["None"]);
    }
    if let Some(ip) = old_ip
        && cluster_ip(svc) != Some(ip.as_str())
        && let Ok(addr) = ip.parse()
    {
        claims.freed.push(ip_key(addr));
    }

    // Node ports: one per service port (the same number may serve TCP and UDP).
    let held = old.map(node_ports).unwrap_or_default();
    let mut kept = BTreeSet::new();
    if wants_node_ports(svc) {
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let requested = svc["spec"]["ports"][i]["nodePort"]
                .as_i64()
                .filter(|p| *p != 0);
            let port = match requested {
                Some(p) if held.contains(&p) || kept.contains(&p) => p,
                Some(p) if !ranges.contains_port(p) => {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        json!(p),
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {}-{}",
                            ranges.ports.0, ranges.ports.1
                        ),
                    ));
                    continue;
                }
                Some(p) => {
                    if !take(store, &port_key(p), port_record(p, owner), dry_run, claims).await? {
                        errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            json!(p),
                            "provided port is already allocated",
                        ));
                        continue;
                    }
                    p
                }
                None => {
                    let p = allocate_port(store, ranges, owner, dry_run, claims).await?;
                    if let Some(m) = svc
                        .pointer_mut(&format!("/spec/ports/{i}"))
                        .and_then(Value::as_object_mut)
                    {
                        m.insert("nodePort".into(), json!(p));
                    }
                    p
                }
            };
            kept.insert(port);
        }
    } else if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
        // ClusterIP services carry no node ports (upstream clears them).
        for p in ports {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    if wants_health_check_port(svc) {
        let requested = svc["spec"]["healthCheckNodePort"]
            .as_i64()
            .filter(|p| *p != 0);
        match requested {
            Some(p) if held.contains(&p) || kept.contains(&p) => {
                kept.insert(p);
            }
            Some(p) => {
                if ranges.contains_port(p)
                    && take(store, &port_key(p), port_record(p, owner), dry_run, claims).await?
                {
                    kept.insert(p);
                } else {
                    errs.push(FieldError::invalid(
                        "spec.healthCheckNodePort",
                        json!(p),
                        "provided port is already allocated or out of range",
                    ));
                }
            }
            None => {
                let p = allocate_port(store, ranges, owner, dry_run, claims).await?;
                svc["spec"]["healthCheckNodePort"] = json!(p);
                kept.insert(p);
            }
        }
    } else if let Some(spec) = svc["spec"].as_object_mut() {
        spec.remove("healthCheckNodePort");
    }
    claims
        .freed
        .extend(held.difference(&kept).map(|p| port_key(*p)));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(AllocError::Invalid(errs))
    }
}

/// Creates one allocation key; false when someone holds it. A dry run only
/// checks.
async fn take(
    store: &Store,
    key: &str,
    record: Vec<u8>,
    dry_run: bool,
    claims: &mut Claims,
) -> Result<bool, StoreError> {
    if dry_run {
        return Ok(store.get(key).await?.is_none());
    }
    match store.create(key, record).await? {
        Cas::Done(_) => {
            claims.taken.push(key.to_string());
            Ok(true)
        }
        Cas::Failed(_) => Ok(false),
    }
}

/// Random probes first (cheap while the range is sparse), then a scan of
/// the allocated keys for a free one.
async fn allocate_ip(
    store: &Store,
    ranges: &ServiceRanges,
    owner: &Owner,
    dry_run: bool,
    claims: &mut Claims,
) -> Result<Ipv4Addr, AllocError> {
    // Offset 0 is the `kubernetes` Service's; dynamic picks start above it.
    if ranges.ips < 2 {
        return Err(AllocError::Full(
            "failed to allocate a serviceIP: range is full",
        ));
    }
    for _ in 0..16 {
        let off = rand::rng().random_range(1..ranges.ips);
        let ip = ranges.ip_at(off);
        if take(store, &ip_key(ip), ip_record(ip, owner), dry_run, claims).await? {
            return Ok(ip);
        }
    }
    let used = allocated(store, IP_PREFIX).await?;
    for off in 1..ranges.ips {
        let ip = ranges.ip_at(off);
        if !used.contains(&ip.to_string())
            && take(store, &ip_key(ip), ip_record(ip, owner), dry_run, claims).await?
        {
            return Ok(ip);
        }
    }
    Err(AllocError::Full(
        "failed to allocate a serviceIP: range is full",
    ))
}

async fn allocate_port(
    store: &Store,
    ranges: &ServiceRanges,
    owner: &Owner,
    dry_run: bool,
    claims: &mut Claims,
) -> Result<i64, AllocError> {
    let (lo, hi) = (i64::from(ranges.ports.0), i64::from(ranges.ports.1));
    for _ in 0..16 {
        let p = rand::rng().random_range(lo..=hi);
        if !claims.taken.contains(&port_key(p))
            && take(store, &port_key(p), port_record(p, owner), dry_run, claims).await?
        {
            return Ok(p);
        }
    }
    let used = allocated(store, NODE_PORT_PREFIX).await?;
    for p in lo..=hi {
        if !used.contains(&p.to_string())
            && !claims.taken.contains(&port_key(p))
            && take(store, &port_key(p), port_record(p, owner), dry_run, claims).await?
        {
            return Ok(p);
        }
    }
    Err(AllocError::Full(
        "failed to allocate a nodePort: range is full",
    ))
}

/// The names (last key segment) allocated under a prefix.
async fn allocated(store: &Store, prefix: &str) -> Result<BTreeSet<String>, StoreError> {
    let (kvs, _, _) = store.list(prefix, "", 0, 0).await?;
    Ok(kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(prefix).to_string())
        .collect())
}

/// Frees what a deleted Service held.
pub async fn release_service(store: &Store, svc: &Value) {
    let owner = Owner::of(svc);
    for key in keys_of(svc) {
        release(store, &key, Some(&owner)).await;
    }
}

/// Reconciles allocation keys with the stored Services every `period`:
/// records Services that hold an address or port without a key (created
/// before this server, or the `kubernetes` Service), and frees keys no
/// Service uses once they have been seen orphaned, unchanged, twice.
pub async fn run_repair(store: Store, ranges: ServiceRanges, period: Duration) {
    let mut suspects = HashMap::new();
    loop {
        if let Err(e) = repair_pass(&store, &ranges, &mut suspects).await {
            tracing::warn!(error = %e, "service allocation repair failed");
        }
        tokio::time::sleep(period).await;
    }
}

pub async fn repair_pass(
    store: &Store,
    ranges: &ServiceRanges,
    suspects: &mut HashMap<String, i64>,
) -> Result<(), StoreError> {
    // Keys first, Services second: a key created between the two reads
    // belongs to a Service that is then either visible or still in flight
    // (and in flight is why an orphan must be seen twice).
    let (ip_kvs, _, _) = store.list(IP_PREFIX, "", 0, 0).await?;
    let (port_kvs, _, _) = store.list(NODE_PORT_PREFIX, "", 0, 0).await?;
    let (services, _, _) = store.list(SERVICE_PREFIX, "", 0, 0).await?;
    let mut wanted: HashMap<String, Value> = HashMap::new();
    for kv in &services {
        let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        for key in keys_of(&svc) {
            wanted.insert(key, svc.clone());
        }
    }
    let mut next = HashMap::new();
    for kv in ip_kvs.iter().chain(port_kvs.iter()) {
        if wanted.remove(&kv.key).is_some() {
            continue;
        }
        if suspects.get(&kv.key) == Some(&kv.mod_rev) {
            tracing::info!(key = %kv.key, "freeing a service allocation no Service uses");
            store.delete(&kv.key, kv.mod_rev).await?;
        } else {
            next.insert(kv.key.clone(), kv.mod_rev);
        }
    }
    *suspects = next;
    for (key, svc) in wanted {
        let owner = Owner::of(&svc);
        let record = if let Some(ip) = key.strip_prefix(IP_PREFIX) {
            match ip.parse::<Ipv4Addr>() {
                Ok(addr) if ranges.contains_ip(addr) => ip_record(addr, &owner),
                _ => continue,
            }
        } else {
            match key
                .strip_prefix(NODE_PORT_PREFIX)
                .and_then(|p| p.parse().ok())
            {
                Some(p) => port_record(p, &owner),
                None => continue,
            }
        };
        if let Cas::Failed(Some(_)) = store.create(&key, record).await? {
            tracing::warn!(key, service = %format!("{}/{}", owner.namespace, owner.name),
                "a Service uses an address or port allocated to another");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(first_ip("10.43.0.0/16"), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert!(parse_cidr("10.43.0.0").is_none());
        assert!(parse_cidr("nonsense/8").is_none());
        let r = ServiceRanges::new("10.43.7.9/24", (30000, 30001)).unwrap();
        assert_eq!(r.cidr, "10.43.7.0/24");
        assert!(r.contains_ip(Ipv4Addr::new(10, 43, 7, 1)));
        assert!(r.contains_ip(Ipv4Addr::new(10, 43, 7, 254)));
        assert!(!r.contains_ip(Ipv4Addr::new(10, 43, 7, 255)));
        assert!(!r.contains_ip(Ipv4Addr::new(10, 43, 7, 0)));
        assert!(!r.contains_ip(Ipv4Addr::new(10, 43, 8, 1)));
        assert!(r.contains_port(30001) && !r.contains_port(30002) && !r.contains_port(29999));
    }

    #[test]
    fn keys_of_a_service() {
        let svc = json!({"metadata": {"namespace": "d", "name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9", "externalTrafficPolicy": "Local",
                     "healthCheckNodePort": 31000,
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 81, "protocol": "UDP", "nodePort": 30080}]}});
        assert_eq!(
            keys_of(&svc),
            vec![
                "/registry/ipaddresses/10.43.0.9".to_string(),
                "/registry/servicenodeports/30080".into(),
                "/registry/servicenodeports/31000".into()
            ]
        );
        let headless = json!({"spec": {"clusterIP": "None", "ports": []}});
        assert!(keys_of(&headless).is_empty());
        let owner = Owner::of(&svc);
        assert!(owner.matches(&ip_record(Ipv4Addr::new(10, 43, 0, 9), &owner)));
        assert!(
            !Owner {
                namespace: "d".into(),
                name: "t".into()
            }
            .matches(&port_record(1, &owner))
        );
    }
}
