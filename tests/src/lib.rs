//! attache-tests
