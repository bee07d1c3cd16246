//! Fuzz the IPVS sync codec: `wire::sync::SyncMessage` (header, framing,
//! every entry), the resync request parser and the authenticated
//! envelope's `open`.
//!
//! Oracles: no panic; an accepted message's size field is its length and
//! it yields at most `nr_conns` entries; every decoded entry re-encodes
//! and decodes to itself; an accepted resync request re-emits to the same
//! bytes; an envelope sealed here opens to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpvs::wire::sync::{ResyncRequest, SyncMessage, SyncWriter};
use xdpvs::wire::sync_auth;

const KEY: &[u8] = b"xdpvs-fuzz-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SyncMessage::new_checked(data) {
        assert_eq!(usize::from(m.size()), data.len());
        let mut n = 0;
        let mut w = SyncWriter::new(65535);
        let mut good = Vec::new();
        for e in m.entries() {
            n += 1;
            if let Ok(e) = e {
                w.push(&e).expect("decoded entry re-encodes");
                good.push(e);
            }
        }
        assert!(n <= usize::from(m.nr_conns()));
        let mut back = Vec::new();
        for msg in w.finish(m.syncid()) {
            let v = SyncMessage::new_checked(&msg[..]).expect("own message parses");
            back.extend(v.entries().map(|e| e.expect("own entry decodes")));
        }
        assert_eq!(back, good);
    }
    if let Ok(r) = ResyncRequest::parse(data) {
        assert_eq!(&r.emit()[..], data);
    }
    let _ = sync_auth::open(KEY, data);
    let mut env = Vec::new();
    sync_auth::seal(KEY, data.len() as u64, data, &mut env).expect("key is long enough");
    assert_eq!(sync_auth::open(KEY, &env), Ok((data.len() as u64, data)));
});
