//! `xdpvs`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xdpvs",
    version,
    about = "A Linux Virtual Server director on AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the director: attach to the configured interfaces and forward.
    Run {
        #[arg(short, long, default_value = "/etc/xdpvs.toml")]
        config: PathBuf,
        /// Stop after this many seconds (for scripted runs).
        #[arg(long)]
        duration: Option<u64>,
        /// Upgrade in place: ask the running director to save its
        /// connections and templates and exit, then start from them.
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a config file: exit 0, or print every error with file:line:col.
    Check {
        #[arg(short, long, default_value = "/etc/xdpvs.toml")]
        config: PathBuf,
    },
    /// Build a lab in network namespaces, run the director on it with real
    /// clients and servers, show where each client group went, tear down.
    Demo {
        /// dr (one-arm direct routing) or nat (two-arm masquerading).
        #[arg(long, default_value = "dr")]
        mode: String,
        /// XDP attach mode: native or generic.
        #[arg(long, default_value = "native")]
        xdp: String,
    },
    /// Convert `ipvsadm -S` / `ipvsadm -Sn` output (plus the iptables MARK
    /// rules of firewall-mark services) into an xdpvs config.
    ImportIpvsadm(xdpvs::import::ipvsadm::ImportArgs),
    /// Convert a keepalived.conf (its virtual_server blocks, real servers
    /// and checkers, plus the iptables MARK rules of fwmark services) into
    /// an xdpvs config.
    ImportKeepalived(xdpvs::import::keepalived::ImportArgs),
    /// List services and real servers of the running director, like
    /// `ipvsadm -L -n` (--stats, --rate, --persistent-conn, --connections).
    List(xdpvs::cli::ListArgs),
    /// Counters per service, real server and shard.
    Stats {
        #[command(flatten)]
        target: xdpvs::cli::Target,
        #[arg(long)]
        json: bool,
    },
    /// Make the running director re-read its config file (as SIGHUP).
    Reload {
        #[command(flatten)]
        target: xdpvs::cli::Target,
    },
    /// Print the running state as a config file (like `ipvsadm -S`).
    Save {
        #[command(flatten)]
        target: xdpvs::cli::Target,
    },
    /// Zero the counters (like `ipvsadm -Z`).
    Zero {
        #[command(flatten)]
        target: xdpvs::cli::Target,
    },
    /// Add, edit or delete a virtual service at runtime (ipvsadm -A/-E/-D).
    #[command(subcommand)]
    Service(xdpvs::cli::ServiceCmd),
    /// Add, edit (weight) or delete a real server at runtime (ipvsadm -a/-e/-d).
    #[command(subcommand)]
    Real(xdpvs::cli::RealCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match xdpvs::config::check(&config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Cmd::Run {
            config,
            duration,
            takeover,
        } => xdpvs::director::run_main(&config, duration, takeover),
        Cmd::Demo { mode, xdp } => xdpvs_lab::demo::run(&mode, &xdp),
        Cmd::ImportIpvsadm(args) => xdpvs::import::ipvsadm::run(&args),
        Cmd::ImportKeepalived(args) => xdpvs::import::keepalived::run(&args),
        Cmd::List(a) => xdpvs::cli::list(&a),
        Cmd::Stats { target, json } => xdpvs::cli::stats(&target, json),
        Cmd::Reload { target } => xdpvs::cli::reload(&target),
        Cmd::Save { target } => xdpvs::cli::save(&target),
        Cmd::Zero { target } => xdpvs::cli::zero(&target),
        Cmd::Service(c) => xdpvs::cli::service(&c),
        Cmd::Real(c) => xdpvs::cli::real(&c),
    }
}
