//! The control socket's requests and responses: one JSON request per
//! connection, one JSON response back (newline-terminated). The CLI
//! (`xdpvs list`, `reload`, `service`, `real`, ...) is its client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::status::{ConnRow, Status};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Services, real servers, counters, rates, shards (`ipvsadm -L`).
    Status,
    /// Connections and persistence templates (`ipvsadm -L -c`).
    Connections,
    /// The running config as TOML (`ipvsadm -S`).
    Save,
    /// Re-read the config file.
    Reload,
    /// Zero the counters (`ipvsadm -Z`).
    Zero,
    /// Add a service given as a `[[service]]` TOML block (`ipvsadm -A`).
    AddService { toml: String },
    /// Replace a service (same name) by a `[[service]]` block, keeping its
    /// real servers when the block has none (`ipvsadm -E`).
    EditService { toml: String },
    /// A successor (`xdpvs run --takeover`) asks this director to save its
    /// state and exit, so it can start from that state.
    Handover,
    /// `ipvsadm -D`.
    DelService { name: String },
    /// `ipvsadm -a`.
    AddReal { service: String, real: RealSpec },
    /// `ipvsadm -e`: change weight / forwarding / thresholds of a real server.
    EditReal { service: String, real: RealSpec },
    /// `ipvsadm -d`.
    DelReal {
        service: String,
        addr: String,
        port: Option<u16>,
    },
}

/// A real server as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RealSpec {
    pub addr: String,
    pub port: Option<u16>,
    pub weight: Option<u32>,
    pub forward: Option<String>,
    pub u_threshold: Option<u32>,
    pub l_threshold: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns: Option<Vec<ConnRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
}

impl Response {
    pub fn ok(msg: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: msg.into(),
            ..Response::default()
        }
    }
    pub fn err(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: e.into(),
            ..Response::default()
        }
    }
}

/// Send one request to the director's control socket and read the answer.
pub fn call(socket: &Path, req: &Request) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the director at {}: {e} (is `xdpvs run` running, and is this its control_socket?)",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("control socket write: {e}"))?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut text = String::new();
    BufReader::new(s)
        .read_line(&mut text)
        .map_err(|e| format!("control socket read: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("bad answer from the director: {e}"))
}
