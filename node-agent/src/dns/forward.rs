//! Names outside the cluster go to the host's resolvers, through a small
//! TTL-respecting cache so the ndots:5 search-path storms of pods cost one
//! upstream round trip per name and TTL.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Longest a forwarded answer is kept (K3s's Corefile says `cache 30`).
const MAX_TTL: u32 = 30;
/// How long an answer without TTL information (no records, no SOA) is kept.
const NEGATIVE_TTL: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf, on port 53. Loopback stubs (such as
/// systemd-resolved's 127.0.0.53) are skipped when the file also names real
/// servers; `own` (the cluster DNS address) is always skipped so we never
/// forward to ourselves.
pub fn upstreams_from_resolv_conf(text: &str, own: &[IpAddr]) -> Vec<SocketAddr> {
    let all: Vec<IpAddr> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                // Drop a zone suffix (`fe80::1%eth0`); link-local is rare here.
                .and_then(|ip| ip.split('%').next())
                .and_then(|ip| ip.parse().ok())
        })
        .filter(|ip| !own.contains(ip))
        .collect();
    let real: Vec<IpAddr> = all.iter().copied().filter(|ip| !ip.is_loopback()).collect();
    let chosen = if real.is_empty() { all } else { real };
    chosen
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Reads `path`; when it only names loopback stubs, systemd-resolved's list
/// of real upstreams is preferred (kubelet does the same).
pub fn host_upstreams(path: &Path, own: &[IpAddr]) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let found = upstreams_from_resolv_conf(&text, own);
    if found.iter().all(|a| a.ip().is_loopback()) {
        let resolved = Path::new("/run/systemd/resolve/resolv.conf");
        if let Ok(t) = std::fs::read_to_string(resolved) {
            let real = upstreams_from_resolv_conf(&t, own);
            if !real.is_empty() {
                return real;
            }
        }
    }
    found
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: String,
    qtype: u16,
    qclass: u16,
}

struct Entry {
    response: Message,
    stored: Instant,
    ttl: u32,
}

/// A bounded answer cache.
struct Cache {
    entries: HashMap<CacheKey, Entry>,
    capacity: usize,
}

impl Cache {
    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Message> {
        let e = self.entries.get(key)?;
        let age =
            u32::try_from(now.saturating_duration_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        if age >= e.ttl {
            self.entries.remove(key);
            return None;
        }
        let mut m = e.response.clone();
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    fn put(&mut self, key: CacheKey, response: Message, now: Instant) {
        let Some(ttl) = cache_ttl(&response) else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        // Clients must not keep an answer longer than we do.
        let mut response = response;
        for r in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            r.ttl = r.ttl.min(ttl);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.stored).as_secs() < u64::from(e.ttl)
            });
            if self.entries.len() >= self.capacity {
                // Full of live entries: drop the one closest to expiring.
                let victim = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored + Duration::from_secs(e.ttl.into()))
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            Entry {
                response,
                stored: now,
                ttl,
            },
        );
    }
}

/// How long a response may be cached: the smallest TTL of its records
/// (negative answers: the SOA's, RFC 2308), capped; `None` for failures.
fn cache_ttl(m: &Message) -> Option<u32> {
    let code = m.metadata.response_code;
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return None;
    }
    if m.metadata.truncation {
        return None;
    }
    let ttl = if m.answers.is_empty() {
        m.authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(NEGATIVE_TTL)
    } else {
        m.answers.iter().map(|r| r.ttl).min().unwrap_or(0)
    };
    let ttl = ttl.min(MAX_TTL);
    (ttl > 0).then_some(ttl)
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream DNS server is configured")]
    NoUpstream,
    #[error("upstream {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {0}: timed out")]
    Timeout(SocketAddr),
    #[error("upstream {addr}: {message}")]
    Bad { addr: SocketAddr, message: String },
}

/// Forwards queries to the upstreams in order, caching answers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, cache_size: usize) -> Self {
        Self {
            upstreams,
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                capacity: cache_size,
            }),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    fn key(request: &Message) -> Option<CacheKey> {
        request.queries.first().map(|q| CacheKey {
            name: q.name().to_ascii().to_ascii_lowercase(),
            qtype: u16::from(q.query_type()),
            qclass: u16::from(q.query_class()),
        })
    }

    /// The cached answer to `request`, without going upstream.
    pub fn cached(&self, request: &Message) -> Option<Message> {
        let key = Self::key(request)?;
        let mut m = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key, Instant::now())?;
        m.metadata.id = request.metadata.id;
        m.queries = request.queries.clone();
        Some(m)
    }

    /// The answer to `request` (its id and question echoed), from the
    /// cache or the first upstream that answers.
    pub async fn resolve(&self, request: &Message) -> Result<Message, ForwardError> {
        if let Some(m) = self.cached(request) {
            return Ok(m);
        }
        let key = Self::key(request);
        let mut last = ForwardError::NoUpstream;
        for &addr in &self.upstreams {
            match exchange(addr, request).await {
                Ok(mut m) => {
                    if let Some(k) = key {
                        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(
                            k,
                            m.clone(),
                            Instant::now(),
                        );
                    }
                    m.metadata.id = request.metadata.id;
                    m.queries = request.queries.clone();
                    return Ok(m);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding a DNS query");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Asks upstream for `name`/`qtype` (used to chase CNAMEs out of the zone).
    pub async fn lookup(
        &self,
        name: hickory_proto::rr::Name,
        qtype: RecordType,
    ) -> Result<Message, ForwardError> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(name, qtype));
        self.resolve(&m).await
    }
}

/// One query to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(addr: SocketAddr, request: &Message) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { addr, source };
    let mut query = request.clone();
    // Our own id: the client's may collide with another client's in flight.
    query.metadata.id = rand_id();
    let bytes = query.to_vec().map_err(|e| ForwardError::Bad {
        addr,
        message: e.to_string(),
    })?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| ForwardError::NoUpstream)?
    } else {
        "[::]:0".parse().map_err(|_| ForwardError::NoUpstream)?
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(addr).await.map_err(io)?;
    sock.send(&bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let answer = loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| ForwardError::Timeout(addr))?
            .map_err(io)?;
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        // Ignore stray datagrams (spoofing or late answers).
        if m.metadata.id == query.metadata.id
            && m.metadata.message_type == MessageType::Response
            && m.queries == query.queries
        {
            break m;
        }
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    tokio::time::timeout(TIMEOUT, exchange_tcp(addr, &bytes, query.metadata.id))
        .await
        .map_err(|_| ForwardError::Timeout(addr))?
}

async fn exchange_tcp(addr: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, ForwardError> {
    let io = |source| ForwardError::Io { addr, source };
    let mut s = TcpStream::connect(addr).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| ForwardError::Bad {
        addr,
        message: "query too large".into(),
    })?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.map_err(io)?;
    let m = Message::from_vec(&buf).map_err(|e| ForwardError::Bad {
        addr,
        message: e.to_string(),
    })?;
    if m.metadata.id != id {
        return Err(ForwardError::Bad {
            addr,
            message: "answer to another query".into(),
        });
    }
    Ok(m)
}

fn rand_id() -> u16 {
    // Message::query() draws a random id; reuse it rather than another RNG.
    Message::query().metadata.id
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record};

    #[test]
    fn resolv_conf_skips_stubs_and_ourselves() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver 10.43.0.10\noptions edns0\nsearch lan\n";
        let own = ["10.43.0.10".parse().unwrap()];
        assert_eq!(
            upstreams_from_resolv_conf(text, &own),
            vec!["10.0.0.2:53".parse::<SocketAddr>().unwrap()]
        );
        // Only a stub: keep it (the agent runs in the host network, where it answers).
        assert_eq!(
            upstreams_from_resolv_conf("nameserver 127.0.0.53\n", &own),
            vec!["127.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(upstreams_from_resolv_conf("garbage\nnameserver x\n", &own).is_empty());
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::response(1, OpCode::Query);
        let name = Name::from_ascii("example.org.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(name, ttl, RData::A(A::new(1, 2, 3, 4))));
        m
    }

    fn key(n: &str) -> CacheKey {
        CacheKey {
            name: n.into(),
            qtype: 1,
            qclass: 1,
        }
    }

    #[test]
    fn cache_respects_ttls_and_capacity() {
        let t0 = Instant::now();
        let mut c = Cache {
            entries: HashMap::new(),
            capacity: 2,
        };
        c.put(key("a"), answer(10), t0);
        let hit = c.get(&key("a"), t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(hit.answers[0].ttl, 6, "TTL counts down");
        assert!(c.get(&key("a"), t0 + Duration::from_secs(10)).is_none());
        // Long TTLs are capped, in the records handed out too.
        c.put(key("b"), answer(3600), t0);
        assert_eq!(c.get(&key("b"), t0).unwrap().answers[0].ttl, 30);
        assert!(c.get(&key("b"), t0 + Duration::from_secs(31)).is_none());
        // Bounded: a third live entry evicts the one expiring first.
        c.put(key("a"), answer(10), t0);
        c.put(key("b"), answer(20), t0);
        c.put(key("c"), answer(20), t0);
        assert_eq!(c.entries.len(), 2);
        assert!(c.get(&key("a"), t0).is_none());
        // Failures are not cached; negative answers for the SOA's minimum.
        let mut fail = answer(10);
        fail.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&fail), None);
        let mut nx = Message::response(1, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("org.").unwrap();
        nx.add_authority(Record::from_rdata(
            zone.clone(),
            900,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 1, 1, 1, 7)),
        ));
        assert_eq!(cache_ttl(&nx), Some(7));
    }
}
