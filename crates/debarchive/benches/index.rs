//! Timing of the index pipeline on a real Debian index: parse a bookworm main
//! amd64 `Packages` file (about 63 000 paragraphs), index it, and resolve a
//! realistic host closure.
//!
//! `cargo bench -p ballast-debarchive --bench index`
//!
//! The index comes from `$BALLAST_BENCH_PACKAGES` (uncompressed text) when
//! set. Otherwise it is downloaded once from the mirror the host's apt
//! sources name for `bookworm` (or `$BALLAST_MIRROR`), decompressed and
//! cached in `target/bench-data/`. The download is not checked against a
//! signed `InRelease`: it is only timed, never installed.
//!
//! Targets: parse ≤ 1.5 s, resolve ≤ 1 s (median of 5).

use ballast_debarchive::deb822;
use ballast_debarchive::packages::parse_packages;
use ballast_debarchive::resolve::{resolve, Request, Universe};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SUITE: &str = "bookworm";
const REQUEST: [&str; 8] = [
    "openssh-server",
    "systemd",
    "chrony",
    "isc-dhcp-client",
    "docker.io",
    "sudo",
    "iproute2",
    "linux-image-amd64",
];

type BoxError = Box<dyn std::error::Error>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench index: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), BoxError> {
    let text = load_index()?;

    let mut parsed = None;
    let parse = median_of_5(|| {
        parsed = Some(parse_packages(&text));
    });
    let packages = parsed.ok_or("parse did not run")??;
    println!(
        "parse: {} stanzas ({} MB) in {} ms (median of 5; target <= 1500 ms)",
        packages.len(),
        text.len() / 1_000_000,
        parse.as_millis()
    );

    let t = Instant::now();
    let universe = Universe::new("amd64", packages);
    println!(
        "Universe::new: {} packages in {} ms",
        universe.len(),
        t.elapsed().as_millis()
    );

    let request = Request {
        packages: REQUEST.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    };
    let mut outcome = None;
    let took = median_of_5(|| {
        outcome = Some(resolve(&universe, &request));
    });
    let resolution = outcome.ok_or("resolve did not run")??;
    let bytes: u64 = resolution.packages.iter().map(|p| p.size).sum();
    println!(
        "resolve: {} requested -> closure of {} packages ({} MB of .debs) in {:.2} ms (median of 5; target <= 1000 ms)",
        REQUEST.len(),
        resolution.packages.len(),
        bytes / 1_000_000,
        took.as_secs_f64() * 1000.0
    );
    // What a fresh root really holds: the request plus every Essential
    // package (the caller adds those; the resolver never does).
    let mut with_essential = request.clone();
    let mut essential: Vec<String> = REQUEST
        .iter()
        .flat_map(|n| universe.get(n))
        .chain(universe.iter().filter(|p| p.essential))
        .map(|p| p.name.clone())
        .collect();
    essential.sort();
    essential.dedup();
    with_essential.packages = essential;
    let t = Instant::now();
    let r = resolve(&universe, &with_essential)?;
    println!(
        "resolve with Essential: {} requested -> closure of {} packages in {:.2} ms",
        with_essential.packages.len(),
        r.packages.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // Failing requests must fail fast too: a typo (suggestions scan every
    // name) and an excluded package everything needs (the search has to
    // give up on every choice point).
    for (what, request) in [
        (
            "typo",
            Request {
                packages: vec!["opensh-server".into()],
                ..Request::default()
            },
        ),
        (
            "two MTAs",
            Request {
                packages: vec!["postfix".into(), "exim4-daemon-light".into()],
                ..Request::default()
            },
        ),
        (
            "two inits",
            Request {
                packages: vec!["systemd-sysv".into(), "sysvinit-core".into()],
                ..Request::default()
            },
        ),
        (
            "exclude libc6",
            Request {
                exclude: ["libc6".to_string()].into(),
                ..request.clone()
            },
        ),
    ]
    .into_iter()
    .chain(std::env::var("BALLAST_BENCH_EXCLUDE").ok().map(|x| {
        (
            "exclude $BALLAST_BENCH_EXCLUDE",
            Request {
                exclude: x.split(',').map(str::to_string).collect(),
                ..request.clone()
            },
        )
    })) {
        let t = Instant::now();
        let outcome = resolve(&universe, &request);
        let took = t.elapsed();
        match outcome {
            Ok(r) => println!("{what}: resolved to {} packages", r.packages.len()),
            Err(e) => println!(
                "{what}: error in {:.2} ms: {e}",
                took.as_secs_f64() * 1000.0
            ),
        }
    }
    if std::env::var_os("BALLAST_BENCH_LIST").is_some() {
        for p in &resolution.packages {
            println!("  {p}");
        }
    }
    Ok(())
}

fn median_of_5(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn load_index() -> Result<String, BoxError> {
    if let Some(path) = std::env::var_os("BALLAST_BENCH_PACKAGES") {
        let path = PathBuf::from(path);
        return std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read BALLAST_BENCH_PACKAGES={}: {e} (point it at an uncompressed Packages file)",
                path.display()
            )
            .into()
        });
    }
    let cache = target_dir().join("bench-data");
    let cached = cache.join(format!("{SUITE}-main-amd64-Packages"));
    if let Ok(text) = std::fs::read_to_string(&cached) {
        eprintln!("using cached index {}", cached.display());
        return Ok(text);
    }
    let mirror = mirror()?;
    let url = format!(
        "{}/dists/{SUITE}/main/binary-amd64/Packages.xz",
        mirror.trim_end_matches('/')
    );
    eprintln!("downloading {url}");
    let response = ureq::get(&url).call().map_err(|e| {
        format!("cannot download {url}: {e} (set BALLAST_BENCH_PACKAGES to a local Packages file)")
    })?;
    let reader = response
        .into_body()
        .into_with_config()
        .limit(256 << 20)
        .reader();
    let mut text = String::new();
    liblzma::read::XzDecoder::new(reader)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read or decompress {url}: {e}"))?;
    std::fs::create_dir_all(&cache)
        .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let tmp = cached.with_extension("part");
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &cached))
        .map_err(|e| format!("cannot write {}: {e}", cached.display()))?;
    Ok(text)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The mirror for [`SUITE`]: `$BALLAST_MIRROR`, else the `URIs:` of the
/// deb822 apt source whose `Suites:` list it, else a one-line `deb` entry.
fn mirror() -> Result<String, BoxError> {
    if let Ok(m) = std::env::var("BALLAST_MIRROR") {
        return Ok(m);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "sources"))
    {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        // deb822 parsers in apt allow comment lines; ours does not.
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        for para in deb822::paragraphs(&text).flatten() {
            let suites = para.get("Suites").unwrap_or("");
            if suites.split_whitespace().any(|s| s == SUITE) {
                if let Some(uri) = para.get("URIs").and_then(|u| u.split_whitespace().next()) {
                    return Ok(uri.to_string());
                }
            }
        }
    }
    let list = "/etc/apt/sources.list";
    if let Ok(text) = std::fs::read_to_string(list) {
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("deb ") else {
                continue;
            };
            // Drop `[option=value ...]`, which may contain spaces.
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').map_or("", |(_, after)| after),
                None => rest,
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() >= 2 && words[1] == SUITE {
                return Ok(words[0].to_string());
            }
        }
    }
    Err(format!(
        "no apt source for {SUITE} in /etc/apt/sources.list.d/*.sources or {list}; set BALLAST_MIRROR or BALLAST_BENCH_PACKAGES"
    )
    .into())
}
