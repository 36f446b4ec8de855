//! Throughput of the read-model graph: `cargo bench -p basketflow-dataflows --bench read_models -- [EVENTS] [BATCH] [WORKERS]`.
//!
//! A deterministic synthetic stream (unique event ids, 3 retailers, 50,000 shoppers, 2,000
//! products; 55% page views, 20% additions, 8% removals, 10% searches, 5% payments of 1-4 lines,
//! 2% status changes, a third of them cancellations; about 1% of events sent twice) is fed in
//! rounds of `BATCH` events per logical time; each round is driven to completion before the
//! next. Prints events per second over the whole run, event generation included.
//!
//! `ONLY=dedup` measures the de-duplication without a horizon alone, `ONLY=first_within` the
//! graph's (rule 1 with its 7-day horizon), `ONLY=none` the input and generator alone;
//! `PRIVACY=1` runs the production path: rule 1 with its 7-day horizon, then the privacy
//! stage on order facts and the folded baskets (default retention, no erasures), orders
//! settling after 30 days.

use std::time::Instant;

use basketflow_dataflows::{read_models, read_models_of_counted};
use basketflow_vocab::WireEvent;
use basketflow_vocab::{
    BasketChange, Event, EventBody, OrderLine, OrderStatus, PageType, Product, Timestamp,
};
use basketflow_vocab::{Erasure, Retention};
use differential_dataflow::input::Input;
use timely::dataflow::operators::{Input as _, Probe};
use timely::dataflow::ProbeHandle;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn product(rng: &mut Rng) -> Product {
    let p = rng.below(2_000);
    Product {
        product_id: format!("p{p}"),
        category: format!("c{}", p % 40),
        brand: Some(format!("b{}", p % 90)),
        unit_price_cents: 100 + (p as i64 * 37) % 5_000,
    }
}

fn event(rng: &mut Rng, n: u64) -> Event {
    let shopper = rng.below(50_000);
    let roll = rng.below(100);
    let body = match roll {
        0..=54 => EventBody::PageViewed {
            url: format!(
                "https://shop.example/product/{}?ref=home&utm_source=news",
                rng.below(2_000)
            ),
            page_type: PageType::Product,
            product_id: Some(format!("p{}", rng.below(2_000))),
            category: None,
        },
        55..=74 => EventBody::ProductAdded(BasketChange {
            product: product(rng),
            quantity: 1 + rng.below(3) as u32,
        }),
        75..=82 => EventBody::ProductRemoved(BasketChange {
            product: product(rng),
            quantity: 1,
        }),
        83..=92 => EventBody::SearchPerformed {
            query: format!("pasta sauce {}", rng.below(500)),
            result_count: Some(12),
        },
        93..=97 => EventBody::OrderPaid {
            order_id: format!("o{}", n / 20),
            lines: (0..1 + rng.below(4))
                .map(|_| {
                    let p = product(rng);
                    OrderLine {
                        product_id: p.product_id,
                        category: p.category,
                        brand: p.brand,
                        quantity: 1 + rng.below(3) as u32,
                        unit_price_cents: p.unit_price_cents,
                    }
                })
                .collect(),
            total_cents: 0,
        },
        _ => EventBody::OrderStatusChanged {
            order_id: format!("o{}", rng.below(n / 20 + 1)),
            status: if rng.below(3) == 0 {
                OrderStatus::Cancelled
            } else {
                OrderStatus::Delivered
            },
        },
    };
    Event {
        event_id: format!("e{n}"),
        retailer_id: format!("r{}", shopper % 3),
        shopper_id: format!("s{shopper}"),
        session_id: Some(format!("x{}", shopper * 7 + n / 100_000)),
        // About 10,000 events per second of tracker time, with up to 5 s of disorder.
        occurred_at: Timestamp(
            1_795_219_200_000_000 + n as i64 * 100 - rng.below(5_000_000) as i64,
        ),
        body,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(1_000_000);
    let batch = args.get(1).copied().unwrap_or(10_000);
    let workers = args.get(2).copied().unwrap_or(1) as usize;
    let started = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        let probe = ProbeHandle::new();
        let (mut input, mut erasures) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            let (erasures, erasure_stream) = scope.new_input::<Vec<Erasure>>();
            if std::env::var("ONLY").as_deref() == Ok("dedup") {
                basketflow_dataflows::unique_events(&events)
                    .stream
                    .probe_with(&probe);
            } else if std::env::var("ONLY").as_deref() == Ok("first_within") {
                // The graph's de-duplication: rule 1 with its 7-day horizon.
                basketflow_dataflows::count_first_copies(
                    events
                        .filter(basketflow_dataflows::changes_read_models)
                        .map(WireEvent::from),
                    7 * 24 * 3_600_000,
                    None,
                )
                .inner
                .probe_with(&probe);
            } else if std::env::var("ONLY").as_deref() == Ok("none") {
                events.probe_with(&probe);
            } else {
                let models = if std::env::var("PRIVACY").is_ok() {
                    // As the graph: rule 1 with its horizon (7 days), then privacy, then
                    // orders settling after 30 days.
                    read_models_of_counted(
                        &basketflow_dataflows::count_first_copies(
                            events
                                .filter(basketflow_dataflows::changes_read_models)
                                .map(WireEvent::from),
                            7 * 24 * 3_600_000,
                            None,
                        ),
                        erasure_stream,
                        30 * 24 * 3_600_000,
                        &Retention::default(),
                        None,
                    )
                    .0
                } else {
                    read_models(&events)
                };
                models.sold_products_daily.probe_with(&probe);
                models.shopper_purchases.probe_with(&probe);
                models.product_affinities.probe_with(&probe);
                models.baskets.probe_with(&probe);
            }
            (input, erasures)
        });
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (index + 1));
        let mut round = 0u64;
        let mut n = index;
        while n < total {
            round += 1;
            input.advance_to(round);
            erasures.advance_to(round);
            for _ in 0..batch / peers {
                if n >= total {
                    break;
                }
                let e = event(&mut rng, n);
                if rng.below(100) == 0 {
                    input.insert(e.clone());
                }
                input.insert(e);
                n += peers;
            }
            input.advance_to(round + 1);
            erasures.advance_to(round + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely runs");
    let secs = started.elapsed().as_secs_f64();
    let path = if std::env::var("PRIVACY").is_ok() {
        " (with privacy)"
    } else {
        ""
    };
    println!(
        "read_models{path}: {total} events, batch {batch}, {workers} worker(s): {secs:.2} s, {:.0} events/s, peak resident {} MiB",
        total as f64 / secs,
        peak_resident_kib() >> 10
    );
}

/// The process's peak resident memory (`VmHWM` of `/proc/self/status`), in KiB; 0 if unknown.
fn peak_resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
