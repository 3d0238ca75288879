//! A standalone egress proxy, for benchmarks against other proxies.
//!
//! ```text
//! egress_proxy LISTEN_ADDR PATTERN...
//! AIRLOCK_NET_EVENTS=1 egress_proxy 127.0.0.1:3128 '127.0.0.1:*' 'example.org:443'
//! ```
//!
//! Serves plain HTTP and CONNECT on LISTEN_ADDR with that allowlist (no DNS
//! socket; names resolve with getaddrinfo). Events are printed as JSON
//! lines on stdout only when `AIRLOCK_NET_EVENTS` is set;
//! `AIRLOCK_NET_MAX_CONNECTIONS` overrides the connection limit (256). Runs
//! until killed.

use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(listen), patterns) = (args.next(), args.collect::<Vec<String>>()) else {
        eprintln!("usage: egress_proxy LISTEN_ADDR PATTERN...");
        return ExitCode::from(2);
    };
    let allow = match net::Allowlist::new(&patterns) {
        Ok(allow) => allow,
        Err(e) => {
            eprintln!("egress_proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match std::net::TcpListener::bind(&listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("egress_proxy: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let print = std::env::var_os("AIRLOCK_NET_EVENTS").is_some();
    let sink: net::Sink = Arc::new(move |event: net::Connection| {
        if print {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
        }
    });
    let mut config = net::Config::new(allow);
    if let Some(max) = std::env::var("AIRLOCK_NET_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.max_connections = max;
    }
    let listeners = net::Listeners { proxy, dns: None };
    let _server = match net::serve(config, listeners, sink) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("egress_proxy: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("egress_proxy: serving on {listen}");
    loop {
        std::thread::park();
    }
}
