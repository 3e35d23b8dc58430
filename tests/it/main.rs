//! The one integration-test binary (ripgrep style): every suite is a module here.
//! Tests start a real `redis-server` on a free loopback port and the proxy in-process on
//! port 0; a test whose tool (`redis-server`, `redis-cli`, Prometheus, Chromium) is missing
//! fails and says how to install it (`make test` installs them all), unless
//! `REDIS_AUDIT_PROXY_ALLOW_SKIP=1` allows skipping (`support::skip`).
#![allow(missing_docs, clippy::disallowed_types, unreachable_pub)]

mod support;

mod acl_auth;
mod acl_enforce;
mod acl_log_passthrough;
mod acl_policy;
mod admin;
mod adversarial;
mod adversarial_admin;
mod adversarial_audit;
mod adversarial_pairing;
mod audit;
mod audit_backpressure;
mod audit_disk;
mod audit_durability;
mod audit_keys;
mod audit_page_cache;
mod audit_retention;
mod audit_verify;
mod binary;
mod clients;
mod cluster;
mod cluster_moves;
mod console;
mod corpus;
mod differential;
mod differential_fuzz;
mod differential_shared;
mod faults;
mod framer_oracle;
mod hostile;
mod keys;
mod keys_corpus;
mod limits;
mod pool;
mod query;
mod records;
mod replication;
mod report;
mod runtime;
mod sentinel;
mod sinks;
mod sinks_export;
mod sinks_relp;
mod skips;
mod soak;
mod stateful;
mod suggest;
mod table_load;
mod tls;
mod versions;
