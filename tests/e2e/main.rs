//! End-to-end tests: the real `profwatch` binary over real HTTP, on the embedded store and on a
//! real ClickHouse server. Logs of each test land in `tests/artifacts/<test>/`.

mod agent;
mod api;
mod bad_input;
mod cache;
mod demo;
mod grafana;
mod loss;
mod memory;
mod otlp;
mod profiles;
mod regressions;
mod tls;
mod torture;
mod ui;
