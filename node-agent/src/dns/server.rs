//! The DNS listener: UDP and TCP on one address, each query answered from
//! the cluster zone or forwarded upstream.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::forward::Forwarder;
use super::records::{Lookup, Zone};
use crate::AbortOnDrop;

/// Classic DNS over UDP without EDNS.
const PLAIN_UDP_LIMIT: usize = 512;
/// What we advertise and honour at most (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;
/// CNAME hops followed inside the zone before giving up.
const MAX_CHASE: usize = 8;
/// UDP queries answered at once; more are dropped (clients retry), so a
/// flood or a dead upstream cannot grow memory without bound.
const MAX_IN_FLIGHT: usize = 1024;
/// An idle TCP client is dropped after this.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers DNS messages.
/// What an answer still needs from an upstream.
enum Pending {
    /// The name is not in the zone and not in the forward cache.
    Forward,
    /// The zone's answer ends in a CNAME pointing out of the zone.
    Chase(Box<Message>, RecordType),
}

pub struct Resolver {
    pub zone: Arc<RwLock<Zone>>,
    pub forwarder: Forwarder,
}

impl Resolver {
    /// The response to the wire message `bytes`; `udp` limits its size
    /// (truncated with TC set when too large). `None`: not worth an answer.
    pub async fn handle(&self, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = match self.parse(bytes) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let response = match self.respond_now(&request) {
            Ok(m) => m,
            Err(pending) => self.respond_upstream(&request, pending).await,
        };
        finish(&request, response, udp)
    }

    /// [`handle`](Self::handle) without waiting: `Some` when the answer
    /// comes from the zone or the forward cache (the hot path the UDP loop
    /// answers inline, with no task per query), `None` when it needs an
    /// upstream.
    pub fn handle_now(&self, bytes: &[u8], udp: bool) -> Option<Option<Vec<u8>>> {
        let request = match self.parse(bytes) {
            Ok(r) => r,
            Err(reply) => return Some(reply),
        };
        let response = self.respond_now(&request).ok()?;
        Some(finish(&request, response, udp))
    }

    /// The request, or the reply for what is not one: FORMERR when at
    /// least the header is readable, silence otherwise and for responses.
    fn parse(&self, bytes: &[u8]) -> Result<Message, Option<Vec<u8>>> {
        let request = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(_) => {
                if bytes.len() < 12 {
                    return Err(None);
                }
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return Err(m.to_vec().ok());
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return Err(None);
        }
        Ok(request)
    }

    /// The answer when nothing has to be asked upstream: errors, the zone
    /// (CNAMEs chased inside it), forward cache hits; otherwise what is
    /// left for an upstream.
    fn respond_now(&self, request: &Message) -> Result<Message, Pending> {
        let id = request.metadata.id;
        if request.metadata.op_code != OpCode::Query {
            return Ok(with_queries(
                Message::error_msg(id, request.metadata.op_code, ResponseCode::NotImp),
                request,
            ));
        }
        let [query] = request.queries.as_slice() else {
            return Ok(with_queries(
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr),
                request,
            ));
        };
        let qtype = query.query_type();
        let mut m = with_queries(Message::response(id, OpCode::Query), request);
        match self.lookup(query.name(), qtype) {
            Lookup::NotOurs => return self.forwarder.cached(request).ok_or(Pending::Forward),
            Lookup::NxDomain(soa) => {
                m.metadata.authoritative = true;
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(soa);
            }
            Lookup::NoData(soa) => {
                m.metadata.authoritative = true;
                m.add_authority(soa);
            }
            Lookup::Answer {
                answers,
                additionals,
            } => {
                m.metadata.authoritative = true;
                m.add_answers(answers);
                m.add_additionals(additionals);
                if qtype != RecordType::CNAME && !self.chase_in_zone(&mut m, qtype) {
                    // The chain leaves the zone: an upstream finishes it.
                    return Err(Pending::Chase(Box::new(m), qtype));
                }
            }
        }
        Ok(m)
    }

    /// Follows a trailing CNAME inside the zone; false when it points out
    /// of the zone (an upstream has to finish it).
    fn chase_in_zone(&self, m: &mut Message, qtype: RecordType) -> bool {
        for _ in 0..MAX_CHASE {
            let Some(target) = last_cname(&m.answers) else {
                return true;
            };
            match self.lookup(&target, qtype) {
                Lookup::Answer { answers, .. } => {
                    m.add_answers(answers);
                }
                Lookup::NotOurs => return false,
                Lookup::NxDomain(_) | Lookup::NoData(_) => return true,
            }
        }
        true
    }

    /// Finishes what [`respond_now`](Self::respond_now) left for an upstream.
    async fn respond_upstream(&self, request: &Message, pending: Pending) -> Message {
        match pending {
            Pending::Chase(mut m, qtype) => {
                self.chase(&mut m, qtype).await;
                *m
            }
            Pending::Forward => match self.forwarder.resolve(request).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "no upstream answer");
                    with_queries(
                        Message::error_msg(
                            request.metadata.id,
                            OpCode::Query,
                            ResponseCode::ServFail,
                        ),
                        request,
                    )
                }
            },
        }
    }

    fn lookup(&self, name: &hickory_proto::rr::Name, qtype: RecordType) -> Lookup {
        self.zone
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(name, qtype)
    }

    /// Follows a trailing CNAME (ExternalName services): inside the zone
    /// from the zone, outside it through the forwarder, so clients get the
    /// addresses in one round trip as from CoreDNS.
    async fn chase(&self, m: &mut Message, qtype: RecordType) {
        for _ in 0..MAX_CHASE {
            let Some(target) = last_cname(&m.answers) else {
                return;
            };
            match self.lookup(&target, qtype) {
                Lookup::Answer { answers, .. } => {
                    m.add_answers(answers);
                }
                Lookup::NotOurs => {
                    if let Ok(up) = self.forwarder.lookup(target, qtype).await {
                        m.add_answers(up.answers);
                    }
                    return;
                }
                Lookup::NxDomain(_) | Lookup::NoData(_) => return,
            }
        }
    }
}

/// The wire answer to `request`: flags copied, EDNS echoed, truncated to
/// the client's UDP size.
fn finish(request: &Message, mut response: Message, udp: bool) -> Option<Vec<u8>> {
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.edns = request.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e
    });
    let limit = match &request.edns {
        Some(e) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        None => PLAIN_UDP_LIMIT,
    };
    let out = response.to_vec().ok()?;
    if udp && out.len() > limit {
        let mut t = response.truncate();
        t.metadata.id = request.metadata.id;
        return t.to_vec().ok();
    }
    Some(out)
}

fn last_cname(answers: &[Record]) -> Option<hickory_proto::rr::Name> {
    match answers.last().map(|r| &r.data) {
        Some(RData::CNAME(c)) => Some(c.0.clone()),
        _ => None,
    }
}

fn with_queries(mut m: Message, request: &Message) -> Message {
    m.queries = request.queries.clone();
    m
}

/// Binds UDP and TCP on `addr`; with port 0, both on the same free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// Serves until the task is dropped.
pub async fn serve(udp: UdpSocket, tcp: TcpListener, resolver: Arc<Resolver>) {
    let udp = Arc::new(udp);
    let tcp_task = tokio::spawn(serve_tcp(tcp, resolver.clone()));
    // Abort the TCP side when this future is dropped.
    let _guard = AbortOnDrop(tcp_task.abort_handle());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier replies surface here; keep serving.
                tracing::debug!(error = %e, "DNS UDP receive");
                continue;
            }
        };
        // Zone answers and cache hits are ready at once: answered here,
        // without a task, an allocation or a permit per query.
        if let Some(reply) = resolver.handle_now(&buf[..n], true) {
            if let Some(out) = reply
                && let Err(e) = udp.send_to(&out, peer).await
            {
                tracing::debug!(%peer, error = %e, "DNS UDP reply");
            }
            continue;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "DNS overloaded; dropping a query");
            continue;
        };
        let bytes = buf[..n].to_vec();
        let udp = udp.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(out) = resolver.handle(&bytes, true).await
                && let Err(e) = udp.send_to(&out, peer).await
            {
                tracing::debug!(%peer, error = %e, "DNS UDP reply");
            }
        });
    }
}

async fn serve_tcp(tcp: TcpListener, resolver: Arc<Resolver>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "DNS TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let resolver = resolver.clone();
        conns.spawn(async move {
            if let Err(e) = serve_conn(stream, &resolver).await {
                tracing::debug!(%peer, error = %e, "DNS TCP connection");
            }
        });
    }
}

async fn serve_conn(mut s: TcpStream, resolver: &Resolver) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            // Idle, closed or broken: done with this client.
            _ => return Ok(()),
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let Some(out) = resolver.handle(&buf, false).await else {
            continue;
        };
        let Ok(n) = u16::try_from(out.len()) else {
            continue;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        s.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::records::{PortEntry, ServiceEntry};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn resolver() -> Resolver {
        let mut z = Zone::new("cluster.local");
        z.services.insert(
            ("default".into(), "kubernetes".into()),
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
            ("default".into(), "alias".into()),
            ServiceEntry {
                external_name: Some("kubernetes.default.svc.cluster.local".into()),
                ..Default::default()
            },
        );
        // Many endpoints so a full answer exceeds 512 bytes.
        z.services.insert(
            ("default".into(), "big".into()),
            ServiceEntry {
                headless: true,
                ..Default::default()
            },
        );
        z.upsert_slice(
            ("default".into(), "big".into()),
            "big-1".into(),
            crate::dns::records::SliceEntry {
                ports: vec![],
                endpoints: (0..60)
                    .map(|i| crate::dns::records::EndpointEntry {
                        addresses: vec![format!("10.244.0.{i}").parse().unwrap()],
                        hostname: None,
                        ready: true,
                    })
                    .collect(),
            },
        );
        Resolver {
            zone: Arc::new(RwLock::new(z)),
            forwarder: Forwarder::new(vec![], 16),
        }
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    async fn ask(r: &Resolver, name: &str, t: RecordType, edns: bool) -> Message {
        let out = r.handle(&query(name, t, edns), true).await.unwrap();
        Message::from_vec(&out).unwrap()
    }

    #[tokio::test]
    async fn wire_answers() {
        let r = resolver();
        let m = ask(
            &r,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            false,
        )
        .await;
        assert_eq!(m.metadata.id, 4242);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data.to_string(), "10.43.0.1");
        assert_eq!(m.queries.len(), 1);

        let m = ask(&r, "nope.default.svc.cluster.local.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        let m = ask(
            &r,
            "kubernetes.default.svc.cluster.local.",
            RecordType::AAAA,
            true,
        )
        .await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.edns.is_some());

        // An in-zone CNAME is followed.
        let m = ask(&r, "alias.default.svc.cluster.local.", RecordType::A, false).await;
        let kinds: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(kinds, [RecordType::CNAME, RecordType::A]);

        // No upstream: other names fail with SERVFAIL, not silence.
        let m = ask(&r, "example.org.", RecordType::A, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn large_udp_answers_are_truncated() {
        let r = resolver();
        let m = ask(&r, "big.default.svc.cluster.local.", RecordType::A, false).await;
        assert!(m.metadata.truncation && m.answers.is_empty());
        let m = ask(&r, "big.default.svc.cluster.local.", RecordType::A, true).await;
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        let full = r
            .handle(
                &query("big.default.svc.cluster.local.", RecordType::A, false),
                false,
            )
            .await
            .unwrap();
        assert_eq!(Message::from_vec(&full).unwrap().answers.len(), 60);
    }

    #[tokio::test]
    async fn garbage_gets_formerr_or_nothing() {
        let r = resolver();
        assert!(r.handle(&[1], true).await.is_none());
        let mut junk = vec![0x12, 0x34];
        junk.extend_from_slice(&[0xff; 20]);
        let out = r.handle(&junk, true).await.unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    /// A tiny deterministic PRNG (xorshift64*), so failures replay.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Valid queries the mutations start from: every kind the zone answers,
    /// plus names outside it (forwarded; no upstream here, so SERVFAIL).
    fn seeds() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for (name, t) in [
            ("kubernetes.default.svc.cluster.local.", RecordType::A),
            ("kubernetes.default.svc.cluster.local.", RecordType::AAAA),
            (
                "_https._tcp.kubernetes.default.svc.cluster.local.",
                RecordType::SRV,
            ),
            ("big.default.svc.cluster.local.", RecordType::A),
            ("alias.default.svc.cluster.local.", RecordType::A),
            ("nope.default.svc.cluster.local.", RecordType::A),
            ("1.0.43.10.in-addr.arpa.", RecordType::PTR),
            ("cluster.local.", RecordType::SOA),
            ("example.org.", RecordType::A),
        ] {
            v.push(query(name, t, false));
            v.push(query(name, t, true));
        }
        v
    }

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut p = seed.to_vec();
        for _ in 0..=rng.below(4) {
            match rng.below(6) {
                // Flip a bit.
                0 if !p.is_empty() => {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
                // Overwrite a byte (counts, lengths, label bytes).
                1 if !p.is_empty() => {
                    let i = rng.below(p.len());
                    p[i] = rng.next() as u8;
                }
                // Truncate.
                2 => p.truncate(rng.below(p.len() + 1)),
                // Insert a byte.
                3 => {
                    let i = rng.below(p.len() + 1);
                    p.insert(i, rng.next() as u8);
                }
                // A compression pointer somewhere (loops, forward jumps).
                4 if p.len() > 13 => {
                    let i = 12 + rng.below(p.len() - 13);
                    p[i] = 0xc0 | (rng.next() as u8 & 0x3f);
                    p[i + 1] = rng.next() as u8;
                }
                // Append junk.
                _ => {
                    for _ in 0..rng.below(16) {
                        p.push(rng.next() as u8);
                    }
                }
            }
        }
        p
    }

    /// Checks an answer to `packet`: it parses, echoes the id and carries a
    /// response code that fits what was asked.
    fn check_answer(packet: &[u8], out: &[u8]) {
        let m = Message::from_vec(out)
            .unwrap_or_else(|e| panic!("unparseable answer {out:02x?} to {packet:02x?}: {e}"));
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(&out[..2], &packet[..2], "id echoed for {packet:02x?}");
        match Message::from_vec(packet) {
            // What we could not parse gets FORMERR.
            Err(_) => assert_eq!(m.metadata.response_code, ResponseCode::FormErr),
            Ok(q) if q.metadata.op_code != OpCode::Query => {
                assert_eq!(m.metadata.response_code, ResponseCode::NotImp)
            }
            Ok(q) if q.queries.len() != 1 => {
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr)
            }
            Ok(_) => assert!(
                matches!(
                    m.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain | ResponseCode::ServFail
                ),
                "{:?} for {packet:02x?}",
                m.metadata.response_code
            ),
        }
    }

    #[tokio::test]
    async fn fuzzed_packets_never_panic_and_get_fitting_answers() {
        let r = resolver();
        let seeds = seeds();
        let mut rng = Rng(0x6b33_7273_646e_7321);
        let (mut answered, mut formerr) = (0, 0);
        for case in 0..100_000 {
            let packet = if case % 4 == 0 {
                // Pure noise, mostly header-sized or a little more.
                let len = rng.below(64);
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            } else {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed)
            };
            for udp in [true, false] {
                let reply = r.handle(&packet, udp).await;
                // The inline path the UDP loop takes agrees whenever it answers.
                if let Some(now) = r.handle_now(&packet, udp) {
                    assert_eq!(now, reply, "{packet:02x?}");
                }
                let Some(out) = reply else {
                    // Silence only for what cannot be answered: too short
                    // for a header, or not a query.
                    let short = packet.len() < 12;
                    let not_query = Message::from_vec(&packet)
                        .is_ok_and(|m| m.metadata.message_type != MessageType::Query);
                    assert!(short || not_query, "no answer to {packet:02x?}");
                    continue;
                };
                if udp {
                    assert!(out.len() <= usize::from(EDNS_PAYLOAD), "{packet:02x?}");
                }
                check_answer(&packet, &out);
                answered += 1;
                if out[3] & 0x0f == 1 {
                    formerr += 1;
                }
            }
        }
        // The mix really reached both the parser's error path and the zone.
        assert!(
            answered > 100_000 && formerr > 10_000,
            "{answered} {formerr}"
        );
    }

    #[tokio::test]
    async fn garbage_over_udp_does_not_stop_the_server() {
        let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let at = udp.local_addr().unwrap();
        let server = tokio::spawn(serve(udp, tcp, Arc::new(resolver())));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(at).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let valid = query(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            false,
        );
        let mut rng = Rng(7);
        for round in 0..50 {
            // Garbage: empty, shorter than a header, a truncated query, noise.
            let junk: Vec<u8> = match round % 4 {
                0 => vec![],
                1 => vec![0xab],
                2 => valid[..valid.len() - 3].to_vec(),
                _ => (0..rng.below(300) + 12).map(|_| rng.next() as u8).collect(),
            };
            sock.send(&junk).await.unwrap();
            sock.send(&valid).await.unwrap();
            // Answers to the junk (FORMERR) may come first; the valid one must come.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: no answer to the valid query"))
                    .unwrap();
                let m = Message::from_vec(&buf[..n]).unwrap();
                if m.metadata.id == 4242 && m.metadata.response_code == ResponseCode::NoError {
                    assert_eq!(m.answers[0].data.to_string(), "10.43.0.1");
                    break;
                }
                // Only junk with a whole header is worth an answer.
                assert!(
                    n >= 12 && junk.len() >= 12,
                    "round {round}: an answer to {junk:02x?}: {m:?}"
                );
            }
        }
        server.abort();
    }
}
