//! The rows of the read models: defined once, with their columns and keys, in
//! [`basketflow_vocab::read_models`], and re-exported here so that `crate::rows` and
//! `basketflow_dataflows::rows` keep naming them.

pub use basketflow_vocab::read_models::{
    BasketLine, PaidOrderLine, ProductAffinity, ShopperPurchase, SoldProductDaily,
};
