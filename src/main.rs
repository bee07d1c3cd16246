//! `xdpvs`: the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
        /// The config file [default: /etc/xdpvs/xdpvs.toml if it exists,
        /// else /etc/xdpvs.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
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
        /// The config file [default: /etc/xdpvs/xdpvs.toml if it exists,
        /// else /etc/xdpvs.toml].
        #[arg(short, long)]
        config: Option<PathBuf>,
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
        /// The HA lab instead (issue #16): two directors announcing the VIP
        /// with BGP (BIRD) to an ECMP router (FRR); one is killed midway.
        #[arg(long, conflicts_with = "mode")]
        ha: bool,
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
    /// Write the man pages or a shell completion script from this command
    /// line's definition (for packaging: scripts/package.sh).
    #[command(subcommand, hide = true)]
    Generate(GenerateCmd),
}

#[derive(Subcommand)]
enum GenerateCmd {
    /// Man pages into DIR: xdpvs.1 and one page per subcommand
    /// (xdpvs-run.1, xdpvs-service-add.1, ...).
    Man { dir: PathBuf },
    /// The completion script for SHELL into DIR (xdpvs.bash, _xdpvs,
    /// xdpvs.fish, ...).
    Completions {
        shell: clap_complete::Shell,
        dir: PathBuf,
    },
}

/// The command line an operator sees: every subcommand but the hidden ones
/// (clap's completion generators would offer `generate` otherwise).
fn public_command() -> clap::Command {
    let full = Cli::command();
    let shown: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = clap::Command::new("xdpvs")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands(shown);
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd
}

/// `xdpvs generate ...`: prints the path of each file written.
fn generate(what: GenerateCmd) -> ExitCode {
    let mut cmd = public_command();
    let written = match what {
        GenerateCmd::Man { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(cmd, &dir))
            .and_then(|()| std::fs::read_dir(&dir))
            .and_then(|entries| {
                let mut pages = Vec::new();
                for e in entries {
                    let p = e?.path();
                    if p.extension().is_some_and(|x| x == "1") {
                        pages.push(p);
                    }
                }
                pages.sort();
                Ok(pages)
            }),
        GenerateCmd::Completions { shell, dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_complete::generate_to(shell, &mut cmd, "xdpvs", &dir))
            .map(|p| vec![p]),
    };
    match written {
        Ok(paths) => {
            for p in paths {
                xdpvs::cli::write_out(format_args!("{}\n", p.display()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdpvs generate: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => {
            match xdpvs::config::check(&config.unwrap_or_else(xdpvs::cli::default_config)) {
                Ok(summary) => {
                    xdpvs::cli::write_out(format_args!("{summary}\n"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run {
            config,
            duration,
            takeover,
        } => xdpvs::director::run_main(
            &config.unwrap_or_else(xdpvs::cli::default_config),
            duration,
            takeover,
        ),
        Cmd::Demo { ha: true, xdp, .. } => xdpvs_lab::demo::run_ha(&xdp),
        Cmd::Demo { mode, xdp, .. } => xdpvs_lab::demo::run(&mode, &xdp),
        Cmd::ImportIpvsadm(args) => xdpvs::import::ipvsadm::run(&args),
        Cmd::ImportKeepalived(args) => xdpvs::import::keepalived::run(&args),
        Cmd::List(a) => xdpvs::cli::list(&a),
        Cmd::Stats { target, json } => xdpvs::cli::stats(&target, json),
        Cmd::Reload { target } => xdpvs::cli::reload(&target),
        Cmd::Save { target } => xdpvs::cli::save(&target),
        Cmd::Zero { target } => xdpvs::cli::zero(&target),
        Cmd::Service(c) => xdpvs::cli::service(&c),
        Cmd::Real(c) => xdpvs::cli::real(&c),
        Cmd::Generate(g) => generate(g),
    }
}
