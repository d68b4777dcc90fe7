//! 100 MB `google.api.HttpBody` streams through the real gateway process,
//! down and up, with its resident memory read from /proc before, during
//! and after: the bytes pass through one message at a time, so the
//! gateway's peak stays within a few MB of idle however big the body is.

mod stream_upstream;
mod support;

use bytes::Bytes;

use stream_upstream::*;

const SIZE: usize = 100 << 20;
/// How far above idle the gateway's peak may go while 100 MB pass.
const MAX_GROWTH_KB: u64 = 16 << 10;

/// (VmRSS, VmHWM) of `pid` in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_100_mb_download_and_upload_keep_the_gateways_memory_near_idle() {
    let upstream = spawn_stream_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.toml");
    let toml = streaming_toml(upstream.addr, "stream_timeout = \"10m\"")
        .replace("{proto}", support::PROTO_DIR)
        .replace(
            "[server]\n",
            "[limits]\nmax_body_bytes = 65536\n\n[server]\n",
        );
    std::fs::write(&config, toml).expect("write config");
    let (gateway, listen) = support::start_binary(&config).await;
    let pid = gateway.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    // Warm up the paths once so their one-time allocations are idle memory.
    let warm = http
        .get(format!("{base}/v1/download?size=1000000&chunk=65536"))
        .send()
        .await
        .expect("warm up");
    assert_eq!(warm.bytes().await.expect("body").len(), 1_000_000);
    let (idle, _) = memory_kb(pid);
    // The peak from here on is this test's: start-up's is forgotten
    // (proc(5): writing 5 to clear_refs resets VmHWM).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");

    let mut response = http
        .get(format!("{base}/v1/download?size={SIZE}&chunk=65536"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut checksum = FNV_OFFSET;
    let mut expected = FNV_OFFSET;
    let mut peak_during = 0;
    while let Some(chunk) = response.chunk().await.expect("read") {
        let pattern: Vec<u8> = (received..received + chunk.len())
            .map(|i| (i % 251) as u8)
            .collect();
        expected = fnv1a(expected, &pattern);
        checksum = fnv1a(checksum, &chunk);
        received += chunk.len();
        if received % (10 << 20) < chunk.len() {
            peak_during = peak_during.max(memory_kb(pid).0);
        }
    }
    assert_eq!(received, SIZE);
    assert_eq!(checksum, expected, "the bytes arrived intact and in order");
    let (after_download, peak_download) = memory_kb(pid);

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let uploaded = tokio::spawn(async move {
        let mut sent = FNV_OFFSET;
        let piece = Bytes::from((0..65536).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        for _ in 0..SIZE / piece.len() {
            sent = fnv1a(sent, &piece);
            if tx.send(piece.clone()).await.is_err() {
                break;
            }
        }
        sent
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let summary: serde_json::Value = http
        .post(format!("{base}/v1/upload"))
        .header("content-type", "application/x-test-bytes")
        .body(reqwest::Body::wrap_stream(frames))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("summary");
    let sent = uploaded.await.expect("sender");
    assert_eq!(summary["bytes"], SIZE.to_string());
    assert_eq!(summary["checksum"], sent.to_string());
    let (after_upload, peak) = memory_kb(pid);
    println!(
        "gateway RSS: idle {idle} kB, during download {peak_during} kB, after download {after_download} kB (peak {peak_download} kB), after upload {after_upload} kB (peak {peak} kB)"
    );
    assert!(
        peak.saturating_sub(idle) < MAX_GROWTH_KB,
        "the gateway's peak RSS grew {} kB over idle ({idle} kB) while 200 MB passed",
        peak - idle
    );
}
