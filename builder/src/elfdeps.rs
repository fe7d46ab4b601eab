//! What a program file needs in order to run, read from the file itself:
//! for an ELF file its interpreter (`PT_INTERP`), the libraries it names
//! (`DT_NEEDED`) and where it says to look for them (`DT_RUNPATH`/`DT_RPATH`);
//! for a script the interpreter of its `#!` line. The userland pruner
//! (`prune`) follows these to keep exactly what the shipped programs load.

use anyhow::{Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What one file needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Absolute path of the program interpreter (ELF `PT_INTERP` or `#!`).
    pub interpreter: Option<PathBuf>,
    /// For `#!/usr/bin/env NAME`: the program `env` runs, by name.
    pub env_program: Option<String>,
    /// Library names (`DT_NEEDED`), e.g. `libc.so.6`.
    pub libraries: Vec<String>,
    /// Library directories the file names (`DT_RUNPATH`, `DT_RPATH`), with
    /// `$ORIGIN` replaced by the file's own directory (absolute, as on the device).
    pub search: Vec<PathBuf>,
}

/// Read what `file` (on the build host) needs; `device_path` is where it
/// lives on the device (absolute), for `$ORIGIN`. A file that is neither ELF
/// nor a script needs nothing.
pub fn needs(file: &Path, device_path: &Path) -> Result<Needs> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(file)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .with_context(|| format!("reading {}", file.display()))?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(script_line(head));
    }
    if !head.starts_with(b"\x7fELF") {
        return Ok(Needs::default());
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    elf(&bytes, device_path).map_err(|reason| {
        anyhow::anyhow!(
            "{}: malformed ELF file: {reason}; the package file is corrupt, or not what its name says",
            file.display()
        )
    })
}

/// For a `#!` script, what its first line needs; `None` for any other file.
/// Reads only the first line.
pub fn script(file: &Path) -> Result<Option<Needs>> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(file)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .with_context(|| format!("reading {}", file.display()))?;
    Ok(head[..n]
        .starts_with(b"#!")
        .then(|| script_line(&head[..n])))
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The `#!` line: interpreter, and for `env` the program it runs.
fn script_line(head: &[u8]) -> Needs {
    let line = head[2..].split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interpreter = words.next().map(PathBuf::from);
    let env_program = match &interpreter {
        Some(i) if i.file_name().is_some_and(|n| n == "env") => words
            .find(|w| !w.starts_with('-') && !w.contains('='))
            .map(str::to_owned),
        _ => None,
    };
    Needs {
        interpreter,
        env_program,
        ..Needs::default()
    }
}

fn elf(bytes: &[u8], device_path: &Path) -> Result<Needs, String> {
    let parsed = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    let origin = device_path.parent().unwrap_or(Path::new("/"));
    let mut search = Vec::new();
    for list in parsed.runpaths.iter().chain(parsed.rpaths.iter()) {
        for dir in list.split(':').filter(|d| !d.is_empty()) {
            let dir = dir
                .replace("${ORIGIN}", &origin.to_string_lossy())
                .replace("$ORIGIN", &origin.to_string_lossy());
            search.push(PathBuf::from(dir));
        }
    }
    Ok(Needs {
        interpreter: parsed.interpreter.map(PathBuf::from),
        env_program: None,
        libraries: parsed.libraries.iter().map(|l| (*l).to_owned()).collect(),
        search,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_needs_its_interpreter() {
        let n = script_line(b"#!/bin/sh -e\necho hi\n");
        assert_eq!(n.interpreter, Some(PathBuf::from("/bin/sh")));
        assert_eq!(n.env_program, None);
        let n = script_line(b"#! /usr/bin/env -S perl -w\n");
        assert_eq!(n.interpreter, Some(PathBuf::from("/usr/bin/env")));
        assert_eq!(n.env_program.as_deref(), Some("perl"));
    }

    #[test]
    fn the_builders_own_executable_names_libc_and_an_interpreter() {
        // The running test binary is a dynamically linked ELF file on the host.
        let exe = std::env::current_exe().unwrap();
        let n = needs(&exe, &exe).unwrap();
        assert!(
            n.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{n:?}"
        );
        assert!(n.interpreter.is_some(), "{n:?}");
    }

    #[test]
    fn other_files_need_nothing_and_broken_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("data");
        std::fs::write(&text, "just data").unwrap();
        assert_eq!(needs(&text, Path::new("/x")).unwrap(), Needs::default());
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"\x7fELF\x02\x01\x01garbage").unwrap();
        let err = needs(&bad, Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("malformed ELF"), "{err}");
    }
}
