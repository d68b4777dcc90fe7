//! DNS discovery against a real DNS server on 127.0.0.1:0 (UDP), started
//! here, whose answer and TTL each test changes: `Discovery::watch` follows
//! the answer on its TTL clamped to `dns_refresh_min`/`dns_refresh_max`,
//! and a failed or empty answer keeps the last set.
//!
//! Time is real (the resolver's sockets are), with short refresh bounds;
//! tests wait on events (a query reaching the server, the receiver
//! changing) under generous overall bounds.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use protogate::upstream::Discovery;
use protogate::upstream::discovery::Endpoints;
use protogate::upstream::discovery::dns::DnsConfig;
use support::{
    Reply, Scripted, client, endpoint_calls, endpoint_texts, everything_toml, pool, spawn_gateway,
    spawn_scripted_on, wait_for_endpoints,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

const NAME: &str = "bookstore.test";
const PORT: u16 = 50051;
/// Bound on any one wait for an event; far above every refresh bound used.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the server answers for `NAME`.
#[derive(Debug, Clone)]
enum Answer {
    /// These addresses (A and AAAA as fits), with this TTL.
    Records(Vec<IpAddr>, u32),
    /// SERVFAIL.
    ServFail,
}

/// A DNS server on 127.0.0.1:0 that answers every A/AAAA question with the
/// current [`Answer`] and reports each A question it gets.
struct DnsServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    queries: mpsc::UnboundedReceiver<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    async fn start(answer: Answer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("addr");
        let answer = Arc::new(Mutex::new(answer));
        let (seen, queries) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(socket, answer.clone(), seen));
        DnsServer {
            addr,
            answer,
            queries,
            task,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    /// Forgets the queries seen so far.
    fn forget_queries(&mut self) {
        while self.queries.try_recv().is_ok() {}
    }

    /// When the next A question arrived.
    async fn next_query(&mut self) -> Instant {
        tokio::time::timeout(PATIENCE, self.queries.recv())
            .await
            .expect("the resolver asked again in time")
            .expect("server running")
    }

    fn config(&self, min: Duration, max: Duration) -> Discovery {
        Discovery::Dns(DnsConfig {
            name: NAME.into(),
            port: PORT,
            refresh_min: min,
            refresh_max: max,
            servers: vec![self.addr],
        })
    }
}

async fn serve(
    socket: UdpSocket,
    answer: Arc<Mutex<Answer>>,
    seen: mpsc::UnboundedSender<Instant>,
) {
    let mut buf = vec![0; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let Some(question) = query.queries.first().cloned() else {
            continue;
        };
        if question.query_type() == RecordType::A {
            let _ = seen.send(Instant::now());
        }
        let current = answer.lock().expect("lock").clone();
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_query(question.clone());
        match current {
            Answer::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
            Answer::Records(ips, ttl) => {
                for ip in ips {
                    let rdata = match (ip, question.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(question.name().clone(), ttl, rdata));
                }
            }
        }
        let bytes = reply.to_vec().expect("encode answer");
        let _ = socket.send_to(&bytes, peer).await;
    }
}

fn ips(texts: &[&str]) -> Vec<IpAddr> {
    texts.iter().map(|t| t.parse().expect("ip")).collect()
}

/// Waits until the receiver holds `expected` (as authority texts).
async fn wait_for(rx: &mut watch::Receiver<Option<Endpoints>>, expected: &[&str]) {
    wait_for_endpoints(rx, expected, PATIENCE).await;
}

#[tokio::test]
async fn every_address_becomes_an_endpoint_and_a_changed_answer_is_followed_despite_a_long_ttl() {
    let server = DnsServer::start(Answer::Records(
        ips(&["127.0.0.3", "127.0.0.2", "::1"]),
        3600,
    ))
    .await;
    let discovery = server.config(Duration::from_millis(100), Duration::from_millis(300));
    let mut rx = discovery.watch("bookstore");
    wait_for(
        &mut rx,
        &["127.0.0.2:50051", "127.0.0.3:50051", "[::1]:50051"],
    )
    .await;

    // The hour-long TTL is clamped to dns_refresh_max (300 ms): without the
    // clamp the new answer would not be seen before PATIENCE runs out.
    server.set(Answer::Records(ips(&["127.0.0.4"]), 3600));
    wait_for(&mut rx, &["127.0.0.4:50051"]).await;
}

#[tokio::test]
async fn lookups_wait_for_the_ttl_but_never_less_than_dns_refresh_min() {
    let mut server = DnsServer::start(Answer::Records(ips(&["127.0.0.2"]), 0)).await;
    let min = Duration::from_millis(300);
    let discovery = server.config(min, Duration::from_secs(10));
    let _rx = discovery.watch("bookstore");

    // TTL 0: each lookup waits dns_refresh_min after the answer, so the
    // server never sees two questions closer than that.
    let mut previous = server.next_query().await;
    for _ in 0..3 {
        let at = server.next_query().await;
        assert!(
            at - previous >= min,
            "asked again after {:?}",
            at - previous
        );
        previous = at;
    }

    // TTL 1 s (between the bounds): the next lookup waits for it to run out.
    server.set(Answer::Records(ips(&["127.0.0.2"]), 1));
    let asked = server.next_query().await;
    let next = server.next_query().await;
    // The answer expires one TTL after the resolver sent the question; the
    // server saw that question a little later, hence the small allowance.
    assert!(
        next - asked >= Duration::from_millis(950),
        "asked again after {:?} with a 1 s TTL",
        next - asked
    );
}

#[tokio::test]
async fn servfail_and_empty_answers_keep_the_last_set_until_a_good_answer() {
    let mut server = DnsServer::start(Answer::Records(ips(&["127.0.0.2", "127.0.0.3"]), 0)).await;
    let discovery = server.config(Duration::from_millis(100), Duration::from_millis(200));
    let mut rx = discovery.watch("bookstore");
    wait_for(&mut rx, &["127.0.0.2:50051", "127.0.0.3:50051"]).await;
    rx.mark_unchanged();

    for bad in [Answer::ServFail, Answer::Records(Vec::new(), 0)] {
        server.set(bad.clone());
        server.forget_queries();
        // Three questions asked after the switch: even if the resolver
        // asks twice within one lookup, a whole lookup got the bad answer
        // and was handled before the next one began.
        for _ in 0..3 {
            server.next_query().await;
        }
        assert!(
            !rx.has_changed().expect("discovery running"),
            "{bad:?} replaced the set with {:?}",
            endpoint_texts(&rx.borrow())
        );
        assert_eq!(
            endpoint_texts(&rx.borrow()),
            ["127.0.0.2:50051", "127.0.0.3:50051"]
        );
    }

    server.set(Answer::Records(ips(&["127.0.0.5"]), 0));
    wait_for(&mut rx, &["127.0.0.5:50051"]).await;
}

#[tokio::test]
async fn the_resolver_stops_when_every_receiver_is_dropped() {
    let mut server = DnsServer::start(Answer::Records(ips(&["127.0.0.2"]), 0)).await;
    let discovery = server.config(Duration::from_millis(50), Duration::from_millis(50));
    let rx = discovery.watch("bookstore");
    server.next_query().await;
    server.next_query().await;
    drop(rx);
    // At most the lookup in flight when the receiver went away finishes;
    // then no question for many refresh periods (40 × 50 ms).
    server.forget_queries();
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        server.next_query().await;
        server.next_query().await
    })
    .await;
    assert!(
        quiet.is_err(),
        "still resolving after the receiver was dropped"
    );
}

/// Two scripted upstreams on 127.0.0.2 and 127.0.0.3 with one port, as
/// the instances behind one DNS name are (a port taken on one of the
/// addresses: another is tried).
async fn two_upstreams_on_one_port() -> (Scripted, Scripted, u16) {
    for _ in 0..10 {
        let first = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = first.local_addr().expect("addr").port();
        let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await else {
            continue;
        };
        return (
            spawn_scripted_on(first, pool(), Reply::Echo),
            spawn_scripted_on(second, pool(), Reply::Echo),
            port,
        );
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3 after 10 tries");
}

/// Sends one GET through the gateway; it must succeed.
async fn get(base: &str, i: usize) {
    let answer = client()
        .get(format!("{base}/v1/echo?string_value=n{i}"))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 200, "request {i}");
}

#[tokio::test]
async fn traffic_moves_to_the_addresses_of_a_changed_dns_answer() {
    let (a, b, port) = two_upstreams_on_one_port().await;
    let server = DnsServer::start(Answer::Records(ips(&["127.0.0.2"]), 3600)).await;
    let toml = everything_toml(a.addr, "").replace(
        &format!("endpoints = [\"http://{}\"]", a.addr),
        &format!(
            "dns = \"{NAME}:{port}\"\ndns_servers = [\"{}\"]\n\
             dns_refresh_min = \"100ms\"\ndns_refresh_max = \"300ms\"",
            server.addr
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    let mut sent = 0;
    for _ in 0..10 {
        get(&gateway.base, sent).await;
        sent += 1;
    }
    assert_eq!(
        (a.call_count(), b.call_count()),
        (10, 0),
        "one address: every call there"
    );

    // Both addresses: the new one gets calls too. Each try is a real call;
    // the hour-long TTL is cut to dns_refresh_max (300 ms), and a few
    // hundred calls take far longer than that.
    server.set(Answer::Records(ips(&["127.0.0.2", "127.0.0.3"]), 3600));
    while b.call_count() == 0 {
        assert!(sent < 2_000, "127.0.0.3 got no call after {sent} requests");
        get(&gateway.base, sent).await;
        sent += 1;
    }

    // Only the new address: once the gateway's endpoints are that one
    // alone, no call goes to the old one.
    server.set(Answer::Records(ips(&["127.0.0.3"]), 3600));
    let only_b = [format!("127.0.0.3:{port}")];
    while !endpoint_calls(&gateway, "echo").keys().eq(only_b.iter()) {
        assert!(
            sent < 4_000,
            "127.0.0.2 still an endpoint after {sent} requests"
        );
        get(&gateway.base, sent).await;
        sent += 1;
    }
    let (a_before, b_before) = (a.call_count(), b.call_count());
    for _ in 0..20 {
        get(&gateway.base, sent).await;
        sent += 1;
    }
    assert_eq!(a.call_count(), a_before, "a departed address got calls");
    assert_eq!(b.call_count(), b_before + 20);
}

#[tokio::test]
async fn an_endpoint_that_leaves_finishes_its_calls_in_flight_then_closes_its_connections() {
    let (a, b, port) = two_upstreams_on_one_port().await;
    a.set_reply(Reply::Delay(Duration::from_secs(2), Box::new(Reply::Echo)));
    let server = DnsServer::start(Answer::Records(ips(&["127.0.0.2"]), 3600)).await;
    let toml = everything_toml(a.addr, "").replace(
        &format!("endpoints = [\"http://{}\"]", a.addr),
        &format!(
            "dns = \"{NAME}:{port}\"\ndns_servers = [\"{}\"]\n\
             dns_refresh_min = \"50ms\"\ndns_refresh_max = \"100ms\"",
            server.addr
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    assert!(
        a.open.load(Ordering::SeqCst) > 0,
        "connections to 127.0.0.2 are up"
    );
    let departing = Arc::downgrade(&gateway.gateway.snapshot().upstreams[0].pool.endpoints()[0]);
    let base = gateway.base.clone();
    let in_flight = tokio::spawn(async move {
        client()
            .get(format!("{base}/v1/echo?string_value=slow"))
            .send()
            .await
            .expect("send")
            .status()
    });
    while a.call_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The answer changes while the slow call is in flight on 127.0.0.2.
    server.set(Answer::Records(ips(&["127.0.0.3"]), 3600));
    let only_b = [format!("127.0.0.3:{port}")];
    for _ in 0..500 {
        if endpoint_calls(&gateway, "echo").keys().eq(only_b.iter()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(endpoint_calls(&gateway, "echo").keys().eq(only_b.iter()));
    // New calls go to the new address only, while the old one still works.
    for i in 0..5 {
        get(&gateway.base, i).await;
    }
    assert_eq!((a.call_count(), b.call_count()), (1, 5));
    assert!(
        departing.upgrade().is_some(),
        "kept alive by its call in flight"
    );
    assert!(
        a.open.load(Ordering::SeqCst) > 0,
        "its connections stay up meanwhile"
    );

    assert_eq!(
        in_flight.await.expect("task"),
        200,
        "the call in flight finished"
    );
    assert!(departing.upgrade().is_none(), "dropped with its last call");
    for _ in 0..500 {
        if a.open.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the departed endpoint's connections were not closed");
}
