//! RFC 6455 frame headers: just enough to know where frames begin and end, to read close
//! frames, and to write the gateway's own close frames. Payloads are never copied here.
// TODO(relay helper)
