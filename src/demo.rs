//! `xdpvs demo`.
use std::process::ExitCode;

pub fn run(_mode: &str, _xdp: &str) -> ExitCode {
    eprintln!("xdpvs demo: not built yet");
    ExitCode::from(2)
}
