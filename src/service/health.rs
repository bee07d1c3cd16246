//! A real server's resolved health check, as the snapshot carries it to
//! the prober (the config's `health = { ... }` tables resolve to these).

/// What to do with a real server that fails its health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Set its weight to 0 (keepalived `inhibit_on_failure`): existing
    /// connections continue, no new ones.
    #[default]
    Quiesce,
    /// Take it out of the service.
    Remove,
}

impl OnFailure {
    pub const fn name(self) -> &'static str {
        match self {
            OnFailure::Quiesce => "quiesce",
            OnFailure::Remove => "remove",
        }
    }
}

/// The probe of a resolved health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers `expect_status`.
    Http { path: String, expect_status: u16 },
    /// A datagram `send` gets a reply starting with `expect`, or (no
    /// `expect`) no ICMP error.
    Udp {
        send: String,
        expect: Option<String>,
    },
    /// A program (keepalived `MISC_CHECK`): exit status 0 within the
    /// timeout is up, anything else down. `{addr}` and `{port}` in the
    /// items are replaced by the real server's address and port.
    Exec { cmd: Vec<String> },
}

/// A fully resolved health check of one real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    pub port: u16,
    /// Seconds.
    pub interval: u32,
    /// Seconds.
    pub timeout: u32,
    pub rise: u32,
    pub fall: u32,
    pub on_failure: OnFailure,
    /// keepalived `alpha`: the server starts down until its first
    /// successful check (else it starts up).
    pub alpha: bool,
    /// keepalived `omega`: `notify_down` runs for the servers still up
    /// when the director stops.
    pub omega: bool,
    /// Run when the check brings the server up / takes it down.
    pub notify_up: Option<Vec<String>>,
    pub notify_down: Option<Vec<String>>,
}
