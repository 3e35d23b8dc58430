//! Differential transparency with `[upstream] pool = "shared"`: every group of
//! [`crate::corpus`], plain and over TLS, played directly and through a proxy whose clients
//! share two upstream connections per state (see [`crate::differential`] for the runner and
//! the only harness changes this mode needs). The scripts are unchanged: a client that
//! shares a connection must receive exactly the bytes it would from its own connection.

use crate::differential::{differential_tests, Over, Pool};

differential_tests! { Over::Plain, Pool::Shared;
    inline_commands_shared => inline,
    protocol_errors_shared => protocol_errors,
    pipelines_shared => pipelines,
    binary_keys_and_values_shared => binary,
    large_values_shared => large_values,
    resp3_shared => resp3,
    pubsub_shared => pubsub,
    transactions_shared => transactions,
    blocking_commands_shared => blocking,
    monitor_shared => monitor,
    client_reply_shared => client_reply,
    connection_state_shared => connection_state,
    unauthenticated_shared => unauthenticated requirepass,
}

differential_tests! { Over::Tls, Pool::Shared;
    inline_commands_over_tls_shared => inline,
    protocol_errors_over_tls_shared => protocol_errors,
    pipelines_over_tls_shared => pipelines,
    binary_keys_and_values_over_tls_shared => binary,
    large_values_over_tls_shared => large_values,
    resp3_over_tls_shared => resp3,
    pubsub_over_tls_shared => pubsub,
    transactions_over_tls_shared => transactions,
    blocking_commands_over_tls_shared => blocking,
    monitor_over_tls_shared => monitor,
    client_reply_over_tls_shared => client_reply,
    connection_state_over_tls_shared => connection_state,
    unauthenticated_over_tls_shared => unauthenticated requirepass,
}
