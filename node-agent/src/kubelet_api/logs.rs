//! Container logs: the CRI log file format, `kubectl logs` options (tail,
//! since, timestamps, limit, follow) and size-based rotation.
//!
//! The runtime writes one record per line:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>`, where `P` marks a partial
//! line whose text continues in the next record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The timestamp exactly as the runtime wrote it.
    pub timestamp: &'a str,
    pub time: DateTime<Utc>,
    pub stream: &'a str,
    /// False for a `P` (partial) record.
    pub full: bool,
    pub text: &'a [u8],
}

/// Parses one line (without its newline); None for garbage.
pub fn parse_line(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let tag = parts.next()?;
    // The tag field may carry more flags separated by ':'; the first is F/P.
    let full = match tag.split(|b| *b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or(b"");
    let time = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    Some(Record {
        timestamp: ts,
        time,
        stream,
        full,
        text,
    })
}

/// What the client asked for (the kubelet API's query parameters).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Records older than this are skipped (sinceSeconds or sinceTime).
    pub since: Option<DateTime<Utc>>,
}

impl Options {
    /// Parses the query string; errors name the bad parameter.
    pub fn from_query(q: &super::Query, now: DateTime<Utc>) -> Result<Self, String> {
        let mut o = Options {
            follow: q.flag("follow"),
            previous: q.flag("previous"),
            timestamps: q.flag("timestamps"),
            ..Default::default()
        };
        o.tail_lines = q.uint("tailLines")?;
        o.limit_bytes = q.uint("limitBytes")?;
        if let Some(s) = q.uint("sinceSeconds")? {
            o.since = Some(now - chrono::Duration::seconds(s.min(i64::MAX as u64) as i64));
        }
        if let Some(t) = q.get("sinceTime") {
            let t = DateTime::parse_from_rfc3339(t)
                .map_err(|_| format!("sinceTime: {t:?} is not an RFC 3339 time"))?;
            o.since = Some(t.with_timezone(&Utc));
        }
        Ok(o)
    }
}

/// Renders records into what the client sees, applying `since` and
/// `timestamps`; partial records are joined by simply not ending the line.
fn render(out: &mut Vec<u8>, r: &Record<'_>, opts: &Options) {
    if opts.since.is_some_and(|s| r.time < s) {
        return;
    }
    if opts.timestamps {
        out.extend_from_slice(r.timestamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(r.text);
    if r.full {
        out.push(b'\n');
    }
}

/// Where in `content` output starts so that only the last `n` complete lines
/// (a line is records up to and including an `F`) are shown.
fn tail_start(content: &[u8], n: u64) -> usize {
    if n == 0 {
        return content.len();
    }
    let mut seen = 0u64;
    // Walk line starts from the end; a line ending in an F record closes a
    // log line, so the (n+1)-th such boundary from the end is where we begin.
    let mut end = content.len();
    while end > 0 {
        let start = content[..end.saturating_sub(1)]
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let line = &content[start..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(r) = parse_line(line)
            && r.full
        {
            seen += 1;
            if seen > n {
                return end;
            }
        }
        end = start;
    }
    0
}

/// Renders a whole file's content (everything after `tail_start`).
pub fn render_all(content: &[u8], opts: &Options) -> Vec<u8> {
    let start = opts.tail_lines.map(|n| tail_start(content, n)).unwrap_or(0);
    let mut out = Vec::new();
    for line in content[start..].split(|b| *b == b'\n') {
        if let Some(r) = parse_line(line) {
            render(&mut out, &r, opts);
        }
    }
    out
}

/// Sends the log to `tx` chunk by chunk. With `follow`, keeps reading as the
/// file grows (and across a rotation) until `running` says the container
/// stopped and nothing new arrived, or the client went away.
pub async fn stream(
    path: PathBuf,
    opts: Options,
    tx: mpsc::Sender<Bytes>,
    running: impl Fn() -> futures::future::BoxFuture<'static, bool> + Send,
) {
    let mut budget = opts.limit_bytes.unwrap_or(u64::MAX);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let mut content = Vec::new();
    if file.read_to_end(&mut content).await.is_err() {
        return;
    }
    // Only complete lines are rendered; a trailing fragment waits for more.
    let cut = content
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|p| p + 1)
        .unwrap_or(0);
    let mut pending = content.split_off(cut);
    let first = render_all(&content, &opts);
    if !send_limited(&tx, first, &mut budget).await || !opts.follow {
        return;
    }
    let mut pos = file.stream_position().await.unwrap_or(0);
    let mut idle = 0u32;
    let follow_opts = Options {
        tail_lines: None,
        ..opts
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tx.is_closed() {
            return;
        }
        // A rotation renames the file and the runtime opens a new one.
        let len_now = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
        let same = same_file(&file, &path).await;
        if !same || len_now.is_some_and(|l| l < pos) {
            match tokio::fs::File::open(&path).await {
                Ok(f) => {
                    // Drain what is left in the old file first.
                    let mut rest = Vec::new();
                    let _ = file.read_to_end(&mut rest).await;
                    pending.extend_from_slice(&rest);
                    file = f;
                    pos = 0;
                }
                Err(_) => return,
            }
        }
        let mut buf = Vec::new();
        match file.read_to_end(&mut buf).await {
            Ok(0) => {
                idle += 1;
                // Check the container every ~2s of silence.
                if idle.is_multiple_of(10) && !running().await {
                    return;
                }
                continue;
            }
            Ok(n) => {
                idle = 0;
                pos += n as u64;
            }
            Err(_) => return,
        }
        pending.extend_from_slice(&buf);
        let cut = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let rest = pending.split_off(cut);
        let chunk = render_all(&pending, &follow_opts);
        pending = rest;
        if !send_limited(&tx, chunk, &mut budget).await {
            return;
        }
    }
}

async fn same_file(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata().await, tokio::fs::metadata(path).await) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Sends up to the remaining byte budget; false when done (budget spent or
/// client gone).
async fn send_limited(tx: &mpsc::Sender<Bytes>, mut chunk: Vec<u8>, budget: &mut u64) -> bool {
    if chunk.is_empty() {
        return *budget > 0;
    }
    if (chunk.len() as u64) > *budget {
        chunk.truncate(*budget as usize);
    }
    *budget -= chunk.len() as u64;
    tx.send(Bytes::from(chunk)).await.is_ok() && *budget > 0
}

/// Rotation policy (`--container-log-max-size`, `--container-log-max-files`).
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: usize,
}

/// Parses a Kubernetes quantity of bytes as the flag takes it ("10Mi", "500Ki", "1G", "1024").
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Rotates `path` when it grew past the limit: renames it to
/// `<path>.<UTC timestamp>` and removes the oldest rotated files so at most
/// `max_files` files (the live one included) remain. Returns whether it
/// rotated (the caller then asks the runtime to reopen the log).
pub fn rotate_if_needed(
    path: &Path,
    policy: Rotation,
    now: DateTime<Utc>,
) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len < policy.max_size {
        return Ok(false);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rotated = path.with_file_name(format!("{name}.{}", now.format("%Y%m%d-%H%M%S%.f")));
    std::fs::rename(path, &rotated)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = format!("{name}.");
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // Timestamps sort lexically in time order.
    old.sort();
    let keep = policy.max_files.saturating_sub(1).max(1);
    if old.len() > keep {
        for p in &old[..old.len() - keep] {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2024-01-01T00:00:01.000000001Z stdout F one\n\
2024-01-01T00:00:02.5Z stderr F two\n\
2024-01-01T00:00:03Z stdout P thr\n\
2024-01-01T00:00:03.1Z stdout F ee\n\
2024-01-01T00:00:04Z stdout F four\n";

    #[test]
    fn parses_cri_lines() {
        let r = parse_line(b"2024-01-01T00:00:01.000000001Z stdout F hello world").unwrap();
        assert_eq!(r.stream, "stdout");
        assert!(r.full);
        assert_eq!(r.text, b"hello world");
        assert_eq!(r.timestamp, "2024-01-01T00:00:01.000000001Z");
        let r = parse_line(b"2024-01-01T00:00:01Z stderr P part").unwrap();
        assert!(!r.full);
        let r = parse_line(b"2024-01-01T00:00:01Z stdout F").unwrap();
        assert_eq!(r.text, b"");
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2024-01-01T00:00:01Z stdin F x").is_none());
        assert!(parse_line(b"not-a-time stdout F x").is_none());
    }

    #[test]
    fn renders_joins_partials_and_timestamps() {
        let o = Options::default();
        assert_eq!(render_all(LOG, &o), b"one\ntwo\nthree\nfour\n");
        let o = Options {
            timestamps: true,
            ..Default::default()
        };
        let out = String::from_utf8(render_all(LOG, &o)).unwrap();
        assert!(
            out.starts_with("2024-01-01T00:00:01.000000001Z one\n"),
            "{out}"
        );
    }

    #[test]
    fn tail_counts_whole_lines() {
        let o = |n| Options {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(render_all(LOG, &o(1)), b"four\n");
        assert_eq!(render_all(LOG, &o(2)), b"three\nfour\n");
        assert_eq!(render_all(LOG, &o(4)), b"one\ntwo\nthree\nfour\n");
        assert_eq!(render_all(LOG, &o(40)), b"one\ntwo\nthree\nfour\n");
        assert_eq!(render_all(LOG, &o(0)), b"");
    }

    #[test]
    fn since_skips_older_records() {
        let since = DateTime::parse_from_rfc3339("2024-01-01T00:00:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let o = Options {
            since: Some(since),
            ..Default::default()
        };
        assert_eq!(render_all(LOG, &o), b"three\nfour\n");
    }

    #[test]
    fn options_from_query() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = super::super::Query::parse(Some(
            "follow=true&tailLines=5&limitBytes=10&sinceSeconds=30&timestamps=true",
        ));
        let o = Options::from_query(&q, now).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        assert_eq!(o.since.unwrap().to_rfc3339(), "2024-01-01T00:00:30+00:00");
        let q = super::super::Query::parse(Some("tailLines=x"));
        assert!(Options::from_query(&q, now).is_err());
        let q = super::super::Query::parse(Some("sinceTime=2024-01-01T00:00:05Z"));
        let o = Options::from_query(&q, now).unwrap();
        assert_eq!(o.since.unwrap().to_rfc3339(), "2024-01-01T00:00:05+00:00");
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, LOG).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let o = Options {
            limit_bytes: Some(6),
            ..Default::default()
        };
        stream(p, o, tx, || Box::pin(async { false })).await;
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"one\ntw");
    }

    #[tokio::test]
    async fn follow_sees_appended_lines_and_stops_with_the_container() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, b"2024-01-01T00:00:01Z stdout F a\n").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let o = Options {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(stream(p.clone(), o, tx, || Box::pin(async { false })));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a\n"));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2024-01-01T00:00:02Z stdout P b").unwrap();
        f.write_all(b"\n2024-01-01T00:00:02Z stdout F c\n").unwrap();
        drop(f);
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"bc\n"));
        // The container is gone: the stream ends after a quiet spell.
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn sizes_and_rotation() {
        assert_eq!(parse_size("10Mi"), Some(10 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1K"), Some(1000));
        assert_eq!(parse_size("x"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let policy = Rotation {
            max_size: 10,
            max_files: 2,
        };
        let now = Utc::now();
        std::fs::write(&p, b"short").unwrap();
        assert!(!rotate_if_needed(&p, policy, now).unwrap());
        for i in 0..3 {
            std::fs::write(&p, b"long enough content").unwrap();
            let t = now + chrono::Duration::seconds(i);
            assert!(rotate_if_needed(&p, policy, t).unwrap());
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "one rotated file kept besides the live one");
        assert!(!p.exists());
    }
}
