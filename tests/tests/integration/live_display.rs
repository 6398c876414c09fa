//! In a terminal, a followed rollout is one display redrawn in place; elsewhere it is a log.
//! The real demo runs under a pseudo-terminal (`script`), then with its output in a pipe.

use std::process::Command;

use fleetshift_tests::binary;

#[test]
fn a_terminal_gets_the_display_redrawn_in_place_and_a_pipe_gets_lines() {
    let directory = tempfile::tempdir().expect("dir");
    let typescript = directory.path().join("typescript");
    let demo = format!("{} demo --shards 4", binary::fleetshift().display());
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &demo])
        .arg(&typescript)
        .output()
        .expect("run script (util-linux)");
    assert!(output.status.success(), "{}", binary::printed(&output));
    let shown =
        String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned();
    assert!(
        shown.contains("\x1b[2F\x1b[J") || shown.contains("\x1b[3F\x1b[J"),
        "no redraw in place:\n{shown}"
    );
    let last_frame = shown.rsplit("\x1b[J").next().unwrap_or_default();
    assert!(
        last_frame.contains("wave 1 ████████████████████    3/3    succeeded 3"),
        "the last frame shows every shard done:\n{last_frame}"
    );
    assert!(last_frame.contains("4 succeeded"), "{last_frame}");

    let piped = Command::new(binary::fleetshift())
        .args(["demo", "--shards", "4"])
        .output()
        .expect("run the demo");
    assert!(piped.status.success(), "{}", binary::printed(&piped));
    let lines = String::from_utf8_lossy(&piped.stdout);
    assert!(
        !lines.contains('\x1b'),
        "no terminal control in a pipe:\n{lines}"
    );
    assert!(lines.contains("shard-004 succeeded"), "{lines}");
}
