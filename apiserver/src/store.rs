//! Object storage through the etcd v3 API (k3rs-datastore or a real etcd),
//! with the key/transaction conventions of DESIGN.md §5: creates are
//! `create_revision == 0 → put`, updates and deletes compare `mod_revision`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("storage request timed out")]
    Timeout,
    #[error("revision {0} has been compacted")]
    Compacted(i64),
}

/// One stored key.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_rev: i64,
}

/// The outcome of a conditional write: the new revision, or what is there now.
pub enum Cas {
    Done(i64),
    Failed(Option<Kv>),
}

#[derive(Clone)]
pub struct Store {
    client: Client,
}

pub struct EtcdTls {
    pub ca_file: std::path::PathBuf,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

fn kv_of(kv: &etcd_client::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_rev: kv.mod_revision(),
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| {
            if e.to_string()
                .contains("required revision has been compacted")
            {
                StoreError::Compacted(0)
            } else {
                StoreError::Etcd(e)
            }
        }),
        Err(_) => Err(StoreError::Timeout),
    }
}

impl Store {
    pub async fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10));
        if let Some(t) = tls {
            let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
            let mut o = TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca_file)));
            if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
                o = o.identity(etcd_client::Identity::from_pem(read(c), read(k)));
            }
            opts = opts.with_tls(o);
        }
        let client = timed(Client::connect(endpoints, Some(opts))).await?;
        Ok(Self { client })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The current revision of the whole store (a cheap read of one absent key).
    pub async fn current_rev(&self) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        let r = timed(c.get("/k3rs-rev-probe", Some(GetOptions::new().with_count_only()))).await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let mut c = self.client.clone();
        let r = timed(c.get(key, None)).await?;
        Ok(r.kvs().first().map(kv_of))
    }

    /// Keys from `start` (inclusive) up to the end of `prefix`, at `revision`
    /// (0 = now). Returns the page, whether more remain, and the read revision.
    pub async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: i64,
    ) -> Result<(Vec<Kv>, bool, i64), StoreError> {
        let mut c = self.client.clone();
        let end = prefix_end(prefix);
        let mut opts = GetOptions::new().with_range(end).with_limit(limit);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let from = if start.is_empty() { prefix } else { start };
        let r = timed(c.get(from, Some(opts))).await?;
        let rev = r.header().map_or(0, |h| h.revision());
        Ok((r.kvs().iter().map(kv_of).collect(), r.more(), rev))
    }

    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<Cas, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.cas(txn).await
    }

    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<Cas, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        self.cas(txn).await
    }

    pub async fn delete(&self, key: &str, expected: i64) -> Result<Cas, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::delete(key, None)])
            .or_else([TxnOp::get(key, None)]);
        self.cas(txn).await
    }

    async fn cas(&self, txn: Txn) -> Result<Cas, StoreError> {
        let mut c = self.client.clone();
        let r = timed(c.txn(txn)).await?;
        if r.succeeded() {
            return Ok(Cas::Done(r.header().map_or(0, |h| h.revision())));
        }
        let current = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(kv_of),
            _ => None,
        });
        Ok(Cas::Failed(current))
    }
}

/// The end of the key range that has `prefix` as its prefix.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
