//! `keygate man` and `keygate completions` through the real binary: the page is roff that
//! groff reads without a warning and that documents every subcommand, nested ones included;
//! the bash script parses and completes; zsh and fish scripts name every subcommand. The list
//! of subcommands comes from the binary's own `--help`, so a new subcommand is checked too.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn keygate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run keygate")
}

fn stdout_of(args: &[&str]) -> String {
    let out = keygate(args);
    assert!(
        out.status.success(),
        "keygate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The names under "Commands:" in `keygate <path> --help` (clap's built-in `help` left out).
fn subcommands_of(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = stdout_of(&args);
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand path, parents before their children: `["token"]`, `["token", "create"]`...
fn all_subcommands() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        for name in subcommands_of(&path) {
            let mut sub = path.clone();
            sub.push(name);
            found.push(sub.clone());
            todo.push(sub);
        }
    }
    found.sort();
    let names: Vec<String> = found.iter().map(|p| p.join(" ")).collect();
    for expected in [
        "serve",
        "token create",
        "audit verify",
        "man",
        "completions",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "`{expected}` missing from the parsed --help: {names:?}"
        );
    }
    found
}

fn run_groff(args: &[&str], page: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("groff")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "groff (Debian: groff-base, installed with man-db) is needed to check the man page",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_man_page_is_roff_that_documents_every_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(
        page.lines().any(|l| l.starts_with(".TH KEYGATE 1 ")),
        "no .TH title line:\n{page}"
    );
    // -ww: every warning; -z: parse only. groff says nothing about a clean page.
    let lint = run_groff(&["-man", "-ww", "-z"], &page);
    assert!(lint.status.success(), "groff failed");
    let warnings = String::from_utf8_lossy(&lint.stderr);
    assert!(warnings.trim().is_empty(), "groff warns:\n{warnings}");

    // Rendered as a reader sees it: plain text, long lines (no hyphenation splitting names).
    let text = run_groff(&["-man", "-Tascii", "-P-cbou", "-rLL=300n"], &page);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "FILES",
    ] {
        assert!(
            text.lines().any(|l| l == heading),
            "no {heading} section:\n{text}"
        );
    }
    for path in all_subcommands() {
        let name = format!("keygate {}", path.join(" "));
        // Its subsection heading (indented 3) and its synopsis line (indented 7).
        assert!(
            text.lines().any(|l| l == format!("   {name}")),
            "no subsection for `{name}`:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("       {name} "))),
            "no synopsis for `{name}`"
        );
    }
    assert!(text.contains("/etc/keygate/keygate.toml"));
}

/// The words bash offers after `keygate <words...> <partial>`, from the sourced script.
fn bash_complete(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=(keygate {})\nCOMP_CWORD={}\n\
         _keygate keygate '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script_path.display(),
        words_quoted.join(" "),
        words.len(),
        words.last().unwrap(),
        if words.len() > 1 {
            words[words.len() - 2]
        } else {
            "keygate"
        }
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_bash_completion_parses_and_completes_every_subcommand() {
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert!(script.contains("complete -F _keygate"), "{script}");

    for path_words in all_subcommands() {
        // `keygate token <TAB>` offers `create`; `keygate <TAB>` offers `token`.
        let (name, parents) = path_words.split_last().unwrap();
        let mut words: Vec<&str> = parents.iter().map(String::as_str).collect();
        words.push("");
        let offered = bash_complete(&path, &words);
        assert!(
            offered.contains(name),
            "`keygate {} <TAB>` offers {offered:?}, not `{name}`",
            parents.join(" ")
        );
    }
    let shells = bash_complete(&path, &["completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }
}

#[test]
fn the_zsh_and_fish_completions_name_every_subcommand() {
    let subcommands = all_subcommands();
    for shell in ["zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains("keygate"), "{shell}: {script}");
        for path in &subcommands {
            let name = path.last().unwrap();
            assert!(
                script.contains(name.as_str()),
                "{shell} completion lacks `{name}`"
            );
        }
    }
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef keygate"), "{zsh}");
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c keygate"), "{fish}");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = keygate(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcsh"));
}
