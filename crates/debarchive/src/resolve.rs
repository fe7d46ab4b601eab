//! Dependency resolution: which binary packages a fresh root needs.
//!
//! This module owns choosing a closed, conflict-free set of packages from one
//! architecture's index (plus `Architecture: all`) for a list of requested
//! names. It never reads indices or downloads anything, and it never adds
//! packages the caller did not ask for: `Essential: yes` and
//! `Priority: required` packages are not pulled in by themselves, and
//! `Recommends`/`Suggests` are ignored. The caller lists what it wants.
//!
//! ## How a choice is made
//!
//! The search works through a first-in first-out agenda of dependency groups
//! (`Pre-Depends` before `Depends` of each package, requested names first),
//! so the packages a request needs directly are chosen before the ones they
//! need in turn; that makes "prefer what is already selected" effective.
//!
//! For one group `a | b | c`:
//!
//! 1. If a selected package already satisfies any alternative (by its own
//!    name and version, or through `Provides`), the group is satisfied.
//! 2. Otherwise the candidates are, alternative by alternative in the order
//!    written: the real package of that name, newest version first, then the
//!    packages that provide the name, ordered by `Priority`
//!    (required > important > standard > optional > extra > none), then
//!    name, then newest version. A real package is thus preferred to a
//!    provider, and the first alternative to later ones.
//! 3. Candidates that are excluded, not the pinned version, a second version
//!    of an already selected name, or in `Conflicts`/`Breaks` with the
//!    selection (in either direction) are dropped; the first remaining one is
//!    selected and the others are kept as a choice point.
//!
//! When a group has no candidate left, the search goes back to the latest
//! choice point that could have changed that (the newest one older than the
//! package that needs the group and than any package that blocked a
//! candidate) and tries its next candidate: it backjumps over unrelated
//! choices. If every choice point is used up the first failure met is
//! reported, because the greedy path is the one a user expects to read.
//! A package whose dependency fails for reasons no choice can change (no
//! such package or version, excluded, pinned away, or needing only such
//! packages) is remembered as uninstallable, so the search never explores it
//! again under other, unrelated choices.
//! The search stops after [`MAX_STEPS`] selections, which real indices never
//! come near.
//!
//! ## Relations
//!
//! - Versioned dependencies are satisfied by a provider only through a
//!   versioned `Provides: name (= v)`; unversioned `Provides` satisfy only
//!   unversioned dependencies (Policy §7.5). The same rule applies to
//!   `Conflicts`/`Breaks` on a virtual name.
//! - A package never conflicts with itself, whether by name or through a
//!   name it provides (the "Provides + Conflicts on a virtual name" idiom).
//! - `name:any` is satisfied by a package that is `Multi-Arch: allowed` or
//!   `foreign` (as dpkg does). `name:native` and `name:ARCH` for the
//!   universe's architecture mean the plain name; alternatives qualified with
//!   another architecture are ignored, and a group left empty by that is
//!   treated as satisfied (it concerns another architecture's root).
//! - One version per package name: a fresh root for one architecture never
//!   holds two.
//! - Dependency cycles need nothing special: a selected package satisfies
//!   the group that closes the cycle.

use crate::packages::{MultiArch, Package};
use crate::relation::{Alternatives, DisplayAlternatives, Relation, VersionOp};
use crate::version::Version;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// The search gives up after this many package selections (including those
/// undone by backtracking).
pub const MAX_STEPS: usize = 200_000;

/// All candidate packages for one architecture (and `all`), indexed by name
/// and by provided name.
#[derive(Debug, Clone)]
pub struct Universe {
    arch: String,
    /// Sorted by name, then newest version first; one entry per
    /// (name, version).
    all: Vec<Package>,
    /// Name -> range in `all`.
    by_name: HashMap<String, (usize, usize)>,
    /// Provided name -> indices in `all`, in preference order.
    provided_by: HashMap<String, Vec<usize>>,
}

fn priority_rank(p: &Package) -> u8 {
    match p.priority.as_deref() {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        Some("extra") => 4,
        _ => 5,
    }
}

impl Universe {
    /// Keep the packages of architecture `arch` and `all`, dropping the
    /// others, and index them. When the same name and version appear twice
    /// (an index read twice, two components), the first one is kept.
    pub fn new(arch: &str, packages: Vec<Package>) -> Universe {
        let mut all: Vec<Package> = packages
            .into_iter()
            .filter(|p| p.architecture == arch || p.architecture == "all")
            .collect();
        // Stable: among equal (name, version) the first one stays first.
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| b.version.cmp(&a.version)));
        all.dedup_by(|later, earlier| {
            later.name == earlier.name && later.version == earlier.version
        });
        let mut by_name = HashMap::with_capacity(all.len());
        let mut provided_by: HashMap<String, Vec<usize>> = HashMap::new();
        let mut start = 0;
        for i in 0..all.len() {
            if i + 1 == all.len() || all[i + 1].name != all[i].name {
                by_name.insert(all[i].name.clone(), (start, i + 1));
                start = i + 1;
            }
            for pr in &all[i].provides {
                let ids = provided_by.entry(pr.name.clone()).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
        }
        // Indices were pushed in (name, newest first) order; a stable sort on
        // priority keeps that order within a priority.
        for ids in provided_by.values_mut() {
            ids.sort_by_key(|&i| priority_rank(&all[i]));
        }
        Universe {
            arch: arch.to_string(),
            all,
            by_name,
            provided_by,
        }
    }

    /// The architecture this universe was built for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Number of package versions kept.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether no package was kept.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every package version, by name and then newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Package> {
        self.all.iter()
    }

    /// Every version of the real package `name`, newest first.
    pub fn versions(&self, name: &str) -> &[Package] {
        match self.by_name.get(name) {
            Some(&(a, b)) => &self.all[a..b],
            None => &[],
        }
    }

    fn range(&self, name: &str) -> std::ops::Range<usize> {
        match self.by_name.get(name) {
            Some(&(a, b)) => a..b,
            None => 0..0,
        }
    }

    /// The newest version of the real package `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.versions(name).first()
    }

    /// Every package version that lists `virtual_name` in `Provides`, in the
    /// order the resolver prefers them (priority, name, newest version).
    pub fn providers(&self, virtual_name: &str) -> Vec<&Package> {
        self.provider_ids(virtual_name)
            .iter()
            .map(|&i| &self.all[i])
            .collect()
    }

    fn provider_ids(&self, name: &str) -> &[usize] {
        self.provided_by.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether a relation concerns this universe's architecture.
    fn applies(&self, r: &Relation) -> bool {
        match r.arch_qualifier.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(a) => a == self.arch,
        }
    }

    /// Up to five known names (real or virtual) close to `name`, closest
    /// first.
    fn similar_names(&self, name: &str) -> Vec<String> {
        let limit = if name.len() <= 5 { 2 } else { 3 };
        let mut scored: Vec<(usize, &str)> = self
            .by_name
            .keys()
            .chain(self.provided_by.keys())
            .filter_map(|cand| {
                if cand.starts_with(name) || name.starts_with(cand.as_str()) {
                    let d = cand.len().abs_diff(name.len());
                    return Some((d.min(limit + 1), cand.as_str()));
                }
                if cand.len().abs_diff(name.len()) > limit {
                    return None;
                }
                let d = edit_distance(name.as_bytes(), cand.as_bytes());
                (d <= limit).then_some((d, cand.as_str()))
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(5)
            .map(|(_, n)| n.to_string())
            .collect()
    }
}

fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// What to install.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// Names to install; `name=version` also pins that version.
    pub packages: Vec<String>,
    /// Never installed. A dependency that only an excluded package could
    /// satisfy is an error naming it (unless another alternative works).
    pub exclude: BTreeSet<String>,
    /// Exact versions required.
    pub pins: BTreeMap<String, Version>,
}

/// The chosen packages, sorted by name, each once.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub packages: Vec<Package>,
}

impl Resolution {
    /// The chosen package named `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.packages[i])
    }
}

/// Who needs a dependency: the package that declares it, the package that
/// pulled that one in, and so on up to a requested package. Empty for a
/// requested name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain(pub Vec<String>);

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("requested");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" <- ")?;
            }
            write!(f, "required by {p}")?;
        }
        f.write_str(" (requested)")
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn suggestion_text(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", s.join(", "))
    }
}

/// Why a request cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A requested or pinned name is neither a package nor provided by one.
    #[error(
        "unknown package `{name}`: no {arch} or all package in the index has that name or provides it{}",
        suggestion_text(suggestions)
    )]
    UnknownPackage {
        name: String,
        arch: String,
        suggestions: Vec<String>,
    },
    /// A pin names a version the index does not have.
    #[error(
        "package `{name}` is pinned to version {version}, which the {arch} index does not have; available: {}; change the pin",
        list_or_none(available)
    )]
    PinNotAvailable {
        name: String,
        version: String,
        arch: String,
        available: Vec<String>,
    },
    /// An entry of [`Request::packages`] is malformed or contradicts a pin.
    #[error("requested package {entry:?}: {reason}")]
    BadRequest { entry: String, reason: String },
    /// The same name is requested and excluded.
    #[error(
        "package `{name}` is both requested and excluded; remove it from one of the two lists"
    )]
    RequestedAndExcluded { name: String },
    /// No package version matches the dependency.
    #[error(
        "cannot satisfy `{wanted}`: {chain}; available: {}",
        list_or_none(available)
    )]
    Unsatisfiable {
        wanted: String,
        chain: Chain,
        available: Vec<String>,
    },
    /// Only excluded packages could satisfy the dependency.
    #[error(
        "cannot satisfy `{wanted}`: {chain}; only excluded packages would: {} (take them off the exclude list or drop what needs them)",
        excluded.join(", ")
    )]
    Excluded {
        wanted: String,
        chain: Chain,
        excluded: Vec<String>,
    },
    /// Every candidate conflicts with (or is another version of) a package
    /// already chosen, and no other choice avoids that.
    #[error(
        "cannot satisfy `{wanted}`: {chain}; every candidate clashes with the selection: {}",
        clashes.join("; ")
    )]
    Conflict {
        wanted: String,
        chain: Chain,
        clashes: Vec<String>,
    },
    /// The search was cut off; `first` is the first dead end it met.
    #[error("gave up after {steps} package selections; first dead end: {first}")]
    GaveUp {
        steps: usize,
        first: Box<ResolveError>,
    },
}

/// `name:any` needs a package that may satisfy dependencies of other
/// architectures' packages.
fn any_ok(r: &Relation, p: &Package) -> bool {
    r.arch_qualifier.as_deref() != Some("any")
        || matches!(p.multi_arch, MultiArch::Allowed | MultiArch::Foreign)
}

/// Whether `p`, by its own name and version, satisfies `r`.
fn real_satisfies(r: &Relation, p: &Package) -> bool {
    p.name == r.name && any_ok(r, p) && r.matches_version(&p.version)
}

/// Whether a `Provides` entry satisfies `r` (a dependency or a conflict).
fn provide_matches(r: &Relation, provide: &Relation) -> bool {
    provide.name == r.name
        && match &r.constraint {
            None => true,
            Some(_) => match &provide.constraint {
                Some((VersionOp::Eq, v)) => r.matches_version(v),
                _ => false,
            },
        }
}

/// Whether `p` satisfies `r` through its `Provides`.
fn provide_satisfies(r: &Relation, p: &Package) -> bool {
    any_ok(r, p) && p.provides.iter().any(|pr| provide_matches(r, pr))
}

/// Whether conflict/breaks relation `r` hits package `x`.
fn conflict_hits(r: &Relation, x: &Package) -> bool {
    (x.name == r.name && r.matches_version(&x.version))
        || x.provides.iter().any(|pr| provide_matches(r, pr))
}

/// A resolution target: a requested name or one dependency group.
#[derive(Debug, Clone, Copy)]
enum Goal {
    Request(usize),
    Dep { from: usize, pre: bool, idx: usize },
}

/// Why a candidate cannot be chosen now.
#[derive(Debug, Clone, Copy)]
enum Block {
    Excluded,
    Pinned,
    /// Proven uninstallable: one of its dependencies can never be met.
    Dead,
    /// Another version of the same name is selected (its index).
    Taken(usize),
    /// A selected package (its index) conflicts with it, or the reverse.
    Conflicts(usize),
}

#[derive(Debug, Clone, Copy)]
struct Sel {
    id: usize,
    parent: Option<usize>,
    /// Number of choice points open when it was selected.
    time: usize,
}

#[derive(Debug)]
struct Choice {
    parent: Option<usize>,
    candidates: Vec<usize>,
    next: usize,
    trail_len: usize,
    agenda_len: usize,
    head: usize,
}

enum Eval {
    Satisfied,
    Choose(Vec<usize>),
    Fail(Vec<(usize, Block)>),
}

struct Search<'a> {
    u: &'a Universe,
    pins: &'a BTreeMap<String, Version>,
    exclude: &'a BTreeSet<String>,
    requests: &'a [Alternatives],
    selected: HashMap<&'a str, Sel>,
    /// Selected indices in selection order, for undo.
    trail: Vec<usize>,
    /// Provided name -> selected packages providing it.
    provided: HashMap<&'a str, Vec<usize>>,
    /// Name -> conflicts/breaks declared on it by selected packages.
    declared: HashMap<&'a str, Vec<(usize, &'a Relation)>>,
    agenda: Vec<Goal>,
    head: usize,
    choices: Vec<Choice>,
    steps: usize,
    /// Packages proven uninstallable in any state (kept across
    /// backtracking): a dependency group of theirs failed for reasons that
    /// do not depend on the selection.
    dead: HashSet<usize>,
}

impl<'a> Search<'a> {
    fn group(&self, g: Goal) -> &'a [Relation] {
        let u = self.u;
        match g {
            Goal::Request(i) => &self.requests[i],
            Goal::Dep { from, pre, idx } => {
                let p = &u.all[from];
                if pre {
                    &p.pre_depends[idx]
                } else {
                    &p.depends[idx]
                }
            }
        }
    }

    fn negatives(&self, id: usize) -> impl Iterator<Item = &'a Relation> + 'a {
        let u = self.u;
        let p = &u.all[id];
        p.conflicts
            .iter()
            .chain(&p.breaks)
            .filter(move |r| u.applies(r) && r.name != p.name)
    }

    fn select(&mut self, id: usize, parent: Option<usize>) {
        let u = self.u;
        let p = &u.all[id];
        self.steps += 1;
        self.selected.insert(
            &p.name,
            Sel {
                id,
                parent,
                time: self.choices.len(),
            },
        );
        self.trail.push(id);
        for pr in &p.provides {
            self.provided.entry(&pr.name).or_default().push(id);
        }
        for r in self.negatives(id) {
            self.declared.entry(&r.name).or_default().push((id, r));
        }
        for idx in 0..p.pre_depends.len() {
            self.agenda.push(Goal::Dep {
                from: id,
                pre: true,
                idx,
            });
        }
        for idx in 0..p.depends.len() {
            self.agenda.push(Goal::Dep {
                from: id,
                pre: false,
                idx,
            });
        }
    }

    /// Undo selections back to `trail_len` (exact mirror of `select`).
    fn undo_to(&mut self, trail_len: usize) {
        let u = self.u;
        while self.trail.len() > trail_len {
            let Some(id) = self.trail.pop() else { break };
            let p = &u.all[id];
            self.selected.remove(p.name.as_str());
            for pr in &p.provides {
                if let Some(v) = self.provided.get_mut(pr.name.as_str()) {
                    v.pop();
                }
            }
            for r in self.negatives(id) {
                if let Some(v) = self.declared.get_mut(r.name.as_str()) {
                    v.pop();
                }
            }
        }
    }

    fn block(&self, id: usize) -> Option<Block> {
        let u = self.u;
        let p = &u.all[id];
        if self.dead.contains(&id) {
            return Some(Block::Dead);
        }
        if self.exclude.contains(&p.name) {
            return Some(Block::Excluded);
        }
        if let Some(v) = self.pins.get(&p.name) {
            if *v != p.version {
                return Some(Block::Pinned);
            }
        }
        if let Some(s) = self.selected.get(p.name.as_str()) {
            return Some(Block::Taken(s.id));
        }
        // What the candidate declares against the selection.
        for r in self.negatives(id) {
            if let Some(s) = self.selected.get(r.name.as_str()) {
                if conflict_hits(r, &u.all[s.id]) {
                    return Some(Block::Conflicts(s.id));
                }
            }
            for &sid in self
                .provided
                .get(r.name.as_str())
                .map_or(&[][..], Vec::as_slice)
            {
                if u.all[sid].name != p.name && conflict_hits(r, &u.all[sid]) {
                    return Some(Block::Conflicts(sid));
                }
            }
        }
        // What the selection declares against the candidate.
        let names =
            std::iter::once(p.name.as_str()).chain(p.provides.iter().map(|pr| pr.name.as_str()));
        for name in names {
            for &(sid, r) in self.declared.get(name).map_or(&[][..], Vec::as_slice) {
                if u.all[sid].name != p.name && conflict_hits(r, p) {
                    return Some(Block::Conflicts(sid));
                }
            }
        }
        None
    }

    fn evaluate(&self, g: Goal) -> Eval {
        let u = self.u;
        let alts: Vec<&Relation> = self.group(g).iter().filter(|r| u.applies(r)).collect();
        if alts.is_empty() {
            return Eval::Satisfied;
        }
        for r in &alts {
            if let Some(s) = self.selected.get(r.name.as_str()) {
                if real_satisfies(r, &u.all[s.id]) {
                    return Eval::Satisfied;
                }
            }
            if let Some(ids) = self.provided.get(r.name.as_str()) {
                if ids.iter().any(|&i| provide_satisfies(r, &u.all[i])) {
                    return Eval::Satisfied;
                }
            }
        }
        let mut viable = Vec::new();
        let mut rejected: Vec<(usize, Block)> = Vec::new();
        let mut consider = |id: usize| {
            if viable.contains(&id) || rejected.iter().any(|&(i, _)| i == id) {
                return;
            }
            match self.block(id) {
                None => viable.push(id),
                Some(b) => rejected.push((id, b)),
            }
        };
        for r in &alts {
            for id in u.range(&r.name) {
                if real_satisfies(r, &u.all[id]) {
                    consider(id);
                }
            }
            for &id in u.provider_ids(&r.name) {
                if provide_satisfies(r, &u.all[id]) {
                    consider(id);
                }
            }
        }
        if viable.is_empty() {
            Eval::Fail(rejected)
        } else {
            Eval::Choose(viable)
        }
    }

    fn chain(&self, mut from: Option<usize>) -> Chain {
        let u = self.u;
        let mut out = Vec::new();
        while let Some(id) = from {
            let p = &u.all[id];
            out.push(format!("{} {}", p.name, p.version));
            from = self.selected.get(p.name.as_str()).and_then(|s| s.parent);
            if out.len() > u.all.len() {
                break;
            }
        }
        Chain(out)
    }

    fn from_of(g: Goal) -> Option<usize> {
        match g {
            Goal::Request(_) => None,
            Goal::Dep { from, .. } => Some(from),
        }
    }

    /// The error a user reads for a dead end at goal `g`.
    fn failure(&self, g: Goal, rejected: &[(usize, Block)]) -> ResolveError {
        let u = self.u;
        let group = self.group(g);
        let wanted = DisplayAlternatives(group).to_string();
        let chain = self.chain(Self::from_of(g));
        let pkg = |id: usize| format!("{} {}", u.all[id].name, u.all[id].version);
        let clashes: Vec<String> = rejected
            .iter()
            .filter_map(|&(id, b)| match b {
                Block::Taken(s) => Some(format!(
                    "{} is another version of the selected {}",
                    pkg(id),
                    pkg(s)
                )),
                Block::Conflicts(s) => Some(format!(
                    "{} conflicts with {} ({})",
                    pkg(id),
                    pkg(s),
                    self.chain(
                        self.selected
                            .get(u.all[s].name.as_str())
                            .and_then(|x| x.parent)
                    )
                )),
                _ => None,
            })
            .collect();
        if !clashes.is_empty() {
            return ResolveError::Conflict {
                wanted,
                chain,
                clashes,
            };
        }
        let mut excluded: Vec<String> = Vec::new();
        for &(id, b) in rejected {
            let name = &u.all[id].name;
            if matches!(b, Block::Excluded) && !excluded.contains(name) {
                excluded.push(name.clone());
            }
        }
        if !excluded.is_empty() {
            return ResolveError::Excluded {
                wanted,
                chain,
                excluded,
            };
        }
        let mut available = Vec::new();
        for r in group.iter().filter(|r| u.applies(r)) {
            for p in u.versions(&r.name) {
                let mut s = format!("{} {}", p.name, p.version);
                if !any_ok(r, p) {
                    s.push_str(" (not Multi-Arch: allowed or foreign)");
                }
                if let Some(v) = self.pins.get(&p.name) {
                    s.push_str(&format!(" (pinned to {v})"));
                }
                available.push(s);
            }
            for p in u.providers(&r.name) {
                let how = p
                    .provides
                    .iter()
                    .filter(|pr| pr.name == r.name)
                    .map(|pr| pr.to_string())
                    .next()
                    .unwrap_or_else(|| r.name.clone());
                available.push(format!("{} {} (provides {how})", p.name, p.version));
            }
        }
        available.dedup();
        ResolveError::Unsatisfiable {
            wanted,
            chain,
            available,
        }
    }

    /// Latest choice point that could change the outcome of a dead end at
    /// `g`: the newest one open when the requiring package or a blocking
    /// package was selected.
    fn jump_target(&self, g: Goal, rejected: &[(usize, Block)]) -> Option<usize> {
        let u = self.u;
        let time_of = |id: usize| {
            self.selected
                .get(u.all[id].name.as_str())
                .map_or(self.choices.len(), |s| s.time)
        };
        let mut t = Self::from_of(g).map_or(0, time_of);
        for &(_, b) in rejected {
            if let Block::Taken(s) | Block::Conflicts(s) = b {
                t = t.max(time_of(s));
            }
        }
        t.checked_sub(1)
    }

    /// Resume at choice point `target` (or older ones); false when none is
    /// left.
    fn backtrack(&mut self, mut target: Option<usize>) -> bool {
        while let Some(t) = target {
            self.choices.truncate(t + 1);
            let c = &mut self.choices[t];
            if c.next < c.candidates.len() {
                let id = c.candidates[c.next];
                c.next += 1;
                let (trail_len, agenda_len, head, parent) =
                    (c.trail_len, c.agenda_len, c.head, c.parent);
                self.undo_to(trail_len);
                self.agenda.truncate(agenda_len);
                self.head = head;
                // The state is the one the candidates were checked against,
                // so this one is still viable.
                self.select(id, parent);
                return true;
            }
            target = t.checked_sub(1);
        }
        false
    }

    fn run(&mut self) -> Result<(), ResolveError> {
        let mut first: Option<ResolveError> = None;
        while self.head < self.agenda.len() {
            let g = self.agenda[self.head];
            self.head += 1;
            match self.evaluate(g) {
                Eval::Satisfied => {}
                Eval::Choose(candidates) => {
                    let parent = Self::from_of(g);
                    let id = candidates[0];
                    if candidates.len() > 1 {
                        self.choices.push(Choice {
                            parent,
                            candidates,
                            next: 1,
                            trail_len: self.trail.len(),
                            agenda_len: self.agenda.len(),
                            head: self.head,
                        });
                    }
                    self.select(id, parent);
                }
                Eval::Fail(rejected) => {
                    let target = self.jump_target(g, &rejected);
                    let static_failure = rejected
                        .iter()
                        .all(|(_, b)| matches!(b, Block::Excluded | Block::Pinned | Block::Dead));
                    if let (true, Some(from)) = (static_failure, Self::from_of(g)) {
                        // Learn it once, so that backtracking never tries
                        // this package again below an unrelated choice.
                        self.dead.insert(from);
                    }
                    let err = first.get_or_insert_with(|| self.failure(g, &rejected));
                    if self.steps >= MAX_STEPS {
                        return Err(ResolveError::GaveUp {
                            steps: self.steps,
                            first: Box::new(err.clone()),
                        });
                    }
                    if !self.backtrack(target) {
                        return Err(err.clone());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Choose the packages `request` needs from `universe` (see the module doc
/// for the rules).
pub fn resolve(universe: &Universe, request: &Request) -> Result<Resolution, ResolveError> {
    let u = universe;
    let mut pins = request.pins.clone();
    let mut requests: Vec<Alternatives> = Vec::with_capacity(request.packages.len());
    let unknown = |name: &str| ResolveError::UnknownPackage {
        name: name.to_string(),
        arch: u.arch.clone(),
        suggestions: u.similar_names(name),
    };
    for entry in &request.packages {
        let bad = |reason: String| ResolveError::BadRequest {
            entry: entry.clone(),
            reason,
        };
        let (name, version) = match entry.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (entry.trim(), None),
        };
        if name.is_empty() {
            return Err(bad(
                "the package name is empty (write name or name=version)".into(),
            ));
        }
        if let Some(v) = version {
            let v = Version::parse(v).map_err(|e| bad(e.to_string()))?;
            match pins.get(name) {
                Some(old) if *old != v => {
                    return Err(bad(format!(
                        "it asks for version {v} but {name} is pinned to {old}; keep one of the two"
                    )))
                }
                _ => {
                    pins.insert(name.to_string(), v);
                }
            }
        }
        if request.exclude.contains(name) {
            return Err(ResolveError::RequestedAndExcluded {
                name: name.to_string(),
            });
        }
        if u.versions(name).is_empty() && u.provider_ids(name).is_empty() {
            return Err(unknown(name));
        }
        requests.push(vec![Relation::plain(name)]);
    }
    for (name, version) in &pins {
        let versions = u.versions(name);
        if versions.is_empty() {
            return Err(unknown(name));
        }
        if !versions.iter().any(|p| p.version == *version) {
            return Err(ResolveError::PinNotAvailable {
                name: name.clone(),
                version: version.to_string(),
                arch: u.arch.clone(),
                available: versions.iter().map(|p| p.version.to_string()).collect(),
            });
        }
    }
    let mut search = Search {
        u,
        pins: &pins,
        exclude: &request.exclude,
        requests: &requests,
        selected: HashMap::new(),
        trail: Vec::new(),
        provided: HashMap::new(),
        declared: HashMap::new(),
        agenda: (0..requests.len()).map(Goal::Request).collect(),
        head: 0,
        choices: Vec::new(),
        steps: 0,
        dead: HashSet::new(),
    };
    search.run()?;
    let mut packages: Vec<Package> = search.trail.iter().map(|&i| u.all[i].clone()).collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Resolution { packages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::parse_packages;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// One index paragraph; `fields` are extra lines such as `Depends: a | b`.
    fn stanza(name: &str, version: &str, fields: &str) -> String {
        stanza_arch(name, version, "amd64", fields)
    }

    fn stanza_arch(name: &str, version: &str, arch: &str, fields: &str) -> String {
        let mut s = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nFilename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {SHA}\n"
        );
        for line in fields.lines().filter(|l| !l.trim().is_empty()) {
            s.push_str(line.trim());
            s.push('\n');
        }
        s
    }

    fn universe(stanzas: &[String]) -> Universe {
        let text = stanzas.join("\n");
        Universe::new("amd64", parse_packages(&text).unwrap())
    }

    fn req(names: &[&str]) -> Request {
        Request {
            packages: names.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    /// "name version" of each chosen package, in the resolution's order.
    fn chosen(r: &Resolution) -> Vec<String> {
        r.packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect()
    }

    fn ok(u: &Universe, r: &Request) -> Vec<String> {
        chosen(&resolve(u, r).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn universe_keeps_one_arch_and_all_newest_first() {
        let u = Universe::new(
            "amd64",
            parse_packages(
                &[
                    stanza("a", "1.0", ""),
                    stanza("a", "1:0.5", ""),
                    stanza("a", "2.0", ""),
                    stanza("a", "2.0", ""),
                    stanza_arch("b", "1", "i386", ""),
                    stanza_arch("c", "1", "all", "Provides: v"),
                ]
                .join("\n"),
            )
            .unwrap(),
        );
        assert_eq!(u.arch(), "amd64");
        assert_eq!(u.len(), 4);
        let vs: Vec<String> = u
            .versions("a")
            .iter()
            .map(|p| p.version.to_string())
            .collect();
        assert_eq!(vs, ["1:0.5", "2.0", "1.0"]);
        assert_eq!(u.get("a").unwrap().version.to_string(), "1:0.5");
        assert!(u.get("b").is_none(), "i386 packages are dropped");
        assert_eq!(u.providers("v")[0].name, "c");
        assert!(u.providers("nothing").is_empty());
    }

    #[test]
    fn alternatives_prefer_selected_then_first_written() {
        let u = universe(&[
            stanza("app", "1", "Depends: b | c"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "b 1"]);
        assert_eq!(ok(&u, &req(&["c", "app"])), ["app 1", "c 1"]);
    }

    #[test]
    fn backtracks_to_next_alternative_when_a_subtree_fails() {
        // b needs something that does not exist: c is the way out.
        let u = universe(&[
            stanza("app", "1", "Depends: b | c"),
            stanza("b", "1", "Depends: missing"),
            stanza("c", "1", ""),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "c 1"]);
        // b is fine on its own but conflicts with x, which app needs later.
        let u = universe(&[
            stanza("app", "1", "Depends: b | c, x"),
            stanza("b", "1", "Conflicts: x"),
            stanza("c", "1", ""),
            stanza("x", "1", ""),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "c 1", "x 1"]);
        // The choice to undo is deeper: app -> mid -> (b | c).
        let u = universe(&[
            stanza("app", "1", "Depends: mid, late"),
            stanza("mid", "1", "Depends: b | c"),
            stanza("b", "1", "Breaks: y (>= 2)"),
            stanza("c", "1", ""),
            stanza("late", "1", "Depends: y (>= 2)"),
            stanza("y", "2", ""),
        ]);
        assert_eq!(
            ok(&u, &req(&["app"])),
            ["app 1", "c 1", "late 1", "mid 1", "y 2"]
        );
    }

    #[test]
    fn virtual_packages_through_provides() {
        let u = universe(&[
            stanza("app", "1", "Depends: mail-transport-agent"),
            stanza(
                "postfix",
                "3",
                "Provides: mail-transport-agent\nPriority: optional",
            ),
            stanza(
                "exim4",
                "4",
                "Provides: mail-transport-agent\nPriority: standard",
            ),
            stanza("aaa-mta", "1", "Provides: mail-transport-agent"),
        ]);
        // Highest priority wins; no priority ranks last despite its name.
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "exim4 4"]);
        // An already selected provider wins.
        assert_eq!(ok(&u, &req(&["postfix", "app"])), ["app 1", "postfix 3"]);
        // A virtual name may be requested directly.
        assert_eq!(ok(&u, &req(&["mail-transport-agent"])), ["exim4 4"]);
    }

    #[test]
    fn versioned_provides_satisfy_versioned_deps_only() {
        let u = universe(&[
            stanza("app", "1", "Depends: libfoo (>= 2)"),
            stanza("old", "1", "Provides: libfoo (= 1)"),
            stanza("plain", "1", "Provides: libfoo\nPriority: required"),
            stanza("new", "1", "Provides: libfoo (= 3)"),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "new 1"]);
        let u = universe(&[
            stanza("app", "1", "Depends: libfoo (>= 2)"),
            stanza("plain", "1", "Provides: libfoo"),
        ]);
        let e = resolve(&u, &req(&["app"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `libfoo (>= 2)`: required by app 1 (requested); available: plain 1 (provides libfoo)"
        );
        // A real package of the name is preferred to a provider.
        let u = universe(&[
            stanza("app", "1", "Depends: bar"),
            stanza("zz", "1", "Provides: bar\nPriority: required"),
            stanza("bar", "1", "Priority: extra"),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "bar 1"]);
    }

    #[test]
    fn conflicts_and_breaks_are_honoured() {
        let u = universe(&[stanza("a", "1", ""), stanza("b", "1", "Conflicts: a")]);
        let e = resolve(&u, &req(&["a", "b"])).unwrap_err();
        assert!(matches!(e, ResolveError::Conflict { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot satisfy `b`: requested; every candidate clashes with the selection: b 1 conflicts with a 1 (requested)"
        );
        // Breaks on a version range: the older version is taken instead.
        let u = universe(&[
            stanza("a", "2", ""),
            stanza("a", "1", ""),
            stanza("b", "1", "Breaks: a (>= 2)"),
            stanza("c", "1", "Depends: a"),
        ]);
        assert_eq!(ok(&u, &req(&["b", "c"])), ["a 1", "b 1", "c 1"]);
        // A conflict on a virtual name hits its providers.
        let u = universe(&[
            stanza("postfix", "1", "Provides: mta\nConflicts: mta"),
            stanza("exim", "1", "Provides: mta\nConflicts: mta"),
        ]);
        assert_eq!(
            ok(&u, &req(&["postfix"])),
            ["postfix 1"],
            "no self-conflict"
        );
        let e = resolve(&u, &req(&["postfix", "exim"])).unwrap_err();
        assert!(
            e.to_string().contains("exim 1 conflicts with postfix 1"),
            "{e}"
        );
    }

    #[test]
    fn a_late_dead_end_does_not_explore_every_earlier_choice() {
        // 30 independent two-way choices, then a package that can never be
        // installed: without learning, backtracking would try 2^30 states.
        let mut stanzas = Vec::new();
        let mut top = Vec::new();
        for i in 0..30 {
            let late = if i == 29 { ", late" } else { "" };
            stanzas.push(stanza(
                &format!("c{i}"),
                "2",
                &format!("Depends: x{i} | y{i}{late}"),
            ));
            stanzas.push(stanza(&format!("x{i}"), "1", ""));
            stanzas.push(stanza(&format!("y{i}"), "1", ""));
            top.push(format!("c{i}"));
        }
        stanzas.push(stanza("late", "1", "Depends: missing (>= 2)"));
        stanzas.push(stanza("top", "1", &format!("Depends: {}", top.join(", "))));
        let e = resolve(&universe(&stanzas), &req(&["top"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `missing (>= 2)`: required by late 1 <- required by c29 2 <- required by top 1 (requested); available: none"
        );
        // An older c29 that does not need `late` is the way out, found
        // without retrying the 30 unrelated choices.
        stanzas.push(stanza("c29", "1", "Depends: x29"));
        let r = resolve(&universe(&stanzas), &req(&["top"])).unwrap();
        assert_eq!(r.packages.len(), 61);
        assert_eq!(r.get("c29").unwrap().version.to_string(), "1");
    }

    #[test]
    fn dependency_cycles_resolve() {
        let u = universe(&[
            stanza("a", "1", "Depends: b"),
            stanza("b", "1", "Pre-Depends: c\nDepends: a (= 1)"),
            stanza("c", "1", "Depends: a"),
        ]);
        assert_eq!(ok(&u, &req(&["a"])), ["a 1", "b 1", "c 1"]);
    }

    #[test]
    fn pins_choose_exact_versions() {
        let u = universe(&[
            stanza("a", "2", ""),
            stanza("a", "1", ""),
            stanza("app", "1", "Depends: a"),
            stanza("new-app", "1", "Depends: a (>= 2)"),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["a 2", "app 1"]);
        let mut r = req(&["app"]);
        r.pins.insert("a".into(), Version::parse("1").unwrap());
        assert_eq!(ok(&u, &r), ["a 1", "app 1"]);
        assert_eq!(ok(&u, &req(&["a=1", "app"])), ["a 1", "app 1"]);

        r.pins.insert("a".into(), Version::parse("3").unwrap());
        let e = resolve(&u, &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "package `a` is pinned to version 3, which the amd64 index does not have; available: 2, 1; change the pin"
        );
        let e = resolve(&u, &req(&["a=1", "new-app"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `a (>= 2)`: required by new-app 1 (requested); available: a 2 (pinned to 1), a 1 (pinned to 1)"
        );
        let mut r = req(&["a=2"]);
        r.pins.insert("a".into(), Version::parse("1").unwrap());
        assert!(matches!(
            resolve(&u, &r),
            Err(ResolveError::BadRequest { .. })
        ));
        assert!(matches!(
            resolve(&u, &req(&["=1"])),
            Err(ResolveError::BadRequest { .. })
        ));
    }

    #[test]
    fn excluded_packages_are_never_installed() {
        let u = universe(&[
            stanza("app", "1", "Depends: b | c"),
            stanza("tool", "1", "Depends: b"),
            stanza("b", "1", ""),
            stanza("c", "1", ""),
        ]);
        let mut r = req(&["app"]);
        r.exclude.insert("b".into());
        assert_eq!(ok(&u, &r), ["app 1", "c 1"]);
        let mut r = req(&["tool"]);
        r.exclude.insert("b".into());
        let e = resolve(&u, &r).unwrap_err();
        assert!(matches!(e, ResolveError::Excluded { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot satisfy `b`: required by tool 1 (requested); only excluded packages would: b (take them off the exclude list or drop what needs them)"
        );
        let mut r = req(&["b"]);
        r.exclude.insert("b".into());
        assert!(matches!(
            resolve(&u, &r),
            Err(ResolveError::RequestedAndExcluded { .. })
        ));
    }

    #[test]
    fn unknown_request_suggests_close_names() {
        let u = universe(&[
            stanza("openssh-server", "1", ""),
            stanza("openssh-client", "1", ""),
            stanza("vim", "1", ""),
        ]);
        let e = resolve(&u, &req(&["opensh-server"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown package `opensh-server`: no amd64 or all package in the index has that name or provides it; did you mean: openssh-server?"
        );
        let e = resolve(&u, &req(&["zzzzzzzz"])).unwrap_err();
        assert!(
            matches!(&e, ResolveError::UnknownPackage { suggestions, .. } if suggestions.is_empty())
        );
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }

    #[test]
    fn unsatisfiable_dependency_names_the_whole_chain() {
        let u = universe(&[
            stanza("baz", "2.0", "Depends: bar"),
            stanza("bar", "1.0", "Depends: libfoo (>= 2)"),
            stanza("libfoo", "1.5", ""),
        ]);
        let e = resolve(&u, &req(&["baz"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `libfoo (>= 2)`: required by bar 1.0 <- required by baz 2.0 (requested); available: libfoo 1.5"
        );
        let u = universe(&[stanza("app", "1", "Depends: gone | also-gone")]);
        let e = resolve(&u, &req(&["app"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `gone | also-gone`: required by app 1 (requested); available: none"
        );
    }

    #[test]
    fn arch_qualifiers() {
        let u = universe(&[
            stanza("app", "1", "Depends: python3:any, libc6:i386, libz:amd64"),
            stanza("python3", "3.11", "Multi-Arch: allowed"),
            stanza("libz", "1", ""),
            stanza("tool", "1", "Depends: perl:any"),
            stanza("perl", "5", ""),
            stanza("helper", "1", "Depends: make:any"),
            stanza("make", "4", "Multi-Arch: foreign"),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1", "libz 1", "python3 3.11"]);
        assert_eq!(ok(&u, &req(&["helper"])), ["helper 1", "make 4"]);
        let e = resolve(&u, &req(&["tool"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot satisfy `perl:any`: required by tool 1 (requested); available: perl 5 (not Multi-Arch: allowed or foreign)"
        );
    }

    #[test]
    fn essential_and_recommends_are_not_pulled_in() {
        let u = universe(&[
            stanza("app", "1", "Recommends: extra"),
            stanza("extra", "1", ""),
            stanza("base-files", "1", "Essential: yes\nPriority: required"),
        ]);
        assert_eq!(ok(&u, &req(&["app"])), ["app 1"]);
    }

    #[test]
    fn output_does_not_depend_on_index_order() {
        let mut stanzas = vec![
            stanza("app", "1", "Depends: mta, b | c, d"),
            stanza("p1", "1", "Provides: mta"),
            stanza("p2", "1", "Provides: mta"),
            stanza("b", "1", "Depends: d (>= 2)"),
            stanza("c", "1", ""),
            stanza("d", "1", ""),
        ];
        let a = ok(&universe(&stanzas), &req(&["app"]));
        stanzas.reverse();
        assert_eq!(ok(&universe(&stanzas), &req(&["app"])), a);
        assert_eq!(a, ["app 1", "c 1", "d 1", "p1 1"]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// A relation as (index in NAMES, optional (index in OPS, version)).
        type Rel = (usize, Option<(u8, u8)>);

        #[derive(Debug, Clone)]
        struct Gen {
            name: usize,
            version: u8,
            depends: Vec<Vec<Rel>>,
            provides: Vec<(usize, Option<u8>)>,
            conflicts: Vec<Rel>,
        }

        const NAMES: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "v0", "v1"];
        const OPS: [&str; 3] = [">=", "<<", "="];

        fn rel(&(n, c): &Rel) -> String {
            match c {
                None => NAMES[n].to_string(),
                Some((op, v)) => format!("{} ({} {v})", NAMES[n], OPS[op as usize]),
            }
        }

        fn gen_pkg() -> impl Strategy<Value = Gen> {
            let r = (0usize..8, proptest::option::weighted(0.3, (0u8..3, 1u8..3)));
            (
                0usize..6,
                1u8..3,
                proptest::collection::vec(proptest::collection::vec(r.clone(), 1..3), 0..3),
                proptest::collection::vec((6usize..8, proptest::option::of(1u8..3)), 0..2),
                proptest::collection::vec(r, 0..2),
            )
                .prop_map(|(name, version, depends, provides, conflicts)| Gen {
                    name,
                    version,
                    depends,
                    provides,
                    conflicts,
                })
        }

        fn to_stanza(g: &Gen) -> String {
            let mut fields = String::new();
            let groups: Vec<String> = g
                .depends
                .iter()
                .map(|alts| alts.iter().map(rel).collect::<Vec<_>>().join(" | "))
                .collect();
            if !groups.is_empty() {
                fields.push_str(&format!("Depends: {}\n", groups.join(", ")));
            }
            let provides: Vec<String> = g
                .provides
                .iter()
                .map(|&(n, v)| match v {
                    None => NAMES[n].to_string(),
                    Some(v) => format!("{} (= {v})", NAMES[n]),
                })
                .collect();
            if !provides.is_empty() {
                fields.push_str(&format!("Provides: {}\n", provides.join(", ")));
            }
            let conflicts: Vec<String> = g.conflicts.iter().map(rel).collect();
            if !conflicts.is_empty() {
                fields.push_str(&format!("Conflicts: {}\n", conflicts.join(", ")));
            }
            stanza(NAMES[g.name], &g.version.to_string(), &fields)
        }

        /// Written apart from the resolver: does package `q` satisfy `r`?
        fn sat(r: &Relation, q: &Package) -> bool {
            if q.name == r.name {
                return r
                    .constraint
                    .as_ref()
                    .is_none_or(|(op, v)| op.holds(&q.version, v));
            }
            q.provides.iter().any(|p| {
                p.name == r.name
                    && match (&r.constraint, &p.constraint) {
                        (None, _) => true,
                        (Some((op, want)), Some((VersionOp::Eq, have))) => op.holds(have, want),
                        _ => false,
                    }
            })
        }

        /// Is `set` an acceptable answer to `request`?
        fn valid(set: &[&Package], request: &Request) -> Result<(), String> {
            for (i, p) in set.iter().enumerate() {
                if set[..i].iter().any(|q| q.name == p.name) {
                    return Err(format!("{} twice", p.name));
                }
                if request.exclude.contains(&p.name) {
                    return Err(format!("excluded {} chosen", p.name));
                }
                for g in p.depends.iter().chain(&p.pre_depends) {
                    if !g.iter().any(|r| set.iter().any(|q| sat(r, q))) {
                        return Err(format!("{p}: {} unmet", DisplayAlternatives(g)));
                    }
                }
                for r in p.conflicts.iter().chain(&p.breaks) {
                    if let Some(q) = set.iter().find(|q| q.name != p.name && sat(r, q)) {
                        return Err(format!("{p} conflicts with {q}"));
                    }
                }
            }
            for name in &request.packages {
                if !set.iter().any(|q| sat(&Relation::plain(name.as_str()), q)) {
                    return Err(format!("request {name} unmet"));
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]
            #[test]
            fn resolutions_are_closed_conflict_free_and_found_when_they_exist(
                pkgs in proptest::collection::vec(gen_pkg(), 1..11),
                wanted in proptest::collection::vec(any::<proptest::sample::Index>(), 1..3),
                excluded in proptest::option::of(0usize..6),
            ) {
                let u = universe(&pkgs.iter().map(to_stanza).collect::<Vec<_>>());
                let mut request = Request::default();
                for w in wanted {
                    let name = pkgs[w.index(pkgs.len())].name;
                    if Some(name) != excluded {
                        request.packages.push(NAMES[name].to_string());
                    }
                }
                if let Some(x) = excluded {
                    request.exclude.insert(NAMES[x].to_string());
                }
                match resolve(&u, &request) {
                    Ok(res) => {
                        let set: Vec<&Package> = res.packages.iter().collect();
                        prop_assert!(valid(&set, &request).is_ok(), "{:?}", valid(&set, &request));
                        prop_assert!(res.packages.windows(2).all(|w| w[0].name < w[1].name));
                    }
                    Err(ResolveError::GaveUp { .. }) => prop_assert!(false, "gave up on a tiny universe"),
                    Err(e) => {
                        // Complete search: no subset of the universe works.
                        let all: Vec<&Package> = (0..u.len()).map(|i| &u.all[i]).collect();
                        for mask in 0u32..(1 << all.len()) {
                            let set: Vec<&Package> = all.iter().enumerate()
                                .filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| *p).collect();
                            prop_assert!(valid(&set, &request).is_err(),
                                "resolver said {e} but {:?} works",
                                set.iter().map(|p| p.to_string()).collect::<Vec<_>>());
                        }
                    }
                }
            }
        }
    }
}
