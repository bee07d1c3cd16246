//! XDP program and BPF maps.
