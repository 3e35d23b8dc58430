//! `redis-audit-proxy audit verify`: placeholder replaced below.
