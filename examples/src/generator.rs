//! Deterministic synthetic shopper traffic, by the event contract.
//!
//! A [`Generator`] is an iterator of Kafka-ready [`Message`]s (key = `shopper_id`, payload = one
//! JSON event). The same [`Config`] (seed included) always yields the same bytes in the same
//! order, so tests can replay a stream and an oracle can recompute what the graph must say.
//!
//! The model: each retailer has a [`Catalog`]; shoppers belong to one retailer, have favourite
//! categories and a list of staple products they buy again and again, and shop with a Zipf
//! frequency (a few shoppers shop a lot). A pool of concurrent sessions is interleaved: each slot
//! of the simulated clock, one session takes its next step (home page, category and product
//! views, searches, link clicks, adds, removes; a complementary product such as the sauce that
//! goes with a pasta is often added right after). About 30% of sessions end in a paid order of
//! the basket; later, most orders are delivered and about 2% are cancelled. A few events carry a
//! tracker clock that runs late, so `occurred_at` is not monotonic in the topic. Every event
//! carries a tracker `context` object (user agent, page, consent, timing, ...) that the contract
//! tolerates as unknown, which brings the average message to about 1 KB as in the article.
//!
//! For tests, a share of slots can instead carry a bad message of a chosen kind
//! ([`Injected`]): each says what the ingest must answer ([`Expect`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use basketflow_ingest::RejectCode;
use basketflow_vocab::{
    BasketChange, Event, EventBody, OrderLine, OrderStatus, PageType, Product, Timestamp,
};

use crate::catalog::{Catalog, Zipf};

/// What the generator produces, and how fast the simulated clock runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of retailers.
    pub retailers: u32,
    /// Number of shoppers (spread over the retailers).
    pub shoppers: u32,
    /// Products per retailer (about).
    pub products: u32,
    /// `occurred_at` of the first event.
    pub start: Timestamp,
    /// Events per second of simulated time (spacing of `occurred_at`).
    pub events_per_second: f64,
    /// Concurrent sessions interleaved in the stream.
    pub concurrent_sessions: usize,
    /// Share of slots that carry a bad message instead (0.0 ..= 1.0).
    pub bad_share: f64,
    /// Share of slots that re-send an earlier message byte for byte (a tracker retry).
    pub duplicate_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            retailers: 3,
            shoppers: 10_000,
            products: 3_000,
            start: Timestamp(1_793_520_000_000_000), // 2026-11-01T00:00:00Z
            events_per_second: 1_000.0,
            concurrent_sessions: 200,
            bad_share: 0.0,
            duplicate_share: 0.0,
        }
    }
}

/// What the ingest must answer to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expect {
    /// A valid event, seen for the first time.
    Valid,
    /// A byte-identical copy of an earlier valid message (same `event_id`).
    Duplicate,
    /// Refused with this code.
    Rejected(RejectCode),
}

/// Kinds of message a test can ask the generator to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Injected {
    /// The JSON is cut in the middle.
    MalformedJson,
    /// `occurred_at` is absent.
    MissingField,
    /// `occurred_at` is a number.
    WrongType,
    /// `type` is not in the contract.
    UnknownType,
    /// A basket add of 0 units.
    ZeroQuantity,
    /// A basket add of -1 units.
    NegativeQuantity,
    /// A product with a negative price.
    NegativePrice,
    /// An empty `event_id`.
    EmptyId,
    /// An `event_id` of 200 bytes.
    LongId,
    /// `occurred_at` in a local, non-RFC 3339 format.
    BadTimestamp,
    /// A message over 64 KiB.
    Oversized,
    /// An `email` field at the top level.
    Pii,
    /// A `first_name` deep inside `context`.
    PiiNested,
    /// A search query containing an email address.
    EmailInValue,
    /// Valid: removes a product the shopper never added.
    RemoveNeverAdded,
    /// Valid: a status change for an order that was never paid.
    UnknownOrderStatus,
}

impl Injected {
    /// Every kind, in declaration order.
    pub const ALL: [Injected; 16] = [
        Injected::MalformedJson,
        Injected::MissingField,
        Injected::WrongType,
        Injected::UnknownType,
        Injected::ZeroQuantity,
        Injected::NegativeQuantity,
        Injected::NegativePrice,
        Injected::EmptyId,
        Injected::LongId,
        Injected::BadTimestamp,
        Injected::Oversized,
        Injected::Pii,
        Injected::PiiNested,
        Injected::EmailInValue,
        Injected::RemoveNeverAdded,
        Injected::UnknownOrderStatus,
    ];

    /// What the ingest must answer to this kind.
    pub fn expect(self) -> Expect {
        use Injected::*;
        let code = match self {
            MalformedJson => RejectCode::MalformedJson,
            MissingField => RejectCode::MissingField,
            WrongType => RejectCode::WrongType,
            UnknownType => RejectCode::UnknownType,
            ZeroQuantity | NegativeQuantity | NegativePrice | EmptyId | LongId | BadTimestamp => {
                RejectCode::InvalidValue
            }
            Oversized => RejectCode::TooLarge,
            Pii | PiiNested | EmailInValue => RejectCode::Pii,
            RemoveNeverAdded | UnknownOrderStatus => return Expect::Valid,
        };
        Expect::Rejected(code)
    }

    /// A short label for summaries.
    pub fn label(self) -> &'static str {
        use Injected::*;
        match self {
            MalformedJson => "bad:malformed_json",
            MissingField => "bad:missing_field",
            WrongType => "bad:wrong_type",
            UnknownType => "bad:unknown_type",
            ZeroQuantity => "bad:zero_quantity",
            NegativeQuantity => "bad:negative_quantity",
            NegativePrice => "bad:negative_price",
            EmptyId => "bad:empty_id",
            LongId => "bad:long_id",
            BadTimestamp => "bad:bad_timestamp",
            Oversized => "bad:oversized",
            Pii => "bad:pii",
            PiiNested => "bad:pii_nested",
            EmailInValue => "bad:email_in_value",
            RemoveNeverAdded => "odd:remove_never_added",
            UnknownOrderStatus => "odd:unknown_order_status",
        }
    }
}

/// One generated Kafka message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Message key: the shopper id.
    pub key: String,
    /// Message value: one JSON event (or a bad one).
    pub payload: Vec<u8>,
    /// What the ingest must answer.
    pub expect: Expect,
    /// The event type, `duplicate`, or the injected kind's label.
    pub kind: &'static str,
}

struct Shopper {
    retailer: usize,
    id: String,
    favourites: Vec<usize>,
    staples: Vec<usize>,
    basket: BTreeMap<usize, u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Arrive,
    Browse,
    Checkout,
    Pay,
}

struct Session {
    shopper: usize,
    id: String,
    phase: Phase,
    steps_left: u32,
    will_order: bool,
    next_add: Option<usize>,
}

/// The traffic generator: an endless, deterministic iterator of messages.
pub struct Generator {
    cfg: Config,
    rng: ChaCha8Rng,
    catalogs: Vec<Catalog>,
    shoppers: Vec<Shopper>,
    shopper_popularity: Zipf,
    sessions: Vec<Session>,
    busy: BTreeSet<usize>,
    /// Status changes waiting for their slot: (slot, shopper, order id, status).
    later: BTreeMap<u64, Vec<(usize, String, OrderStatus)>>,
    recent: VecDeque<Message>,
    slot: u64,
    orders: u64,
}

impl Generator {
    /// The catalogs of the retailers, by retailer number (`retailer-00` first).
    pub fn catalogs(&self) -> &[Catalog] {
        &self.catalogs
    }

    /// A generator for `cfg`.
    pub fn new(cfg: Config) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let catalogs: Vec<Catalog> = (0..cfg.retailers.max(1))
            .map(|r| Catalog::generate(&mut rng, r, cfg.products))
            .collect();
        let n_shoppers = cfg.shoppers.max(1) as usize;
        let shoppers = (0..n_shoppers)
            .map(|i| {
                let retailer = i % catalogs.len();
                let cat = &catalogs[retailer];
                let n_cat = cat.categories.len();
                let favourites: Vec<usize> = (0..rng.random_range(2..=5))
                    .map(|_| rng.random_range(0..n_cat))
                    .collect();
                let staples = (0..rng.random_range(4..=14))
                    .map(|_| {
                        let c = favourites[rng.random_range(0..favourites.len())];
                        cat.popular_in(&mut rng, c)
                    })
                    .collect();
                Shopper {
                    retailer,
                    id: format!(
                        "cust-{:07}",
                        1_000_003u64.wrapping_mul(i as u64 + 1) % 9_999_991
                    ),
                    favourites,
                    staples,
                    basket: BTreeMap::new(),
                }
            })
            .collect();
        let concurrent = cfg.concurrent_sessions.clamp(1, n_shoppers);
        let mut g = Generator {
            shopper_popularity: Zipf::new(n_shoppers, 0.8),
            cfg,
            rng,
            catalogs,
            shoppers,
            sessions: Vec::with_capacity(concurrent),
            busy: BTreeSet::new(),
            later: BTreeMap::new(),
            recent: VecDeque::new(),
            slot: 0,
            orders: 0,
        };
        for _ in 0..concurrent {
            let s = g.new_session();
            g.sessions.push(s);
        }
        g
    }

    fn new_session(&mut self) -> Session {
        let n = self.shoppers.len();
        let mut shopper = self.shopper_popularity.sample(&mut self.rng);
        while self.busy.contains(&shopper) {
            shopper = self.rng.random_range(0..n);
        }
        self.busy.insert(shopper);
        Session {
            shopper,
            id: format!("sess-{:016x}", self.rng.random::<u64>()),
            phase: Phase::Arrive,
            steps_left: self.rng.random_range(3..=22),
            will_order: self.rng.random_bool(0.3),
            next_add: None,
        }
    }

    /// `occurred_at` of the current slot, sometimes late (a tracker clock running behind).
    fn occurred_at(&mut self) -> Timestamp {
        let step = 1e6 / self.cfg.events_per_second.max(1e-3);
        let mut t = self.cfg.start.0 + (self.slot as f64 * step) as i64;
        if self.rng.random_bool(0.03) {
            t -= self.rng.random_range(0..2_000_000);
        }
        Timestamp(t)
    }

    fn event_id(&mut self) -> String {
        format!("{:032x}", self.rng.random::<u128>())
    }

    fn event(&mut self, shopper: usize, session: Option<String>, body: EventBody) -> Event {
        Event {
            event_id: self.event_id(),
            retailer_id: self.catalogs[self.shoppers[shopper].retailer]
                .retailer_id
                .clone(),
            shopper_id: self.shoppers[shopper].id.clone(),
            session_id: session,
            occurred_at: self.occurred_at(),
            body,
        }
    }

    fn product_of(&self, retailer: usize, p: usize) -> Product {
        let cp = &self.catalogs[retailer].products[p];
        Product {
            product_id: cp.product_id.clone(),
            category: self.catalogs[retailer].categories[cp.category]
                .name
                .to_string(),
            brand: Some(cp.brand.clone()),
            unit_price_cents: cp.unit_price_cents,
        }
    }

    fn url(&self, retailer: usize, path: &str) -> String {
        format!(
            "https://shop.{}.example/{path}",
            self.catalogs[retailer].retailer_id
        )
    }

    /// The next step of session `k`, and whether the session is over.
    fn step(&mut self, k: usize) -> (Event, bool) {
        let (shopper, session_id, phase) = {
            let s = &self.sessions[k];
            (s.shopper, s.id.clone(), s.phase)
        };
        let retailer = self.shoppers[shopper].retailer;
        let sid = Some(session_id);
        match phase {
            Phase::Arrive => {
                self.sessions[k].phase = Phase::Browse;
                let url = self.url(retailer, "");
                let body = EventBody::PageViewed {
                    url,
                    page_type: PageType::Home,
                    product_id: None,
                    category: None,
                };
                (self.event(shopper, sid, body), false)
            }
            Phase::Browse => {
                let body = self.browse(k, shopper, retailer);
                let s = &mut self.sessions[k];
                s.steps_left = s.steps_left.saturating_sub(1);
                let mut done = false;
                if s.steps_left == 0 && s.next_add.is_none() {
                    if s.will_order {
                        s.phase = Phase::Checkout;
                    } else {
                        done = true;
                    }
                }
                (self.event(shopper, sid, body), done)
            }
            Phase::Checkout => {
                self.sessions[k].phase = Phase::Pay;
                if self.shoppers[shopper].basket.is_empty() {
                    let staples = &self.shoppers[shopper].staples;
                    let p = staples[self.rng.random_range(0..staples.len())];
                    self.shoppers[shopper].basket.insert(p, 1);
                    let body = EventBody::ProductAdded(BasketChange {
                        product: self.product_of(retailer, p),
                        quantity: 1,
                    });
                    return (self.event(shopper, sid, body), false);
                }
                let url = self.url(retailer, "checkout");
                let body = EventBody::PageViewed {
                    url,
                    page_type: PageType::Checkout,
                    product_id: None,
                    category: None,
                };
                (self.event(shopper, sid, body), false)
            }
            Phase::Pay => {
                let basket = std::mem::take(&mut self.shoppers[shopper].basket);
                let lines: Vec<OrderLine> = basket
                    .iter()
                    .map(|(&p, &quantity)| {
                        let pr = self.product_of(retailer, p);
                        OrderLine {
                            product_id: pr.product_id,
                            category: pr.category,
                            brand: pr.brand,
                            quantity,
                            unit_price_cents: pr.unit_price_cents,
                        }
                    })
                    .collect();
                let gross: i64 = lines
                    .iter()
                    .map(|l| l.unit_price_cents * i64::from(l.quantity))
                    .sum();
                // One order in ten has a 10% discount: totals need not equal the lines' sum.
                let total_cents = if self.rng.random_bool(0.1) {
                    gross * 9 / 10
                } else {
                    gross
                };
                self.orders += 1;
                let order_id = format!("ord-{:02}-{:09}", retailer, self.orders);
                let when = self.slot + self.rng.random_range(200..5_000);
                let status = if self.rng.random_bool(0.02) {
                    Some(OrderStatus::Cancelled)
                } else if self.rng.random_bool(0.9) {
                    Some(OrderStatus::Delivered)
                } else {
                    None
                };
                if let Some(status) = status {
                    self.later
                        .entry(when)
                        .or_default()
                        .push((shopper, order_id.clone(), status));
                }
                let body = EventBody::OrderPaid {
                    order_id,
                    lines,
                    total_cents,
                };
                (self.event(shopper, sid, body), true)
            }
        }
    }

    fn browse(&mut self, k: usize, shopper: usize, retailer: usize) -> EventBody {
        if let Some(p) = self.sessions[k].next_add.take() {
            return self.add(shopper, retailer, p);
        }
        let has_basket = !self.shoppers[shopper].basket.is_empty();
        let roll = self.rng.random_range(0..100);
        let fav = {
            let f = &self.shoppers[shopper].favourites;
            f[self.rng.random_range(0..f.len())]
        };
        let cat = &self.catalogs[retailer];
        match roll {
            0..20 => {
                let name = cat.categories[fav].name;
                EventBody::PageViewed {
                    url: self.url(retailer, &format!("c/{name}")),
                    page_type: PageType::Category,
                    product_id: None,
                    category: Some(name.to_string()),
                }
            }
            20..44 => {
                let p = cat.popular_in(&mut self.rng, fav);
                let cp = &self.catalogs[retailer].products[p];
                let cname = self.catalogs[retailer].categories[cp.category].name;
                EventBody::PageViewed {
                    url: self.url(retailer, &format!("p/{}", cp.product_id)),
                    page_type: PageType::Product,
                    product_id: Some(cp.product_id.clone()),
                    category: Some(cname.to_string()),
                }
            }
            44..56 => {
                let p = cat.popular_in(&mut self.rng, fav);
                let cp = &cat.products[p];
                let query = if self.rng.random_bool(0.5) {
                    cat.categories[cp.category].name.replace('-', " ")
                } else {
                    format!(
                        "{} {}",
                        cp.brand.replace('-', " "),
                        cat.categories[cp.category].name
                    )
                };
                let result_count = Some(self.rng.random_range(0..240));
                EventBody::SearchPerformed {
                    query,
                    result_count,
                }
            }
            56..65 => {
                let p = cat.popular_in(&mut self.rng, fav);
                let pid = cat.products[p].product_id.clone();
                EventBody::LinkClicked {
                    url: self.url(retailer, "c/offers"),
                    target_url: Some(self.url(retailer, &format!("p/{pid}"))),
                    product_id: Some(pid),
                }
            }
            65..71 if has_basket => {
                let basket = &self.shoppers[shopper].basket;
                let i = self.rng.random_range(0..basket.len());
                let (&p, &have) = basket.iter().nth(i).expect("index within basket");
                // Now and then a tracker reports removing one unit more than was added.
                let quantity = if self.rng.random_bool(0.03) {
                    have + 1
                } else {
                    self.rng.random_range(1..=have)
                };
                let left = have.saturating_sub(quantity);
                if left == 0 {
                    self.shoppers[shopper].basket.remove(&p);
                } else {
                    self.shoppers[shopper].basket.insert(p, left);
                }
                EventBody::ProductRemoved(BasketChange {
                    product: self.product_of(retailer, p),
                    quantity,
                })
            }
            _ => {
                let p = match self.rng.random_range(0..100) {
                    0..50 => {
                        let st = &self.shoppers[shopper].staples;
                        st[self.rng.random_range(0..st.len())]
                    }
                    50..85 => cat.popular_in(&mut self.rng, fav),
                    _ => {
                        let c = self.rng.random_range(0..cat.categories.len());
                        cat.popular_in(&mut self.rng, c)
                    }
                };
                if let Some(partner) = self.catalogs[retailer].products[p].partner {
                    if self.rng.random_bool(0.5) {
                        self.sessions[k].next_add = Some(partner);
                    }
                }
                self.add(shopper, retailer, p)
            }
        }
    }

    fn add(&mut self, shopper: usize, retailer: usize, p: usize) -> EventBody {
        let quantity = if self.rng.random_bool(0.75) {
            1
        } else {
            self.rng.random_range(2..=4)
        };
        *self.shoppers[shopper].basket.entry(p).or_default() += quantity;
        EventBody::ProductAdded(BasketChange {
            product: self.product_of(retailer, p),
            quantity,
        })
    }

    /// The tracker context every message carries (tolerated, unknown to the contract).
    fn context(&mut self, retailer: usize, e: &Event) -> Value {
        const AGENTS: &[&str] = &[
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
            "ShopApp/7.2.0 (Android 13; SM-A536B) okhttp/4.12.0",
        ];
        const LOCALES: &[&str] = &["fr-FR", "fr-BE", "en-GB", "de-DE", "es-ES", "it-IT"];
        const SOURCES: &[&str] = &["newsletter", "search", "social", "direct", "partner", "app"];
        let agent = AGENTS[self.rng.random_range(0..AGENTS.len())];
        let mobile = agent.contains("Mobile") || agent.contains("Android");
        let title = match &e.body {
            EventBody::ProductAdded(c) | EventBody::ProductRemoved(c) => {
                let cat = &self.catalogs[retailer];
                cat.by_id
                    .get(&c.product.product_id)
                    .map(|&p| cat.products[p].title.clone())
                    .unwrap_or_default()
            }
            EventBody::SearchPerformed { query, .. } => format!("Results for {query}"),
            _ => format!("{} | online groceries", self.catalogs[retailer].retailer_id),
        };
        let experiments: Vec<String> = (0..self.rng.random_range(2..6))
            .map(|i| {
                format!(
                    "exp-{}-{}:{}",
                    i,
                    self.rng.random_range(100..999),
                    ["a", "b"][self.rng.random_range(0..2)]
                )
            })
            .collect();
        json!({
            "tracker": {"library": "basketflow-tracker-js", "version": "3.4.1", "transport": "beacon"},
            "user_agent": agent,
            "locale": LOCALES[self.rng.random_range(0..LOCALES.len())],
            "timezone": "Europe/Paris",
            "screen": if mobile { json!({"width": 412, "height": 915, "density": 2.625}) }
                      else { json!({"width": 1920, "height": 1080, "density": 1}) },
            "page": {
                "title": title,
                "referrer": self.url(retailer, "c/offers"),
                "visible_ms": self.rng.random_range(200..60_000),
            },
            "consent": {"analytics": true, "personalization": true, "advertising": self.rng.random_bool(0.4)},
            "campaign": {
                "source": SOURCES[self.rng.random_range(0..SOURCES.len())],
                "medium": "organic",
                "campaign": format!("wk{}-{}", self.rng.random_range(1..53), ["fresh", "home", "promo"][self.rng.random_range(0..3)]),
            },
            "timing": {
                "page_load_ms": self.rng.random_range(150..4_000),
                "dom_ready_ms": self.rng.random_range(80..2_000),
                "sent_at_offset_ms": self.rng.random_range(0..500),
            },
            "experiments": experiments,
            "app": {"platform": if mobile { "mobile" } else { "web" }, "build": format!("2026.{}.{}", self.rng.random_range(1..12), self.rng.random_range(0..30))},
        })
    }

    fn encode(&mut self, e: &Event, retailer: usize) -> Value {
        let mut v = serde_json::to_value(e).expect("an Event serializes");
        let ctx = self.context(retailer, e);
        v.as_object_mut()
            .expect("an Event is an object")
            .insert("context".into(), ctx);
        v
    }

    fn next_event(&mut self) -> (Event, usize) {
        // Due status changes first, then a session step.
        if let Some(mut due) = self.later.remove(&self.slot) {
            let (shopper, order_id, status) = due.pop().expect("non-empty");
            if !due.is_empty() {
                self.later.insert(self.slot + 1, due);
            }
            let body = EventBody::OrderStatusChanged { order_id, status };
            let e = self.event(shopper, None, body);
            return (e, self.shoppers[shopper].retailer);
        }
        let k = self.rng.random_range(0..self.sessions.len());
        let (e, done) = self.step(k);
        let shopper = self.sessions[k].shopper;
        if done {
            self.busy.remove(&shopper);
            let s = self.new_session();
            self.sessions[k] = s;
        }
        (e, self.shoppers[shopper].retailer)
    }

    fn inject(&mut self, kind: Injected) -> Message {
        use Injected::*;
        let (mut e, retailer) = self.next_event();
        let shopper = self
            .shoppers
            .iter()
            .position(|s| s.id == e.shopper_id)
            .expect("events come from known shoppers");
        let some_product = |g: &mut Self| {
            let cat = &g.catalogs[retailer];
            let c = g.rng.random_range(0..cat.categories.len());
            let p = cat.popular_in(&mut g.rng, c);
            g.product_of(retailer, p)
        };
        match kind {
            ZeroQuantity | NegativeQuantity | NegativePrice | RemoveNeverAdded => {
                let mut product = some_product(self);
                if kind == NegativePrice {
                    product.unit_price_cents = -product.unit_price_cents.max(1);
                }
                let change = BasketChange {
                    product,
                    quantity: 1,
                };
                e.body = if kind == RemoveNeverAdded {
                    // A product id no add of this generator ever uses.
                    let mut change = change;
                    change.product.product_id =
                        format!("{}-never-added", change.product.product_id);
                    EventBody::ProductRemoved(change)
                } else {
                    EventBody::ProductAdded(change)
                };
            }
            UnknownOrderStatus => {
                e.body = EventBody::OrderStatusChanged {
                    order_id: format!("ord-unknown-{:x}", self.rng.random::<u32>()),
                    status: OrderStatus::Cancelled,
                };
            }
            EmailInValue => {
                e.body = EventBody::SearchPerformed {
                    query: format!("order status {}@mail.example", self.shoppers[shopper].id),
                    result_count: Some(0),
                };
            }
            _ => {}
        }
        let mut v = self.encode(&e, retailer);
        let o = v.as_object_mut().expect("object");
        match kind {
            MissingField => {
                o.remove("occurred_at");
            }
            WrongType => {
                o.insert("occurred_at".into(), json!(e.occurred_at.unix_seconds()));
            }
            UnknownType => {
                o.insert("type".into(), json!("product_liked"));
            }
            ZeroQuantity => {
                o.insert("quantity".into(), json!(0));
            }
            NegativeQuantity => {
                o.insert("quantity".into(), json!(-1));
            }
            EmptyId => {
                o.insert("event_id".into(), json!(""));
            }
            LongId => {
                o.insert("event_id".into(), json!("x".repeat(200)));
            }
            BadTimestamp => {
                o.insert(
                    "occurred_at".into(),
                    json!(e
                        .occurred_at
                        .to_datetime()
                        .format("%d/%m/%Y %H:%M")
                        .to_string()),
                );
            }
            Oversized => {
                o.insert("debug_dump".into(), json!("z".repeat(70 * 1024)));
            }
            Pii => {
                o.insert("email".into(), json!("shopper@mail.example"));
            }
            PiiNested => {
                o["context"]["page"]["visitor"] = json!({"first_name": "Camille"});
            }
            _ => {}
        }
        let mut payload = serde_json::to_vec(&v).expect("JSON value serializes");
        if kind == MalformedJson {
            payload.truncate(payload.len() / 2);
        }
        Message {
            key: e.shopper_id,
            payload,
            expect: kind.expect(),
            kind: kind.label(),
        }
    }
}

impl Iterator for Generator {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let msg = if !self.recent.is_empty() && self.rng.random_bool(self.cfg.duplicate_share) {
            let i = self.rng.random_range(0..self.recent.len());
            let mut m = self.recent[i].clone();
            m.expect = Expect::Duplicate;
            m.kind = "duplicate";
            m
        } else if self.rng.random_bool(self.cfg.bad_share) {
            let kind = Injected::ALL[self.rng.random_range(0..Injected::ALL.len())];
            self.inject(kind)
        } else {
            let (e, retailer) = self.next_event();
            let v = self.encode(&e, retailer);
            let m = Message {
                key: e.shopper_id.clone(),
                payload: serde_json::to_vec(&v).expect("JSON value serializes"),
                expect: Expect::Valid,
                kind: e.event_type().as_str(),
            };
            if self.cfg.duplicate_share > 0.0 {
                self.recent.push_back(m.clone());
                if self.recent.len() > 256 {
                    self.recent.pop_front();
                }
            }
            m
        };
        self.slot += 1;
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basketflow_ingest::parse_event;
    use std::collections::BTreeMap;

    fn cfg(bad_share: f64, duplicate_share: f64) -> Config {
        Config {
            seed: 42,
            shoppers: 2_000,
            products: 600,
            bad_share,
            duplicate_share,
            ..Config::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a: Vec<Message> = Generator::new(cfg(0.1, 0.05)).take(3_000).collect();
        let b: Vec<Message> = Generator::new(cfg(0.1, 0.05)).take(3_000).collect();
        assert_eq!(a, b);
        let c: Vec<Message> = Generator::new(Config {
            seed: 43,
            ..cfg(0.1, 0.05)
        })
        .take(3_000)
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn every_message_gets_the_verdict_it_announces() {
        let mut seen_ids = BTreeSet::new();
        let mut kinds = BTreeSet::new();
        for m in Generator::new(cfg(0.2, 0.05)).take(20_000) {
            kinds.insert(m.kind);
            match (m.expect, parse_event(&m.payload)) {
                (Expect::Valid, Ok(p)) => {
                    assert!(seen_ids.insert(p.event.event_id.clone()), "fresh id reused");
                    assert_eq!(p.event.shopper_id, m.key);
                    assert_eq!(p.unknown_fields, vec!["context".to_string()]);
                }
                (Expect::Duplicate, Ok(p)) => assert!(seen_ids.contains(&p.event.event_id)),
                (Expect::Rejected(code), Err(r)) => assert_eq!(r.code, code, "{}", m.kind),
                (want, got) => panic!("{}: expected {want:?}, got {got:?}", m.kind),
            }
        }
        for k in Injected::ALL {
            assert!(kinds.contains(k.label()), "{} never injected", k.label());
        }
        assert!(kinds.contains("duplicate"));
    }

    #[test]
    fn traffic_has_the_shape_of_the_article() {
        let n = 50_000;
        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut bytes, mut sessions, mut cancelled, mut delivered, mut late) = (0, 0, 0, 0, 0);
        let mut last = Timestamp::MIN;
        for m in Generator::new(cfg(0.0, 0.0)).take(n) {
            bytes += m.payload.len();
            *by_type.entry(m.kind).or_default() += 1;
            let e = parse_event(&m.payload).unwrap().event;
            match e.body {
                EventBody::PageViewed {
                    page_type: PageType::Home,
                    ..
                } => sessions += 1,
                EventBody::OrderStatusChanged {
                    status: OrderStatus::Cancelled,
                    ..
                } => cancelled += 1,
                EventBody::OrderStatusChanged {
                    status: OrderStatus::Delivered,
                    ..
                } => delivered += 1,
                _ => {}
            }
            if e.occurred_at < last {
                late += 1;
            }
            last = last.max(e.occurred_at);
        }
        let orders = by_type["order_paid"];
        let stats = format!(
            "avg {} B, {sessions} sessions, {orders} orders, {cancelled} cancelled, \
             {delivered} delivered, {late} late, {by_type:?}",
            bytes / n
        );
        assert!((900..=1_150).contains(&(bytes / n)), "{stats}");
        // ~30% of sessions end in an order (sessions still open at the end have not yet).
        assert!((25..=33).contains(&(orders * 100 / sessions)), "{stats}");
        // ~2% of orders are cancelled, ~88% delivered (of those whose status came in the run).
        let statuses = cancelled + delivered;
        assert!((1..=4).contains(&(cancelled * 100 / statuses)), "{stats}");
        // ~3% of events carry a late tracker clock.
        assert!((2..=4).contains(&(late * 100 / n)), "{stats}");
        for t in basketflow_vocab::EventType::ALL {
            assert!(by_type.contains_key(t.as_str()), "{t:?} missing: {stats}");
        }
    }
}
