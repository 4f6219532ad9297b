//! The cluster zone: what Services, EndpointSlices and the `NodeHosts` list
//! say, and the pure name → records computation over it. No I/O here; the
//! watchers in `mod.rs` keep a [`Zone`] current and the server asks it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of cluster records, as CoreDNS's kubernetes plugin answers by default.
pub const TTL: u32 = 5;
/// TTL of `NodeHosts` entries (K3s's Corefile sets 60 on its hosts block).
pub const HOSTS_TTL: u32 = 60;
/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port, as SRV records need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Empty for an unnamed port.
    pub name: String,
    /// Lowercase: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
}

/// What DNS needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceEntry {
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: names resolve to the endpoints.
    pub headless: bool,
    /// `type: ExternalName`: a CNAME to this name.
    pub external_name: Option<String>,
    pub ports: Vec<PortEntry>,
    pub publish_not_ready: bool,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

/// What DNS needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceEntry {
    pub ports: Vec<PortEntry>,
    pub endpoints: Vec<EndpointEntry>,
}

/// `(namespace, name)`.
pub type Key = (String, String);

impl ServiceEntry {
    pub fn from_service(svc: &Service) -> Option<(Key, Self)> {
        let ns = svc.metadata.namespace.clone()?;
        let name = svc.metadata.name.clone()?;
        let spec = svc.spec.as_ref()?;
        let ips: Vec<&String> = match &spec.cluster_ips {
            Some(v) if !v.is_empty() => v.iter().collect(),
            _ => spec.cluster_ip.iter().collect(),
        };
        let headless = ips.iter().any(|ip| ip.as_str() == "None");
        let external_name = (spec.type_.as_deref() == Some("ExternalName"))
            .then(|| spec.external_name.clone())
            .flatten()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let entry = ServiceEntry {
            cluster_ips: ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            headless,
            external_name,
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect(),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        };
        Some(((ns, name), entry))
    }
}

impl SliceEntry {
    /// The slice keyed by `(namespace, service)` and its own name.
    pub fn from_slice(slice: &EndpointSlice) -> Option<(Key, String, Self)> {
        let ns = slice.metadata.namespace.clone()?;
        let name = slice.metadata.name.clone()?;
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        let entry = SliceEntry {
            ports: slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect(),
            endpoints: slice
                .endpoints
                .iter()
                .map(|e| EndpointEntry {
                    addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                    // An unknown readiness counts as ready (the API's rule).
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                })
                .collect(),
        };
        Some(((ns, service), name, entry))
    }
}

/// Parses K3s's `NodeHosts` format: `IP name [name...]` per line, `#` comments.
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in words {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let ips = hosts.entry(name).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    hosts
}

/// The outcome of a lookup in the cluster zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// NOERROR with these records (authoritative).
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no records of the type: NOERROR, empty
    /// answer, SOA in authority.
    NoData(Record),
    /// The name does not exist: NXDOMAIN, SOA in authority.
    NxDomain(Record),
    /// Not a cluster name: forward it.
    NotOurs,
}

/// Everything the cluster zone is made of.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no trailing dot (`cluster.local`).
    domain: String,
    pub services: HashMap<Key, ServiceEntry>,
    /// Slices by `(namespace, service)`, then by slice name.
    pub slices: HashMap<Key, BTreeMap<String, SliceEntry>>,
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// SOA serial; bumped on every change so secondaries-style tools see it move.
    pub serial: u32,
}

impl Zone {
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            services: HashMap::new(),
            slices: HashMap::new(),
            hosts: HashMap::new(),
            serial: 1,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn touch(&mut self) {
        self.serial = self.serial.wrapping_add(1);
    }

    pub fn upsert_slice(&mut self, key: Key, name: String, entry: SliceEntry) {
        self.slices.entry(key).or_default().insert(name, entry);
        self.touch();
    }

    pub fn remove_slice(&mut self, key: &Key, name: &str) {
        if let Some(m) = self.slices.get_mut(key) {
            m.remove(name);
            if m.is_empty() {
                self.slices.remove(key);
            }
        }
        self.touch();
    }

    fn soa(&self) -> Record {
        let origin = fqdn(&self.domain);
        let rdata = SOA::new(
            fqdn(&format!("ns.dns.{}", self.domain)),
            fqdn(&format!("hostmaster.{}", self.domain)),
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(origin, TTL, RData::SOA(rdata))
    }

    /// Answers `qname`/`qtype` from the zone.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let name = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        if let Some(found) = self.reverse(&name, qtype) {
            return found;
        }
        if let Some(found) = self.cluster(&name, qtype) {
            return found;
        }
        self.host(&name, qtype)
    }

    /// Names under the cluster domain; `None` for any other name.
    fn cluster(&self, name: &str, qtype: RecordType) -> Option<Lookup> {
        let rest = if name == self.domain {
            ""
        } else {
            name.strip_suffix(&self.domain)?.strip_suffix('.')?
        };
        let labels: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').collect()
        };
        let nodata = || Lookup::NoData(self.soa());
        let nx = || Lookup::NxDomain(self.soa());
        Some(match labels.as_slice() {
            [] => {
                if qtype == RecordType::SOA {
                    Lookup::Answer {
                        answers: vec![self.soa()],
                        additionals: Vec::new(),
                    }
                } else {
                    nodata()
                }
            }
            ["svc"] | ["pod"] => nodata(),
            [ns, "svc"] | [ns, "pod"] => {
                if self.services.keys().any(|(n, _)| n == ns) {
                    nodata()
                } else {
                    nx()
                }
            }
            [svc, ns, "svc"] => self.service(name, ns, svc, qtype),
            [first, svc, ns, "svc"] if first.starts_with('_') => {
                // `_proto.svc...` is an empty non-terminal of the SRV names.
                let protocol = first.trim_start_matches('_');
                match self.services.get(&key(ns, svc)) {
                    Some(s) if s.ports.iter().any(|p| p.protocol == protocol) => nodata(),
                    _ => nx(),
                }
            }
            [host, svc, ns, "svc"] => self.endpoint(name, ns, svc, host, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(name, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [ip, _ns, "pod"] => match pod_ip(ip) {
                Some(ip) => self.address(name, &[ip], qtype, TTL),
                None => nx(),
            },
            _ => nx(),
        })
    }

    fn service(&self, name: &str, ns: &str, svc: &str, qtype: RecordType) -> Lookup {
        let Some(s) = self.services.get(&key(ns, svc)) else {
            return Lookup::NxDomain(self.soa());
        };
        if let Some(target) = &s.external_name {
            return Lookup::Answer {
                answers: vec![Record::from_rdata(
                    fqdn(name),
                    TTL,
                    RData::CNAME(CNAME(fqdn(target))),
                )],
                additionals: Vec::new(),
            };
        }
        if qtype == RecordType::SRV {
            return self.srv_records(name, ns, svc, s, |_| true);
        }
        if s.headless {
            let ips: Vec<IpAddr> = self
                .ready_endpoints(ns, svc, s)
                .flat_map(|(_, e)| e.addresses.iter().copied())
                .fold(Vec::new(), |mut v, ip| {
                    if !v.contains(&ip) {
                        v.push(ip);
                    }
                    v
                });
            return self.address(name, &ips, qtype, TTL);
        }
        self.address(name, &s.cluster_ips, qtype, TTL)
    }

    /// `<hostname>.<svc>.<ns>.svc.<domain>`, or the dashed address of an
    /// endpoint without a hostname, as CoreDNS names them.
    fn endpoint(&self, name: &str, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Lookup {
        let Some(s) = self.services.get(&key(ns, svc)) else {
            return Lookup::NxDomain(self.soa());
        };
        let ips: Vec<IpAddr> = self
            .ready_endpoints(ns, svc, s)
            .flat_map(|(_, e)| {
                e.addresses
                    .iter()
                    .filter(move |ip| endpoint_label(e, **ip) == host)
                    .copied()
            })
            .collect();
        if ips.is_empty() {
            return Lookup::NxDomain(self.soa());
        }
        self.address(name, &ips, qtype, TTL)
    }

    fn srv(
        &self,
        name: &str,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Lookup {
        let Some(s) = self.services.get(&key(ns, svc)) else {
            return Lookup::NxDomain(self.soa());
        };
        let matches = |p: &PortEntry| p.name == port && p.protocol == proto;
        if !s.ports.iter().any(matches) {
            return Lookup::NxDomain(self.soa());
        }
        if qtype != RecordType::SRV && qtype != RecordType::ANY {
            return Lookup::NoData(self.soa());
        }
        self.srv_records(name, ns, svc, s, matches)
    }

    /// SRV records of the service's ports that `want` picks: the service
    /// name as target (ClusterIP), or one per ready endpoint (headless).
    fn srv_records(
        &self,
        name: &str,
        ns: &str,
        svc: &str,
        s: &ServiceEntry,
        want: impl Fn(&PortEntry) -> bool,
    ) -> Lookup {
        let svc_name = format!("{svc}.{ns}.svc.{}", self.domain);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if s.headless {
            for (slice, e) in self.ready_endpoints(ns, svc, s) {
                for p in slice.ports.iter().filter(|p| want(p)) {
                    for ip in &e.addresses {
                        let target = format!("{}.{svc_name}", endpoint_label(e, *ip));
                        answers.push(srv_record(name, p.port, &target));
                        additionals.extend(address_record(&target, *ip, TTL));
                    }
                }
            }
        } else {
            for p in s.ports.iter().filter(|p| want(p)) {
                answers.push(srv_record(name, p.port, &svc_name));
            }
            if !answers.is_empty() {
                for ip in &s.cluster_ips {
                    additionals.extend(address_record(&svc_name, *ip, TTL));
                }
            }
        }
        if answers.is_empty() {
            return Lookup::NoData(self.soa());
        }
        Lookup::Answer {
            answers,
            additionals,
        }
    }

    /// A/AAAA (ANY: both) from `ips`; NODATA for other types or when no
    /// address of the asked family exists.
    fn address(&self, name: &str, ips: &[IpAddr], qtype: RecordType, ttl: u32) -> Lookup {
        let answers: Vec<Record> = ips
            .iter()
            .filter(|ip| match qtype {
                RecordType::A => ip.is_ipv4(),
                RecordType::AAAA => ip.is_ipv6(),
                RecordType::ANY => true,
                _ => false,
            })
            .filter_map(|ip| address_record(name, *ip, ttl))
            .collect();
        if answers.is_empty() {
            Lookup::NoData(self.soa())
        } else {
            Lookup::Answer {
                answers,
                additionals: Vec::new(),
            }
        }
    }

    fn ready_endpoints<'a>(
        &'a self,
        ns: &str,
        svc: &str,
        s: &'a ServiceEntry,
    ) -> impl Iterator<Item = (&'a SliceEntry, &'a EndpointEntry)> + 'a {
        self.slices
            .get(&key(ns, svc))
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|slice| slice.endpoints.iter().map(move |e| (slice, e)))
            .filter(move |(_, e)| e.ready || s.publish_not_ready)
    }

    /// PTR for service and headless endpoint addresses and NodeHosts; any
    /// other reverse name goes upstream (`None` for non-reverse names).
    fn reverse(&self, name: &str, qtype: RecordType) -> Option<Lookup> {
        let ip = parse_reverse(name)?;
        let mut targets: Vec<String> = Vec::new();
        let mut ttl = TTL;
        for ((ns, svc), s) in &self.services {
            if s.cluster_ips.contains(&ip) {
                targets.push(format!("{svc}.{ns}.svc.{}", self.domain));
            }
            if s.headless {
                for (_, e) in self.ready_endpoints(ns, svc, s) {
                    if e.addresses.contains(&ip) {
                        targets.push(format!(
                            "{}.{svc}.{ns}.svc.{}",
                            endpoint_label(e, ip),
                            self.domain
                        ));
                    }
                }
            }
        }
        if targets.is_empty() {
            let mut hosts: Vec<&String> = self
                .hosts
                .iter()
                .filter(|(_, ips)| ips.contains(&ip))
                .map(|(h, _)| h)
                .collect();
            hosts.sort();
            targets.extend(hosts.into_iter().cloned());
            ttl = HOSTS_TTL;
        }
        if targets.is_empty() {
            return Some(Lookup::NotOurs);
        }
        targets.sort();
        targets.dedup();
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return Some(Lookup::NoData(self.soa()));
        }
        Some(Lookup::Answer {
            answers: targets
                .iter()
                .map(|t| Record::from_rdata(fqdn(name), ttl, RData::PTR(PTR(fqdn(t)))))
                .collect(),
            additionals: Vec::new(),
        })
    }

    fn host(&self, name: &str, qtype: RecordType) -> Lookup {
        match self.hosts.get(name) {
            Some(ips) => self.address(name, ips, qtype, HOSTS_TTL),
            None => Lookup::NotOurs,
        }
    }
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// A name from our own (already validated) parts; label errors cannot
/// happen for Kubernetes names, so a bad one degrades to the root.
pub fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn address_record(name: &str, ip: IpAddr, ttl: u32) -> Option<Record> {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Some(Record::from_rdata(fqdn(name), ttl, rdata))
}

fn srv_record(name: &str, port: u16, target: &str) -> Record {
    Record::from_rdata(
        fqdn(name),
        TTL,
        RData::SRV(SRV::new(0, 100, port, fqdn(target))),
    )
}

/// The label an endpoint is known by: its hostname, else its dashed address.
fn endpoint_label(e: &EndpointEntry, ip: IpAddr) -> String {
    match &e.hostname {
        Some(h) if !h.is_empty() => h.clone(),
        _ => dashed(ip),
    }
}

/// `10.244.1.5` → `10-244-1-5`; `fd00::1` → `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address in a pod name (`10-244-1-5`, `fd00--1`).
fn pod_ip(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3
        && let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>()
    {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address of a full `in-addr.arpa` / `ip6.arpa` name.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest
            .split('.')
            .map(|l| l.parse::<u8>().ok())
            .collect::<Option<_>>()?;
        let [d, c, b, a] = octets.as_slice() else {
            return None;
        };
        return Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|l| {
            if l.len() == 1 {
                u8::from_str_radix(l, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed order: the last label pair is the first byte.
        let (lo, hi) = (pair[0], pair[1]);
        bytes[i] = (hi << 4) | lo;
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let mut z = Zone::new("cluster.local");
        z.services.insert(
            key("default", "kubernetes"),
            ServiceEntry {
                cluster_ips: vec!["10.43.0.1".parse().unwrap()],
                ports: vec![PortEntry {
                    name: "https".into(),
                    protocol: "tcp".into(),
                    port: 443,
                }],
                ..Default::default()
            },
        );
        z.services.insert(
            key("db", "pg"),
            ServiceEntry {
                headless: true,
                ports: vec![PortEntry {
                    name: "sql".into(),
                    protocol: "tcp".into(),
                    port: 5432,
                }],
                ..Default::default()
            },
        );
        z.services.insert(
            key("default", "ext"),
            ServiceEntry {
                external_name: Some("example.org".into()),
                ..Default::default()
            },
        );
        z.upsert_slice(
            key("db", "pg"),
            "pg-abc".into(),
            SliceEntry {
                ports: vec![PortEntry {
                    name: "sql".into(),
                    protocol: "tcp".into(),
                    port: 5432,
                }],
                endpoints: vec![
                    EndpointEntry {
                        addresses: vec!["10.244.1.5".parse().unwrap()],
                        hostname: Some("pg-0".into()),
                        ready: true,
                    },
                    EndpointEntry {
                        addresses: vec!["10.244.1.6".parse().unwrap()],
                        hostname: None,
                        ready: true,
                    },
                    EndpointEntry {
                        addresses: vec!["10.244.1.7".parse().unwrap()],
                        hostname: Some("pg-2".into()),
                        ready: false,
                    },
                ],
            },
        );
        z.hosts = parse_hosts("192.168.1.10 node-a\n# comment\n192.168.1.11 node-b node-b.lan\n");
        z
    }

    fn q(z: &Zone, name: &str, t: RecordType) -> Lookup {
        z.lookup(&Name::from_ascii(name).unwrap(), t)
    }

    fn data(l: &Lookup) -> Vec<String> {
        match l {
            Lookup::Answer { answers, .. } => {
                let mut v: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
                v.sort();
                v
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_service() {
        let z = zone();
        let l = q(&z, "kubernetes.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.43.0.1"]);
        let Lookup::Answer { answers, .. } = &l else {
            unreachable!()
        };
        assert_eq!(answers[0].ttl, TTL);
        // Case-insensitive, as DNS is.
        let l = q(&z, "Kubernetes.Default.SVC.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.43.0.1"]);
        // IPv4-only service: AAAA is NODATA, not NXDOMAIN.
        assert!(matches!(
            q(
                &z,
                "kubernetes.default.svc.cluster.local.",
                RecordType::AAAA
            ),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn nxdomain_and_search_path_expansions() {
        let z = zone();
        for name in [
            "nope.default.svc.cluster.local.",
            "kubernetes.default.default.svc.cluster.local.",
            "example.com.default.svc.cluster.local.",
            "example.com.svc.cluster.local.",
            "example.com.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
        ] {
            assert!(
                matches!(q(&z, name, RecordType::A), Lookup::NxDomain(_)),
                "{name}"
            );
        }
        // Names that exist without records of the type.
        for name in [
            "cluster.local.",
            "svc.cluster.local.",
            "default.svc.cluster.local.",
        ] {
            assert!(
                matches!(q(&z, name, RecordType::A), Lookup::NoData(_)),
                "{name}"
            );
        }
        let soa = q(&z, "cluster.local.", RecordType::SOA);
        assert!(
            data(&soa)[0].starts_with("ns.dns.cluster.local."),
            "{soa:?}"
        );
        assert_eq!(
            q(&z, "example.com.", RecordType::A),
            Lookup::NotOurs,
            "other names are forwarded"
        );
    }

    #[test]
    fn headless_service_and_endpoint_names() {
        let z = zone();
        // Ready endpoints only.
        let l = q(&z, "pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.244.1.5", "10.244.1.6"]);
        let l = q(&z, "pg-0.pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.244.1.5"]);
        let l = q(&z, "10-244-1-6.pg.db.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.244.1.6"]);
        assert!(matches!(
            q(&z, "pg-2.pg.db.svc.cluster.local.", RecordType::A),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            q(&z, "pg-0.pg.db.svc.cluster.local.", RecordType::AAAA),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn external_name_is_a_cname() {
        let z = zone();
        for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let l = q(&z, "ext.default.svc.cluster.local.", t);
            assert_eq!(data(&l), ["example.org."]);
        }
    }

    #[test]
    fn srv_for_named_ports() {
        let z = zone();
        let l = q(
            &z,
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            data(&l),
            ["0 100 443 kubernetes.default.svc.cluster.local."]
        );
        let Lookup::Answer { additionals, .. } = &l else {
            unreachable!()
        };
        assert_eq!(additionals.len(), 1);
        let l = q(&z, "_sql._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&l),
            [
                "0 100 5432 10-244-1-6.pg.db.svc.cluster.local.",
                "0 100 5432 pg-0.pg.db.svc.cluster.local.",
            ]
        );
        assert!(matches!(
            q(
                &z,
                "_http._tcp.kubernetes.default.svc.cluster.local.",
                RecordType::SRV
            ),
            Lookup::NxDomain(_)
        ));
        assert!(matches!(
            q(
                &z,
                "_tcp.kubernetes.default.svc.cluster.local.",
                RecordType::SRV
            ),
            Lookup::NoData(_)
        ));
        assert!(matches!(
            q(
                &z,
                "_https._tcp.kubernetes.default.svc.cluster.local.",
                RecordType::A
            ),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn ptr_for_services_endpoints_and_hosts() {
        let z = zone();
        let l = q(&z, "1.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&l), ["kubernetes.default.svc.cluster.local."]);
        let l = q(&z, "5.1.244.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&l), ["pg-0.pg.db.svc.cluster.local."]);
        let l = q(&z, "11.1.168.192.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&l), ["node-b.", "node-b.lan."]);
        assert_eq!(
            q(&z, "9.9.9.9.in-addr.arpa.", RecordType::PTR),
            Lookup::NotOurs
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(parse_reverse(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
    }

    #[test]
    fn pod_names() {
        let z = zone();
        let l = q(&z, "10-244-3-4.anyns.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&l), ["10.244.3.4"]);
        let l = q(&z, "fd00--5.anyns.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(data(&l), ["fd00::5"]);
        assert!(matches!(
            q(&z, "not-an-ip.anyns.pod.cluster.local.", RecordType::A),
            Lookup::NxDomain(_)
        ));
    }

    #[test]
    fn node_hosts() {
        let z = zone();
        assert_eq!(data(&q(&z, "node-a.", RecordType::A)), ["192.168.1.10"]);
        assert_eq!(data(&q(&z, "NODE-B.LAN", RecordType::A)), ["192.168.1.11"]);
        assert!(matches!(
            q(&z, "node-a.", RecordType::AAAA),
            Lookup::NoData(_)
        ));
    }

    #[test]
    fn services_and_slices_from_objects() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.43.5.5", "clusterIPs": ["10.43.5.5", "fd00::5"],
                     "ports": [{"name": "HTTP", "port": 80}, {"port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let (k, e) = ServiceEntry::from_service(&svc).unwrap();
        assert_eq!(k, key("shop", "web"));
        assert_eq!(e.cluster_ips.len(), 2);
        assert_eq!(e.ports[0].name, "http");
        assert_eq!(e.ports[1].protocol, "udp");
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-x", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": false}},
                          {"addresses": ["10.244.0.10"]}],
            "ports": [{"name": "http", "port": 8080}]
        }))
        .unwrap();
        let (k, n, e) = SliceEntry::from_slice(&slice).unwrap();
        assert_eq!((k, n.as_str()), (key("shop", "web"), "web-x"));
        assert!(!e.endpoints[0].ready && e.endpoints[1].ready);
        assert_eq!(e.ports[0].port, 8080);
    }
}
