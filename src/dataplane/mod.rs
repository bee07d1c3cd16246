//! AF_XDP data plane.
