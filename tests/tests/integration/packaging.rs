//! Shell completions and man pages come from the commands' definitions: the bash script, loaded
//! into a real bash, completes subcommands and flags; zsh's and fish's name the command; the man
//! pages cover fleetshift, each subcommand and fleetshift-agent, flags included.

use std::process::Command;

use fleetshift_tests::binary;

fn completions(shell: &str) -> String {
    let output = Command::new(binary::fleetshift())
        .args(["completions", shell])
        .output()
        .expect("run fleetshift");
    assert!(output.status.success(), "{}", binary::printed(&output));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// What bash offers after typing `words` (the last one partial).
fn bash_completes(script: &std::path::Path, words: &str) -> Vec<String> {
    let count = words.split(' ').count();
    let program = format!(
        "source {}; COMP_WORDS=({words}); COMP_CWORD={}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
         _fleetshift fleetshift \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        count - 1
    );
    let output = Command::new("bash")
        .args(["-c", &program])
        .output()
        .expect("run bash");
    assert!(output.status.success(), "{}", binary::printed(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_complete_subcommands_and_flags_in_a_real_bash() {
    let directory = tempfile::tempdir().expect("dir");
    let script = directory.path().join("fleetshift.bash");
    std::fs::write(&script, completions("bash")).expect("script");
    let offered = bash_completes(&script, "fleetshift roll");
    assert_eq!(offered, ["rollback"], "{offered:?}");
    let offered = bash_completes(&script, "fleetshift plan --sq");
    assert_eq!(offered, ["--sql"], "{offered:?}");
    let offered = bash_completes(&script, "fleetshift rollback --t");
    assert!(offered.contains(&"--to".to_owned()), "{offered:?}");

    assert!(completions("zsh").starts_with("#compdef fleetshift"));
    assert!(completions("fish").contains("complete -c fleetshift"));
    let refused = Command::new(binary::fleetshift())
        .args(["completions", "tcsh"])
        .output()
        .expect("run fleetshift");
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        binary::printed(&refused)
    );
}

#[test]
fn man_pages_cover_every_command_and_the_agent() {
    let directory = tempfile::tempdir().expect("dir");
    let pages = directory.path().join("man");
    let output = Command::new(binary::fleetshift())
        .args(["man", "--dir", pages.to_str().expect("path")])
        .output()
        .expect("run fleetshift");
    assert!(output.status.success(), "{}", binary::printed(&output));
    let page = |name: &str| {
        std::fs::read_to_string(pages.join(format!("{name}.1")))
            .unwrap_or_else(|error| panic!("{name}.1: {error}"))
    };
    for name in [
        "fleetshift",
        "fleetshift-plan",
        "fleetshift-migrate-up",
        "fleetshift-backups-restore",
        "fleetshift-agent",
        "fleetshift-agent-run",
    ] {
        assert!(page(name).starts_with(".ie"), "{name}: not a roff page");
        assert!(page(name).contains(".TH"), "{name}: no title");
    }
    let plan = page("fleetshift-plan");
    assert!(
        plan.contains("sql") && plan.contains("FLEETSHIFT_COORDINATOR"),
        "{plan}"
    );
}
