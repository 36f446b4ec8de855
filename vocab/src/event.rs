//! Shopper events: the contract with trackers, as Rust types.
//!
//! One JSON object per Kafka message on `shopper-events`, keyed by `shopper_id`. The common
//! fields sit beside a `type` tag whose value selects the body ([`EventBody`]). Money is integer
//! cents, quantities are positive integers, instants are RFC 3339.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// One shopper event, as validated by the ingest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of the event, the de-duplication key.
    pub event_id: String,
    /// The retailer whose site the event comes from.
    pub retailer_id: String,
    /// The retailer's pseudonymous customer id: the only shopper identifier accepted.
    pub shopper_id: String,
    /// The tracker's browsing session, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// When the shopper acted, by the tracker's clock.
    pub occurred_at: Timestamp,
    /// What happened: the `type` tag and its fields.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened, tagged by the event's `type`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A page was shown.
    PageViewed {
        /// The page's address.
        url: String,
        /// What kind of page it is.
        page_type: PageType,
        /// The product the page shows, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_id: Option<String>,
        /// The category the page shows, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
    },
    /// A link was followed.
    LinkClicked {
        /// The page the link is on.
        url: String,
        /// Where the link leads, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_url: Option<String>,
        /// The product the link is about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_id: Option<String>,
    },
    /// A search was run.
    SearchPerformed {
        /// What the shopper typed.
        query: String,
        /// How many results the site found, if it says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result_count: Option<u64>,
    },
    /// Units of a product were put into the basket.
    ProductAdded(BasketChange),
    /// Units of a product were taken out of the basket.
    ProductRemoved(BasketChange),
    /// The basket was validated and paid: the order and its lines.
    OrderPaid {
        /// The retailer's order id; an order is `(retailer_id, order_id)`.
        order_id: String,
        /// What was bought (at least one line).
        lines: Vec<OrderLine>,
        /// The amount paid, in cents (discounts may make it differ from the lines' sum).
        total_cents: i64,
    },
    /// An order was delivered or cancelled.
    OrderStatusChanged {
        /// The retailer's order id.
        order_id: String,
        /// The new status.
        status: OrderStatus,
    },
}

/// A change to the basket: which product, how many units.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BasketChange {
    /// The product added or removed.
    pub product: Product,
    /// How many units (at least 1).
    pub quantity: u32,
}

/// A product as trackers describe it in basket events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Product {
    /// The retailer's product id.
    pub product_id: String,
    /// The product's category.
    pub category: String,
    /// The product's brand, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Price of one unit, in cents (never negative).
    pub unit_price_cents: i64,
}

/// One line of a paid order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// The retailer's product id.
    pub product_id: String,
    /// The product's category.
    pub category: String,
    /// The product's brand, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Units bought (at least 1).
    pub quantity: u32,
    /// Price of one unit, in cents (never negative).
    pub unit_price_cents: i64,
}

/// The kinds of page a `page_viewed` event may report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageType {
    /// The home page.
    Home,
    /// A category listing.
    Category,
    /// A product page.
    Product,
    /// A search results page.
    Search,
    /// The basket page.
    Basket,
    /// The checkout.
    Checkout,
    /// Any other page.
    Other,
}

impl PageType {
    /// Every page type, in contract order.
    pub const ALL: [PageType; 7] = [
        PageType::Home,
        PageType::Category,
        PageType::Product,
        PageType::Search,
        PageType::Basket,
        PageType::Checkout,
        PageType::Other,
    ];

    /// The contract's name of this page type.
    pub fn as_str(self) -> &'static str {
        match self {
            PageType::Home => "home",
            PageType::Category => "category",
            PageType::Product => "product",
            PageType::Search => "search",
            PageType::Basket => "basket",
            PageType::Checkout => "checkout",
            PageType::Other => "other",
        }
    }
}

/// The statuses an order can move to after payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Delivered: changes no figure.
    Delivered,
    /// Cancelled: the order leaves every sold-product figure.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in contract order.
    pub const ALL: [OrderStatus; 2] = [OrderStatus::Delivered, OrderStatus::Cancelled];

    /// The contract's name of this status.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// The event types of the contract, without their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// `page_viewed`
    PageViewed,
    /// `link_clicked`
    LinkClicked,
    /// `search_performed`
    SearchPerformed,
    /// `product_added`
    ProductAdded,
    /// `product_removed`
    ProductRemoved,
    /// `order_paid`
    OrderPaid,
    /// `order_status_changed`
    OrderStatusChanged,
}

impl EventType {
    /// Every event type, in contract order.
    pub const ALL: [EventType; 7] = [
        EventType::PageViewed,
        EventType::LinkClicked,
        EventType::SearchPerformed,
        EventType::ProductAdded,
        EventType::ProductRemoved,
        EventType::OrderPaid,
        EventType::OrderStatusChanged,
    ];

    /// The value of the `type` field for this event type.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PageViewed => "page_viewed",
            EventType::LinkClicked => "link_clicked",
            EventType::SearchPerformed => "search_performed",
            EventType::ProductAdded => "product_added",
            EventType::ProductRemoved => "product_removed",
            EventType::OrderPaid => "order_paid",
            EventType::OrderStatusChanged => "order_status_changed",
        }
    }

    /// The event type whose `type` value is `s`, if any.
    pub fn from_name(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl EventBody {
    /// The type of this event.
    pub fn event_type(&self) -> EventType {
        match self {
            EventBody::PageViewed { .. } => EventType::PageViewed,
            EventBody::LinkClicked { .. } => EventType::LinkClicked,
            EventBody::SearchPerformed { .. } => EventType::SearchPerformed,
            EventBody::ProductAdded(_) => EventType::ProductAdded,
            EventBody::ProductRemoved(_) => EventType::ProductRemoved,
            EventBody::OrderPaid { .. } => EventType::OrderPaid,
            EventBody::OrderStatusChanged { .. } => EventType::OrderStatusChanged,
        }
    }
}

impl Event {
    /// The type of this event.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }

    /// The event as the JSON a tracker sends.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Event always serializes to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_to_the_contract_shape() {
        let e = Event {
            event_id: "e1".into(),
            retailer_id: "r1".into(),
            shopper_id: "s1".into(),
            session_id: None,
            occurred_at: Timestamp::parse_rfc3339("2026-11-22T10:00:00Z").unwrap(),
            body: EventBody::ProductAdded(BasketChange {
                product: Product {
                    product_id: "p1".into(),
                    category: "pasta".into(),
                    brand: None,
                    unit_price_cents: 199,
                },
                quantity: 2,
            }),
        };
        assert_eq!(
            e.to_json(),
            r#"{"event_id":"e1","retailer_id":"r1","shopper_id":"s1","occurred_at":"2026-11-22T10:00:00Z","type":"product_added","product":{"product_id":"p1","category":"pasta","unit_price_cents":199},"quantity":2}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
        for p in PageType::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        for s in OrderStatus::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
