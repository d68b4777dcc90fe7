//! etcd discovery through etcd's v3 JSON gateway (see
//! docs/decisions/0002-etcd-discovery.md): read every key under a prefix at
//! one revision, then watch the prefix from the next revision, so no change
//! falls between the two. A lost watch (etcd restarted, history compacted,
//! network) keeps the last set and starts over, with back-off, on the next
//! configured etcd endpoint.
//!
//! Everything etcd sends is bounded: the bytes of one response, the number
//! of keys kept and the length of a value.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::uri::{Authority, Uri};
use serde::Deserialize;
use tokio::sync::watch;

use super::{Endpoints, FailureLog, publish, wait_unless_unwatched};
use crate::backoff::Backoff;

/// An `etcd = { endpoints, prefix }` upstream, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// etcd client URLs (`http://host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// Every key under this prefix is one endpoint.
    pub prefix: String,
    /// The scheme a value written as a URL must have: the upstream's.
    pub scheme: String,
    /// Most keys kept; more are ignored (and logged).
    pub max_endpoints: usize,
    /// Longest value accepted as an address.
    pub max_value_bytes: usize,
    /// Largest response (the range read, or one watch message) read from etcd.
    pub max_response_bytes: usize,
    /// How long connecting, the range read and the watch's creation may take.
    pub timeout: Duration,
    /// First delay before re-syncing after a failure.
    pub backoff_initial: Duration,
    /// Longest delay between re-syncs.
    pub backoff_max: Duration,
}

/// Starts the watching task (see [`super::Discovery::watch`]).
pub(super) fn watch(config: EtcdConfig, upstream: &str) -> watch::Receiver<Option<Endpoints>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(follow(config, FailureLog::new(upstream, "etcd"), tx));
    rx
}

/// Syncs and watches until every receiver is gone.
async fn follow(
    config: EtcdConfig,
    mut failures: FailureLog,
    tx: watch::Sender<Option<Endpoints>>,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut turn = 0;
    loop {
        let base = &config.endpoints[turn % config.endpoints.len()];
        // A client per session: no pooled connection to a lost etcd is reused.
        let outcome = match client(&config) {
            Ok(client) => {
                let session = Session {
                    client: &client,
                    config: &config,
                    base,
                };
                tokio::select! {
                    outcome = session.run(&tx, &mut failures, &mut backoff) => outcome,
                    () = tx.closed() => return,
                }
            }
            Err(reason) => Err(reason),
        };
        let Err(reason) = outcome;
        failures.failed(&format!("{base}: {reason}"));
        turn += 1;
        if !wait_unless_unwatched(&tx, backoff.next_delay()).await {
            return;
        }
    }
}

fn client(config: &EtcdConfig) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(config.timeout)
        // etcd is asked directly, never through a proxy from the environment.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// One range read and the watch that follows it, on one etcd endpoint.
struct Session<'a> {
    client: &'a reqwest::Client,
    config: &'a EtcdConfig,
    base: &'a str,
}

impl Session<'_> {
    /// Runs until the watch is lost; returns why.
    async fn run(
        &self,
        tx: &watch::Sender<Option<Endpoints>>,
        failures: &mut FailureLog,
        backoff: &mut Backoff,
    ) -> Result<Infallible, String> {
        let (revision, mut keys) = self.range().await?;
        publish(tx, keys.addresses());
        let mut watch = self.watch(revision + 1).await?;
        failures.succeeded();
        backoff.reset();
        loop {
            let response = watch.next().await?;
            if response.canceled || response.compact_revision.0 > 0 {
                return Err(format!(
                    "watch cancelled by etcd (compacted at {}): {}",
                    response.compact_revision.0, response.cancel_reason
                ));
            }
            if !response.events.is_empty() {
                keys.apply(response.events, self.config);
                publish(tx, keys.addresses());
            }
        }
    }

    /// Every key under the prefix (at most `max_endpoints`), and the
    /// revision they were read at.
    async fn range(&self) -> Result<(i64, Keys), String> {
        let (key, range_end) = prefix_range(&self.config.prefix);
        let request = serde_json::json!({
            "key": BASE64.encode(key),
            "range_end": BASE64.encode(range_end),
            "limit": self.config.max_endpoints,
        });
        let response = self
            .post("/v3/kv/range", &request)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| format!("range read: {e}"))?;
        let mut response = success(response).await?;
        let body = read_bounded(&mut response, self.config.max_response_bytes).await?;
        let range: RangeResponse =
            serde_json::from_slice(&body).map_err(|e| format!("range answer: {e}"))?;
        if range.more {
            tracing::warn!(
                prefix = %self.config.prefix,
                max_endpoints = self.config.max_endpoints,
                "etcd holds more keys under the prefix than max_endpoints; the first ones are used"
            );
        }
        let mut keys = Keys::default();
        keys.apply(
            range.kvs.into_iter().map(|kv| Event { delete: false, kv }),
            self.config,
        );
        Ok((range.header.revision.0, keys))
    }

    /// Opens a watch of the prefix from `revision` and waits for etcd to
    /// confirm it.
    async fn watch(&self, revision: i64) -> Result<WatchStream, String> {
        let (key, range_end) = prefix_range(&self.config.prefix);
        let request = serde_json::json!({ "create_request": {
            "key": BASE64.encode(key),
            "range_end": BASE64.encode(range_end),
            "start_revision": revision,
        }});
        let opened = async {
            let response = self
                .post("/v3/watch", &request)
                .send()
                .await
                .map_err(|e| format!("watch: {e}"))?;
            let response = success(response).await?;
            let mut stream = WatchStream {
                response,
                buffer: Vec::new(),
                max_bytes: self.config.max_response_bytes,
            };
            let first = stream.next().await?;
            if !first.created {
                return Err("etcd did not confirm the watch".to_string());
            }
            Ok(stream)
        };
        tokio::time::timeout(self.config.timeout, opened)
            .await
            .map_err(|_| format!("watch not confirmed within {:?}", self.config.timeout))?
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }
}

/// The keys under the prefix and their addresses.
#[derive(Debug, Default)]
struct Keys(BTreeMap<Vec<u8>, Authority>);

impl Keys {
    /// Applies puts and deletes, within `max_endpoints`; a value that is not
    /// an address takes its key out of the set.
    fn apply(&mut self, events: impl IntoIterator<Item = Event>, config: &EtcdConfig) {
        let mut ignored = Vec::new();
        for event in events {
            let key = match BASE64.decode(&event.kv.key) {
                Ok(key) => key,
                Err(e) => {
                    ignored.push(format!("key {:?} is not base64: {e}", event.kv.key));
                    continue;
                }
            };
            if event.delete {
                self.0.remove(&key);
                continue;
            }
            match address(&event.kv.value, config) {
                Ok(_) if self.0.len() >= config.max_endpoints && !self.0.contains_key(&key) => {
                    ignored.push(format!(
                        "{}: more than max_endpoints = {} keys",
                        String::from_utf8_lossy(&key),
                        config.max_endpoints
                    ));
                }
                Ok(authority) => {
                    self.0.insert(key, authority);
                }
                Err(reason) => {
                    ignored.push(format!("{}: {reason}", String::from_utf8_lossy(&key)));
                    self.0.remove(&key);
                }
            }
        }
        if let Some(first) = ignored.first() {
            tracing::warn!(
                prefix = %config.prefix,
                count = ignored.len(),
                first = %first,
                "etcd keys ignored"
            );
        }
    }

    fn addresses(&self) -> Vec<Authority> {
        self.0.values().cloned().collect()
    }
}

/// A value as an address: `host:port`, or a URL of the upstream's scheme.
fn address(value_base64: &str, config: &EtcdConfig) -> Result<Authority, String> {
    // Base64 is 4 bytes per 3: refuse an oversize value before decoding it.
    if value_base64.len() > config.max_value_bytes.div_ceil(3) * 4 {
        return Err(format!(
            "value longer than max_value_bytes = {}",
            config.max_value_bytes
        ));
    }
    let value = BASE64
        .decode(value_base64)
        .map_err(|e| format!("value is not base64: {e}"))?;
    if value.len() > config.max_value_bytes {
        return Err(format!(
            "value longer than max_value_bytes = {}",
            config.max_value_bytes
        ));
    }
    let text = std::str::from_utf8(&value).map_err(|_| "value is not UTF-8".to_string())?;
    parse_address(text.trim(), &config.scheme)
}

/// `host:port`, or `scheme://host:port` with the upstream's scheme.
fn parse_address(text: &str, scheme: &str) -> Result<Authority, String> {
    let authority = if text.contains("://") {
        let uri: Uri = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
        if uri.scheme_str() != Some(scheme) {
            return Err(format!("{text:?}: the upstream's scheme is {scheme}://"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("{text:?}: an address has no path"));
        }
        uri.authority()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no host"))?
    } else {
        text.parse::<Authority>()
            .map_err(|e| format!("{text:?}: {e}"))?
    };
    if authority.port_u16().is_none() {
        return Err(format!("{text:?} has no port"));
    }
    Ok(authority)
}

/// etcd's `[key, range_end)` for every key that starts with `prefix`: the
/// prefix with its last byte below 0xff incremented (and what follows it
/// dropped); `\0` (to the end of the keyspace) if there is none.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let key = prefix.as_bytes().to_vec();
    let mut end = key.clone();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (key, end);
        }
    }
    (key, vec![0])
}

/// The response, if etcd answered 2xx; otherwise its status and the start
/// of its body as the error.
async fn success(mut response: reqwest::Response) -> Result<reqwest::Response, String> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.chunk().await.ok().flatten().unwrap_or_default();
    Err(format!(
        "etcd answered {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(512)])
    ))
}

/// The whole body, failing past `max_bytes`.
async fn read_bounded(
    response: &mut reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("read: {e}"))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(format!("answer larger than {max_bytes} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A watch's response body: one JSON message per line.
struct WatchStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    max_bytes: usize,
}

impl WatchStream {
    /// The next message, or why the watch is over.
    async fn next(&mut self) -> Result<WatchResponse, String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message: WatchMessage =
                    serde_json::from_slice(&line).map_err(|e| format!("watch message: {e}"))?;
                return match (message.result, message.error) {
                    (Some(result), None) => Ok(result),
                    (_, error) => Err(format!("watch error: {}", error.unwrap_or_default())),
                };
            }
            if self.buffer.len() > self.max_bytes {
                return Err(format!(
                    "watch message larger than {} bytes",
                    self.max_bytes
                ));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Err("etcd closed the watch".to_string()),
                Err(e) => return Err(format!("watch lost: {e}")),
            }
        }
    }
}

/// `POST /v3/kv/range`'s answer (the fields used).
#[derive(Debug, Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<KeyValue>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct Header {
    revision: Int64,
}

/// A key and its value, both base64.
#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

/// One line of `POST /v3/watch`'s streamed answer.
#[derive(Debug, Deserialize)]
struct WatchMessage {
    result: Option<WatchResponse>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResponse {
    created: bool,
    canceled: bool,
    cancel_reason: String,
    compact_revision: Int64,
    events: Vec<Event>,
}

/// A put (etcd leaves the default `PUT` type out) or a delete.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type", default, deserialize_with = "is_delete")]
    delete: bool,
    kv: KeyValue,
}

fn is_delete<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(String::deserialize(d)? == "DELETE")
}

/// An int64, which the gateway writes as a JSON string.
#[derive(Debug, Default, Clone, Copy)]
struct Int64(i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Int64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(i64),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(Int64(n)),
            Either::Text(text) => text.parse().map(Int64).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_endpoints: usize) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/services/bookstore/".into(),
            scheme: "http".into(),
            max_endpoints,
            max_value_bytes: 64,
            max_response_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }

    fn put(key: &str, value: &str) -> Event {
        Event {
            delete: false,
            kv: KeyValue {
                key: BASE64.encode(key),
                value: BASE64.encode(value),
            },
        }
    }

    fn texts(keys: &Keys) -> Vec<String> {
        keys.addresses().iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        assert_eq!(prefix_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
    }

    #[test]
    fn values_are_addresses_or_urls_of_the_upstream_scheme() {
        assert_eq!(
            parse_address("10.0.0.1:50051", "http").expect("ok"),
            "10.0.0.1:50051"
        );
        assert_eq!(
            parse_address("http://b.internal:50051/", "http").expect("ok"),
            "b.internal:50051"
        );
        for bad in [
            "https://b:1",
            "b.internal",
            "http://b:1/x",
            "not an address",
        ] {
            assert!(parse_address(bad, "http").is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_stay_within_max_endpoints_and_bad_values_leave_the_set() {
        let config = config(2);
        let mut keys = Keys::default();
        keys.apply(
            [put("/s/a", "127.0.0.1:1"), put("/s/b", "127.0.0.1:2")],
            &config,
        );
        keys.apply([put("/s/c", "127.0.0.1:3")], &config);
        assert_eq!(
            texts(&keys),
            ["127.0.0.1:1", "127.0.0.1:2"],
            "third key over the limit"
        );
        keys.apply([put("/s/b", "127.0.0.1:22")], &config);
        assert_eq!(
            texts(&keys),
            ["127.0.0.1:1", "127.0.0.1:22"],
            "a kept key may change"
        );
        keys.apply([put("/s/a", &"x".repeat(100))], &config);
        assert_eq!(texts(&keys), ["127.0.0.1:22"], "oversize value");
        let delete = Event {
            delete: true,
            kv: KeyValue {
                key: BASE64.encode("/s/b"),
                value: String::new(),
            },
        };
        keys.apply([delete, put("/s/c", "127.0.0.1:3")], &config);
        assert_eq!(texts(&keys), ["127.0.0.1:3"]);
    }

    #[test]
    fn watch_lines_parse_as_the_gateway_writes_them() {
        let line = r#"{"result":{"header":{"revision":"3"},"events":[{"type":"DELETE","kv":{"key":"L3N2Yy9h","mod_revision":"3"}},{"kv":{"key":"L3N2Yy9i","value":"MTI3LjAuMC4xOjE="}}]}}"#;
        let message: WatchMessage = serde_json::from_str(line).expect("parse");
        let result = message.result.expect("result");
        assert!(result.events[0].delete);
        assert!(!result.events[1].delete);
        let compacted =
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5"}}"#;
        let message: WatchMessage = serde_json::from_str(compacted).expect("parse");
        assert_eq!(message.result.expect("result").compact_revision.0, 5);
    }
}
