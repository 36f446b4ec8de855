//! A bincode-safe wrapper for [`Event`], for exchanging events between timely processes.
//!
//! Timely serializes exchanged data with bincode when workers live in different processes.
//! `Event` serializes to the tracker JSON with `#[serde(flatten)]` and an internally tagged
//! body, which bincode cannot encode (`SequenceMustHaveLength`): exchanging a plain `Event`
//! between processes panics. [`WireEvent`] wraps the same value and serializes it field by
//! field through serde "remote" definitions that mirror the vocab types without flatten, tags
//! or skipped fields. The mirrors are checked by the compiler (a field added to a vocab type
//! and not here fails to build), and `Ord` is `Event`'s own, so choices made on wrapped events
//! are the same as on events.

use crate::Timestamp;
use crate::{BasketChange, Event, EventBody, OrderLine, OrderStatus, PageType, Product};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// An [`Event`] that timely can exchange between processes (see the module docs).
///
/// The event is behind an `Arc`: arrangements clone their values each time they merge batches,
/// and cloning an `Arc` costs no allocation, where cloning an event costs one per string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WireEvent(#[serde(with = "shared_event")] pub Arc<Event>);

/// An event with where it was read (its partition and offset of `shopper-events`), as the
/// experience-tree operator needs it: the decision names its cause by position.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionedEvent {
    /// The event.
    pub event: WireEvent,
    /// Its partition of `shopper-events`.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl From<Event> for WireEvent {
    fn from(event: Event) -> Self {
        WireEvent(Arc::new(event))
    }
}

/// `Arc<Event>` through [`EventDef`].
mod shared_event {
    use super::*;

    pub fn serialize<S: Serializer>(event: &Arc<Event>, s: S) -> Result<S::Ok, S::Error> {
        EventDef::serialize(event, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Event>, D::Error> {
        EventDef::deserialize(d).map(Arc::new)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Timestamp")]
struct TimestampDef(i64);

#[derive(Serialize, Deserialize)]
#[serde(remote = "Event")]
struct EventDef {
    event_id: String,
    retailer_id: String,
    shopper_id: String,
    session_id: Option<String>,
    #[serde(with = "TimestampDef")]
    occurred_at: Timestamp,
    #[serde(with = "EventBodyDef")]
    body: EventBody,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EventBody")]
enum EventBodyDef {
    PageViewed {
        url: String,
        page_type: PageType,
        product_id: Option<String>,
        category: Option<String>,
    },
    LinkClicked {
        url: String,
        target_url: Option<String>,
        product_id: Option<String>,
    },
    SearchPerformed {
        query: String,
        result_count: Option<u64>,
    },
    ProductAdded(#[serde(with = "BasketChangeDef")] BasketChange),
    ProductRemoved(#[serde(with = "BasketChangeDef")] BasketChange),
    OrderPaid {
        order_id: String,
        #[serde(with = "order_lines")]
        lines: Vec<OrderLine>,
        total_cents: i64,
    },
    OrderStatusChanged {
        order_id: String,
        status: OrderStatus,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "BasketChange")]
struct BasketChangeDef {
    #[serde(with = "ProductDef")]
    product: Product,
    quantity: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Product")]
struct ProductDef {
    product_id: String,
    category: String,
    brand: Option<String>,
    unit_price_cents: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "OrderLine")]
struct OrderLineDef {
    product_id: String,
    category: String,
    brand: Option<String>,
    quantity: u32,
    unit_price_cents: i64,
}

/// `Vec<OrderLine>` through [`OrderLineDef`].
mod order_lines {
    use super::*;

    struct LineRef<'a>(&'a OrderLine);

    impl Serialize for LineRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            OrderLineDef::serialize(self.0, s)
        }
    }

    #[derive(Deserialize)]
    struct LineOwned(#[serde(with = "OrderLineDef")] OrderLine);

    pub fn serialize<S: Serializer>(lines: &[OrderLine], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(lines.iter().map(LineRef))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OrderLine>, D::Error> {
        let lines = Vec::<LineOwned>::deserialize(d)?;
        Ok(lines.into_iter().map(|LineOwned(line)| line).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arbitrary::event;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bincode_round_trips_and_order_is_the_events(a in event(), b in event()) {
            let wire = vec![WireEvent::from(a.clone()), WireEvent::from(b.clone())];
            let bytes = bincode::serialize(&wire).unwrap();
            let back: Vec<WireEvent> = bincode::deserialize(&bytes).unwrap();
            prop_assert_eq!(&back, &wire);
            prop_assert_eq!(wire[0].cmp(&wire[1]), a.cmp(&b));
        }
    }

    #[test]
    fn a_plain_event_is_not_bincode_encodable() {
        // Why this module exists; if vocab makes `Event` bincode-safe, `WireEvent` can go.
        let e = Event {
            event_id: "e".into(),
            retailer_id: "r".into(),
            shopper_id: "s".into(),
            session_id: None,
            occurred_at: Timestamp(0),
            body: EventBody::OrderStatusChanged {
                order_id: "o".into(),
                status: OrderStatus::Cancelled,
            },
        };
        assert!(bincode::serialize(&e).is_err());
    }
}
