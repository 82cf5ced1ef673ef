//! Persistence of the desired state (store helper is writing this).
