//! The admin API (admin helper is writing this).
