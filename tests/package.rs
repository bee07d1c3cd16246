//! The Debian package's pieces (scripts/package.sh, packaging/README.md):
//! the man pages and completions `xdpvs generate` writes cover every
//! subcommand, the systemd unit grants what `xdpvs run` needs and calls the
//! CLI with arguments it accepts, the shipped config is valid and agrees
//! with the unit, and `Cargo.toml`'s asset list names what exists. No root,
//! no network: runs anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xdpvs::dataplane::privileges::{KEEP, START};

const BIN: &str = env!("CARGO_BIN_EXE_xdpvs");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xdpvs-package-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn xdpvs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// Subcommand names listed under "Commands:" by `xdpvs ARGS --help`.
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.push("--help");
    let out = xdpvs(&a);
    assert!(out.status.success(), "{a:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect()
}

/// Every visible command path: ["run"], ["service", "add"], ...
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for top in subcommands(&[]) {
        let nested = subcommands(&[top.as_str()]);
        paths.push(vec![top.clone()]);
        for n in nested {
            paths.push(vec![top.clone(), n]);
        }
    }
    paths
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = scratch("man");
    let out = xdpvs(&["generate", "man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let paths = command_paths();
    assert!(paths.len() >= 18, "{paths:?}");
    for p in [vec!["import-keepalived"], vec!["real", "edit"]] {
        assert!(
            paths.iter().any(|q| q == &p),
            "{p:?} missing from {paths:?}"
        );
    }
    let main = read(dir.join("xdpvs.1"));
    assert!(
        main.starts_with(".ie") || main.contains(".TH xdpvs 1"),
        "{main}"
    );
    for p in &paths {
        let page = dir.join(format!("xdpvs-{}.1", p.join("-")));
        let text = read(&page);
        assert!(
            text.contains(&format!(".TH xdpvs-{} 1", p.join("-"))),
            "{}: {text}",
            page.display()
        );
        if p.len() == 1 {
            // The top page lists it under SUBCOMMANDS.
            assert!(
                main.contains(&format!("xdpvs\\-{}(1)", p[0].replace('-', "\\-"))),
                "xdpvs.1 does not list {}",
                p[0]
            );
        }
    }
    // The options of a page are those of the command: run's --config, its
    // default named.
    let run = read(dir.join("xdpvs-run.1"));
    assert!(run.contains("\\-\\-config") && run.contains("/etc/xdpvs/xdpvs.toml"));
    // One page per command and no more: nothing for the hidden `generate`.
    let written: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written.len(), paths.len() + 1, "{written:?}");
    assert!(
        !written.iter().any(|f| f.contains("generate")),
        "{written:?}"
    );
    assert!(!main.contains("generate"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_offer_every_subcommand_in_bash_zsh_and_fish() {
    let dir = scratch("completions");
    let tops = subcommands(&[]);
    for (shell, file) in [
        ("bash", "xdpvs.bash"),
        ("zsh", "_xdpvs"),
        ("fish", "xdpvs.fish"),
    ] {
        let out = xdpvs(&["generate", "completions", shell, dir.to_str().unwrap()]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let written = String::from_utf8(out.stdout).unwrap();
        assert_eq!(written.trim(), dir.join(file).to_str().unwrap());
        let text = read(dir.join(file));
        for t in &tops {
            assert!(text.contains(t.as_str()), "{shell} completion lacks {t}");
        }
        for opt in ["persistent-conn", "u-threshold", "takeover"] {
            assert!(text.contains(opt), "{shell} completion lacks {opt}");
        }
        assert!(
            !text.contains("generate"),
            "{shell} offers the hidden generate"
        );
    }
    // The bash script at least parses.
    if let Ok(st) = Command::new("bash")
        .arg("-n")
        .arg(dir.join("xdpvs.bash"))
        .status()
    {
        assert!(st.success(), "bash -n xdpvs.bash");
    }
    let bad = xdpvs(&["generate", "completions", "tcsh", dir.to_str().unwrap()]);
    assert!(!bad.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_is_hidden_from_help() {
    assert!(!subcommands(&[]).contains(&"generate".to_string()));
    let out = xdpvs(&["generate", "man", "/proc/no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("xdpvs generate: "));
}

/// `Key=value` lines of the unit (the last one wins, as in systemd).
fn unit_key(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::to_string)
}

fn unit() -> String {
    read(Path::new(ROOT).join("packaging/xdpvs.service"))
}

#[test]
fn unit_grants_exactly_what_run_needs_at_start() {
    let unit = unit();
    let want: BTreeSet<String> = START.iter().map(|c| c.to_string()).collect();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let got: BTreeSet<String> = unit_key(&unit, key)
            .unwrap_or_else(|| panic!("no {key}="))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(got, want, "{key}");
    }
    // What the director keeps is part of what it starts with.
    for c in KEEP {
        assert!(START.contains(&c), "{c}");
    }
    assert_eq!(unit_key(&unit, "LimitMEMLOCK").as_deref(), Some("infinity"));
    assert_eq!(unit_key(&unit, "Restart").as_deref(), Some("on-failure"));
    assert_eq!(unit_key(&unit, "DynamicUser").as_deref(), Some("yes"));
}

#[test]
fn unit_runs_the_cli_with_arguments_it_accepts() {
    let unit = unit();
    let start = unit_key(&unit, "ExecStart").unwrap();
    let reload = unit_key(&unit, "ExecReload").unwrap();
    for line in [&start, &reload] {
        assert!(line.starts_with("/usr/bin/xdpvs "), "{line}");
        assert!(line.ends_with(" /etc/xdpvs/xdpvs.toml"), "{line}");
    }
    assert!(start.contains(" run "), "{start}");
    assert!(reload.contains(" reload "), "{reload}");
    let dir = scratch("unit-args");
    // ExecStart's arguments with a config that does not exist: the CLI
    // takes them (a usage error would exit 2) and fails on the file.
    let missing = dir.join("missing.toml");
    let args: Vec<String> = start
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("/etc/xdpvs/xdpvs.toml", missing.to_str().unwrap()))
        .collect();
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains("missing.toml"), "{err}");
    // ExecReload's arguments with the shipped config, whose socket is not
    // there: the CLI says it cannot reach the director.
    let shipped = Path::new(ROOT).join("packaging/xdpvs.toml");
    let args: Vec<String> = reload
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("/etc/xdpvs/xdpvs.toml", shipped.to_str().unwrap()))
        .collect();
    let out = Command::new(BIN).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the director at /run/xdpvs/xdpvs.sock"),
        "{args:?}: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_config_is_valid_and_lives_in_the_units_runtime_directory() {
    let shipped = Path::new(ROOT).join("packaging/xdpvs.toml");
    let summary = xdpvs::config::check(&shipped)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    assert!(summary.contains("0 services"), "{summary}");
    let cfg = xdpvs::config::schema::Config::load(&shipped).unwrap();
    let dir = unit_key(&unit(), "RuntimeDirectory").unwrap();
    assert_eq!(
        cfg.director.control_socket.parent(),
        Some(Path::new("/run").join(&dir).as_path())
    );
    // The state file defaults to the socket's directory: kept across a
    // restart only with RuntimeDirectoryPreserve.
    assert!(cfg.director.state_file.is_none());
    assert_eq!(
        unit_key(&unit(), "RuntimeDirectoryPreserve").as_deref(),
        Some("yes")
    );
    // The reference config that goes to /usr/share/doc is valid too.
    xdpvs::config::check(&Path::new(ROOT).join("config/example.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn deb_assets_name_what_exists_or_what_generate_writes() {
    let manifest: toml::Table = read(Path::new(ROOT).join("Cargo.toml")).parse().unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let mut targets = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let src = a[0].as_str().unwrap();
        targets.push(a[1].as_str().unwrap().to_string());
        if let Some(gen) = src.strip_prefix("target/package-assets/") {
            // Written by scripts/package.sh through `xdpvs generate`.
            assert!(
                [
                    "man/*.1",
                    "completions/xdpvs.bash",
                    "completions/_xdpvs",
                    "completions/xdpvs.fish"
                ]
                .contains(&gen),
                "{src}"
            );
        } else if src != "target/release/xdpvs" {
            assert!(Path::new(ROOT).join(src).is_file(), "{src}");
        }
    }
    for t in [
        "usr/bin/",
        "etc/xdpvs/xdpvs.toml",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/xdpvs",
    ] {
        assert!(targets.iter().any(|x| x == t), "{t} not in {targets:?}");
    }
    assert_eq!(
        deb["conf-files"].as_array().unwrap()[0].as_str(),
        Some("/etc/xdpvs/xdpvs.toml")
    );
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-name"].as_str(), Some("xdpvs"));
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
    assert!(Path::new(ROOT)
        .join(units["unit-scripts"].as_str().unwrap())
        .join("xdpvs.service")
        .is_file());
}
