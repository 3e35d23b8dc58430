//! Differential transparency with `[upstream] pool = "shared"`: every group of
//! [`crate::corpus`], plain and over TLS, played directly and through a proxy whose clients
//! share two upstream connections per state (see [`crate::differential`] for the runner and
//! the only two harness changes this mode needs). The scripts are unchanged: a client that
//! shares a connection must receive exactly the bytes it would from its own connection.

use crate::corpus;
use crate::differential::{check_with, Over, Pool};

/// Every script of `scripts` `over` plain TCP or TLS, with the proxy's pool shared (one
/// transport per test, so a failure names it).
async fn shared(scripts: Vec<corpus::Script>, over: Over) {
    check_with(scripts, over, Pool::Shared, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_shared() {
    shared(corpus::inline(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_shared() {
    shared(corpus::protocol_errors(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_shared() {
    shared(corpus::pipelines(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_shared() {
    shared(corpus::binary(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_shared() {
    shared(corpus::large_values(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_shared() {
    shared(corpus::resp3(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_shared() {
    shared(corpus::pubsub(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_shared() {
    shared(corpus::transactions(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_shared() {
    shared(corpus::blocking(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shared() {
    shared(corpus::monitor(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_shared() {
    shared(corpus::client_reply(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_shared() {
    shared(corpus::connection_state(), Over::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_shared() {
    let password = Some(corpus::PASSWORD);
    let extra = ["--requirepass", corpus::PASSWORD];
    check_with(corpus::unauthenticated(), Over::Plain, Pool::Shared, &extra, password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_over_tls_shared() {
    shared(corpus::inline(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_over_tls_shared() {
    shared(corpus::protocol_errors(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_over_tls_shared() {
    shared(corpus::pipelines(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_over_tls_shared() {
    shared(corpus::binary(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_over_tls_shared() {
    shared(corpus::large_values(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_over_tls_shared() {
    shared(corpus::resp3(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_over_tls_shared() {
    shared(corpus::pubsub(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_over_tls_shared() {
    shared(corpus::transactions(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_over_tls_shared() {
    shared(corpus::blocking(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_over_tls_shared() {
    shared(corpus::monitor(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_over_tls_shared() {
    shared(corpus::client_reply(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_state_over_tls_shared() {
    shared(corpus::connection_state(), Over::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_over_tls_shared() {
    let password = Some(corpus::PASSWORD);
    let extra = ["--requirepass", corpus::PASSWORD];
    check_with(corpus::unauthenticated(), Over::Tls, Pool::Shared, &extra, password).await;
}
