//! `xdpvs run`: wires config, XDP program, AF_XDP shards and engines.
use std::path::Path;
use std::process::ExitCode;

pub fn run_main(_config: &Path, _duration: Option<u64>) -> ExitCode {
    eprintln!("xdpvs run: not built yet");
    ExitCode::from(2)
}
