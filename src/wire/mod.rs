//! Packet header views. See module docs.
