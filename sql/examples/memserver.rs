//! Serves the SQL layer over the PostgreSQL protocol on an in-memory store, for trying it
//! with psql: `cargo run -p meridian-sql --example memserver -- 127.0.0.1:26257`, then
//! `psql -h 127.0.0.1 -p 26257 -U root`. Stops on Ctrl-C.

use std::sync::Arc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:26257".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    meridian_sql::serve(listener, Arc::new(meridian_sql::MemStore::new()), shutdown).await
}
