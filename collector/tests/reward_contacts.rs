//! Integration: `POST /v1/reward-contacts` against the real broker at `$BASKETFLOW_BROKERS`
//! (`scripts/stack up`). Each test runs its own collector on a free port, producing events and
//! contacts to fresh topics, and checks the exact answers, the key scopes, the topic's exact
//! content (canonical JSON, key = retailer U+001F shopper) and the metrics.

mod common;

use basketflow_collector::auth::key_sha256;
use basketflow_collector::{AuthMode, Collector, CollectorConfig, RetailerKey};
use basketflow_testkit::kafka::{read_to_end, Isolation, Topics};
use basketflow_testkit::stack::brokers;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use common::{event, request, serve, Reply};

/// A collector serving events and reward contacts into fresh topics.
struct Running {
    addr: std::net::SocketAddr,
    events: String,
    contacts: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _topics: Topics,
}

async fn start(mut config: CollectorConfig, name: &str) -> Running {
    let topics = Topics::new(&brokers());
    let events = topics.fresh(&format!("test-{name}-events"), 1);
    let contacts = topics.fresh(&format!("test-{name}-contacts"), 1);
    config.listen = "127.0.0.1:0".into();
    let collector = Collector::bind_with_rewards(config, &brokers(), &events, Some(&contacts))
        .await
        .unwrap();
    assert_eq!(collector.rewards_topic(), Some(contacts.as_str()));
    let addr = collector.local_addr();
    let (stop, task) = serve(collector);
    Running {
        addr,
        events,
        contacts,
        stop,
        task,
        _topics: topics,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    async fn contact(&self, headers: &[(&str, &str)], body: &str) -> Reply {
        request(
            self.addr,
            "POST",
            "/v1/reward-contacts",
            headers,
            body.to_string(),
        )
        .await
    }

    /// `(key, payload)` of every message of the contacts topic, in order.
    fn contacts_stored(&self) -> Vec<(String, String)> {
        read_to_end(&brokers(), &self.contacts, Isolation::Committed)
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.key.unwrap()).unwrap(),
                    String::from_utf8(r.payload.unwrap()).unwrap(),
                )
            })
            .collect()
    }
}

fn contact(id: &str, retailer: &str) -> String {
    json!({
        "contact_id": id, "retailer_id": retailer, "shopper_id": "s1",
        "email": "jane.doe@shop.example", "campaign_id": "game", "order_id": "o1",
        "submitted_at": "2026-12-04T11:00:00+01:00",
    })
    .to_string()
}

fn canonical(id: &str, retailer: &str) -> (String, String) {
    (
        format!("{retailer}\u{1f}s1\u{1f}{id}"),
        format!(
            r#"{{"contact_id":"{id}","retailer_id":"{retailer}","shopper_id":"s1","email":"jane.doe@shop.example","campaign_id":"game","order_id":"o1","submitted_at":"2026-12-04T10:00:00Z"}}"#
        ),
    )
}

fn keyed() -> CollectorConfig {
    let key = |id: &str, key: &str| RetailerKey {
        id: id.into(),
        key_sha256: key_sha256(key),
    };
    CollectorConfig {
        auth: AuthMode::Keys,
        retailers: vec![key("r1", "event-r1")],
        reward_keys: vec![key("r1", "reward-r1"), key("r2", "reward-r2")],
        ..CollectorConfig::default()
    }
}

/// A refusal's status, `error` and `field`.
type Refused = (u16, Value, Value);

/// Request headers.
type Headers = Vec<(&'static str, &'static str)>;

fn error(r: &Reply) -> Refused {
    let body = r.json();
    (r.status, body["error"].clone(), body["field"].clone())
}

#[tokio::test]
async fn contacts_need_a_reward_key_and_event_keys_stay_events_only() {
    let c = start(keyed(), "reward-keys").await;
    let bearer = |k: &str| format!("Bearer {k}");

    // Accepted with the reward key (header or X-Api-Key), stored canonically under its key.
    let r = c
        .contact(
            &[("authorization", &bearer("reward-r1"))],
            &contact("c1", "r1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"status": "accepted", "contact_id": "c1"}));
    let r = c
        .contact(&[("x-api-key", "reward-r2")], &contact("c2", "r2"))
        .await;
    assert_eq!(r.status, 200);

    // Refused: no key, an event key, an unknown key, a key in the query string.
    let r = c.contact(&[], &contact("c3", "r1")).await;
    assert_eq!(error(&r), (401, json!("unauthorized"), Value::Null));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"basketflow\"")
    );
    let r = c
        .contact(
            &[("authorization", &bearer("event-r1"))],
            &contact("c3", "r1"),
        )
        .await;
    assert_eq!(error(&r), (401, json!("unauthorized"), Value::Null));
    assert!(r.json()["reason"].as_str().unwrap().contains("event key"));
    let r = c
        .contact(&[("x-api-key", "nobody")], &contact("c3", "r1"))
        .await;
    assert_eq!(r.status, 401);
    let r = request(
        c.addr,
        "POST",
        "/v1/reward-contacts?key=reward-r1",
        &[],
        contact("c3", "r1"),
    )
    .await;
    assert_eq!(r.status, 401, "the query string is not read for contacts");
    // r2's reward key does not post r1's contacts.
    let r = c
        .contact(&[("x-api-key", "reward-r2")], &contact("c3", "r1"))
        .await;
    assert_eq!(error(&r), (403, json!("forbidden"), json!("retailer_id")));

    // The events route refuses reward keys, takes event keys.
    let r = request(
        c.addr,
        "POST",
        "/v1/events",
        &[("x-api-key", "reward-r1")],
        event("e1", "r1", "s1"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["reason"].as_str().unwrap().contains("reward key"));
    let r = request(
        c.addr,
        "POST",
        "/v1/events",
        &[("x-api-key", "event-r1")],
        event("e1", "r1", "s1"),
    )
    .await;
    assert_eq!(r.status, 200);

    assert_eq!(
        c.contacts_stored(),
        [canonical("c1", "r1"), canonical("c2", "r2")],
        "exactly the accepted contacts, in order"
    );
    assert_eq!(
        read_to_end(&brokers(), &c.events, Isolation::Committed).len(),
        1,
        "the event went to the events topic only"
    );

    let health = request(c.addr, "GET", "/health", &[], "").await.json();
    assert_eq!(health["rewards_topic"], c.contacts.as_str());
    let metrics = request(c.addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        "basketflow_collector_reward_contact_requests_total{code=\"200\"} 2",
        "basketflow_collector_reward_contact_requests_total{code=\"401\"} 4",
        "basketflow_collector_reward_contact_requests_total{code=\"403\"} 1",
        "basketflow_collector_reward_contacts_accepted_total 2",
        "basketflow_collector_reward_contacts_refused_total{code=\"unauthorized\"} 4",
        "basketflow_collector_reward_contacts_refused_total{code=\"forbidden\"} 1",
        "basketflow_collector_requests_total{code=\"401\"} 1",
        "basketflow_collector_events_accepted_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn bad_contacts_get_their_exact_code_and_nothing_is_stored() {
    // auth = "none" (local use): open to any retailer, as the events route.
    let c = start(CollectorConfig::default(), "reward-bad").await;
    let good = contact("c1", "r1");
    let cases: Vec<(String, Headers, Refused)> = vec![
        (
            "[]".into(),
            vec![],
            (400, json!("malformed_body"), Value::Null),
        ),
        (
            "{\"contact_id\":".into(),
            vec![],
            (400, json!("malformed_body"), Value::Null),
        ),
        (
            good.replace(
                "\"campaign_id\"",
                "\"phone\":\"0612345678\",\"campaign_id\"",
            ),
            vec![],
            (400, json!("unknown_field"), json!("phone")),
        ),
        (
            good.replace("\"email\":\"jane.doe@shop.example\",", ""),
            vec![],
            (400, json!("missing_field"), json!("email")),
        ),
        (
            good.replace("jane.doe@shop.example", "jane.doe@shop"),
            vec![],
            (400, json!("invalid_field"), json!("email")),
        ),
        (
            good.replace("\"s1\"", "\"\""),
            vec![],
            (400, json!("invalid_field"), json!("shopper_id")),
        ),
        (
            good.replace("2026-12-04T11:00:00+01:00", "04/12/2026"),
            vec![],
            (400, json!("invalid_field"), json!("submitted_at")),
        ),
        (
            good.replace("\"o1\"", &format!("\"{}\"", "o".repeat(5000))),
            vec![],
            (413, json!("body_too_large"), Value::Null),
        ),
        (
            good.clone(),
            vec![("content-encoding", "gzip")],
            (415, json!("unsupported_encoding"), Value::Null),
        ),
    ];
    for (body, headers, expected) in &cases {
        let r = c.contact(headers, body).await;
        assert_eq!(&error(&r), expected, "{body}");
    }
    assert_eq!(c.contacts_stored(), Vec::<(String, String)>::new());
    // Any retailer's contact is accepted without keys.
    let r = c.contact(&[], &contact("c1", "r9")).await;
    assert_eq!(r.status, 200);
    assert_eq!(c.contacts_stored(), [canonical("c1", "r9")]);
    c.stop().await;
}

#[tokio::test]
async fn a_collector_without_a_rewards_topic_takes_no_contacts() {
    let topics = Topics::new(&brokers());
    let events = topics.fresh("test-reward-off-events", 1);
    let config = CollectorConfig {
        listen: "127.0.0.1:0".into(),
        ..CollectorConfig::default()
    };
    let collector = Collector::bind(config, &brokers(), &events).await.unwrap();
    assert_eq!(collector.rewards_topic(), None);
    let addr = collector.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(collector.serve(async move {
        let _ = stopped.await;
    }));
    let r = request(
        addr,
        "POST",
        "/v1/reward-contacts",
        &[],
        contact("c1", "r1"),
    )
    .await;
    assert_eq!(error(&r), (404, json!("not_configured"), Value::Null));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_its_topic_the_route_answers_503_and_events_still_flow() {
    let topics = Topics::new(&brokers());
    let events = topics.fresh("test-reward-missing-events", 1);
    let missing = format!(
        "test-reward-missing-{}",
        basketflow_testkit::unique_suffix()
    );
    let config = CollectorConfig {
        listen: "127.0.0.1:0".into(),
        produce_timeout_ms: 1_000,
        ..CollectorConfig::default()
    };
    let collector = Collector::bind_with_rewards(config, &brokers(), &events, Some(&missing))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(collector.serve(async move {
        let _ = stopped.await;
    }));
    let r = request(
        addr,
        "POST",
        "/v1/reward-contacts",
        &[],
        contact("c1", "r1"),
    )
    .await;
    assert_eq!(error(&r), (503, json!("unavailable"), Value::Null));
    assert_eq!(r.header("retry-after"), Some("2"));
    let r = request(addr, "POST", "/v1/events", &[], event("e1", "r1", "s1")).await;
    assert_eq!(r.status, 200);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
