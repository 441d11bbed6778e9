//! attache-proxy
