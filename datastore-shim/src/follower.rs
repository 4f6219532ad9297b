//! Keeps this instance in step with others sharing a PostgreSQL or MySQL
//! database: new revisions are announced by PostgreSQL NOTIFY (MySQL has no
//! such thing and is polled), fetched from the log and applied in order.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Dialect, NOTIFY_CHANNEL};
use crate::endpoint::Endpoint;
use crate::shared::Shared;

/// MySQL poll period; also PostgreSQL's safety net when a notification is missed.
const POLL: Duration = Duration::from_millis(50);
const PG_SAFETY_POLL: Duration = Duration::from_millis(500);

pub async fn run(shared: Arc<Shared>, endpoint: Endpoint) {
    let shutdown = shared.shutdown.clone();
    let mut listener = None;
    let mut backoff = k3rs_common::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shared.db.dialect == Dialect::Postgres
            && listener.is_none()
            && let Endpoint::Postgres(url) = &endpoint
        {
            match sqlx::postgres::PgListener::connect(url).await {
                Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling instead"),
                },
                Err(e) => tracing::warn!(error = %e, "LISTEN connection failed; polling instead"),
            }
        }
        let wait = async {
            match listener.as_mut() {
                Some(l) => !matches!(
                    tokio::time::timeout(PG_SAFETY_POLL, l.recv()).await,
                    Ok(Err(_))
                ),
                None => {
                    tokio::time::sleep(POLL).await;
                    true
                }
            }
        };
        let listener_ok = tokio::select! {
            ok = wait => ok,
            _ = crate::shared::stopped(shutdown.clone()) => return,
        };
        if !listener_ok {
            listener = None;
        }
        match catch_up(&shared).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read new revisions from the database");
                backoff.wait().await;
            }
        }
    }
}

async fn catch_up(shared: &Arc<Shared>) -> Result<(), crate::Error> {
    let (db_rev, db_compacted, _) = shared.db.meta().await?;
    let (local, compacted) = {
        let s = shared.read();
        (s.committed_rev(), s.compacted_rev())
    };
    if db_rev > local {
        let rows = shared.db.rows_after(&shared.db.pool, local).await?;
        // Only revisions up to what meta said are complete; later ones are re-read next time.
        let rows = rows
            .into_iter()
            .filter(|r| r.entry.rev.main <= db_rev)
            .collect();
        shared.apply_remote(rows, db_rev, db_compacted);
    } else if db_compacted > compacted {
        shared.apply_remote(Vec::new(), local, db_compacted);
    }
    Ok(())
}
