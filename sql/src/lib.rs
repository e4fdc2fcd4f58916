//! placeholder until the SQL crate lands
pub mod store;
