//! Rendering an Alembic project, measured against Alembic itself in the same run, on
//! generated linear histories (each revision a table, a column or an index, as autogenerate
//! writes them):
//!
//! - Alembic alone: one `alembic upgrade base:head --sql` (one Python start), the floor;
//! - one Python start per revision (`alembic upgrade <parent>:<id> --sql` each), the design
//!   fleetshift avoids: timed on the first `SAMPLE` revisions and scaled to the whole history;
//! - fleetshift's first render (`fleetshift migrate verify`, empty cache): three invocations
//!   side by side, split, checked, written;
//! - fleetshift cached (`migrate verify` again): what planning again pays.
//!
//! `cargo build --release --bins && cargo bench -p fleetshift-tests --bench alembic_render
//! [-- REVISIONS ROUNDS SAMPLE]` (defaults 300, 5, 20; medians). Needs `.tools/alembic`
//! (`scripts/test` installs it). Target: a cached set of 100 revisions starts in under 1 s.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetshift_tests::{alembic, binary};

fn main() -> anyhow::Result<()> {
    let [revisions, rounds, sample] =
        fleetshift_tests::bench::numbers(["REVISIONS", "ROUNDS", "SAMPLE"], [300, 5, 20])?;
    let hundred = measure(100, rounds, sample)?;
    if hundred > Duration::from_secs(1) {
        bail!("a cached set of 100 revisions took {hundred:?} to start, over 1 s");
    }
    if revisions != 100 {
        measure(revisions, rounds, sample)?;
    }
    Ok(())
}

/// Prints one history's timings; returns fleetshift's cached time.
fn measure(revisions: usize, rounds: usize, sample: usize) -> anyhow::Result<Duration> {
    let project = tempfile::tempdir()?;
    generate(project.path(), revisions)?;
    let venv = alembic::venv();
    let alembic_run = |arguments: &[&str]| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = Command::new(venv.join("bin/alembic"))
            .args(arguments)
            .current_dir(project.path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()?;
        if !output.status.success() {
            bail!(
                "alembic {arguments:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(started.elapsed())
    };
    let once = median((0..rounds).map(|_| alembic_run(&["upgrade", "base:head", "--sql"])))?;
    let sampled = sample.min(revisions);
    let mut per_revision = Duration::ZERO;
    for index in 0..sampled {
        let range = match index {
            0 => format!("base:{}", id(0)),
            _ => format!("{}:{}", id(index - 1), id(index)),
        };
        per_revision += alembic_run(&["upgrade", &range, "--sql"])?;
    }
    let per_revision = per_revision / u32::try_from(sampled.max(1))? * u32::try_from(revisions)?;
    let verify = |cache: &Path| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = Command::new(binary::fleetshift())
            .args(["migrate", "verify", "--dir"])
            .arg(project.path())
            .arg("--alembic-venv")
            .arg(&venv)
            .env("FLEETSHIFT_CACHE_DIR", cache)
            .output()?;
        if !output.status.success() {
            bail!("verify: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(started.elapsed())
    };
    let first = median((0..rounds).map(|_| {
        let cache = tempfile::tempdir()?;
        verify(cache.path())
    }))?;
    let cache = tempfile::tempdir()?;
    verify(cache.path())?;
    let cached = median((0..rounds).map(|_| verify(cache.path())))?;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    println!("{revisions} revisions (medians of {rounds}):");
    println!(
        "  Alembic alone, one invocation:        {:>9.1} ms",
        ms(once)
    );
    println!(
        "  one Python start per revision:        {:>9.1} ms (from {sampled} timed)",
        ms(per_revision)
    );
    println!(
        "  fleetshift first render:              {:>9.1} ms ({:.2}x Alembic alone, {:.3}x per revision)",
        ms(first),
        ms(first) / ms(once),
        ms(first) / ms(per_revision)
    );
    println!(
        "  fleetshift cached:                    {:>9.1} ms ({:.3}x Alembic alone)",
        ms(cached),
        ms(cached) / ms(once)
    );
    Ok(cached)
}

fn median(runs: impl Iterator<Item = anyhow::Result<Duration>>) -> anyhow::Result<Duration> {
    let mut runs = runs.collect::<anyhow::Result<Vec<_>>>()?;
    runs.sort();
    runs.get(runs.len() / 2)
        .copied()
        .context("at least one round")
}

/// The id of the generated revision at `index`: twelve hex digits, as Alembic writes them.
fn id(index: usize) -> String {
    format!("{:012x}", 0xa1b2_c3d4_0000_u64 + index as u64)
}

/// A linear Alembic project of `revisions` revisions: tables, columns and indexes in turn.
fn generate(root: &Path, revisions: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(root.join("alembic/versions"))?;
    std::fs::write(
        root.join("alembic.ini"),
        "[alembic]\nscript_location = %(here)s/alembic\nsqlalchemy.url = postgresql://localhost/bench\n",
    )?;
    std::fs::write(
        root.join("alembic/env.py"),
        "from alembic import context\n\nconfig = context.config\ncontext.configure(url=config.get_main_option(\"sqlalchemy.url\"), literal_binds=True)\nwith context.begin_transaction():\n    context.run_migrations()\n",
    )?;
    for index in 0..revisions {
        let table = format!("t{}", index / 3 * 3);
        let (upgrade, downgrade) = match index % 3 {
            0 => (
                format!(
                    "op.create_table('{table}', sa.Column('id', sa.BigInteger(), primary_key=True))"
                ),
                format!("op.drop_table('{table}')"),
            ),
            1 => (
                format!("op.add_column('{table}', sa.Column('note', sa.Text(), nullable=True))"),
                format!("op.drop_column('{table}', 'note')"),
            ),
            _ => (
                format!("op.create_index('ix_{table}_note', '{table}', ['note'])"),
                format!("op.drop_index('ix_{table}_note', table_name='{table}')"),
            ),
        };
        let down = match index {
            0 => "None".to_owned(),
            _ => format!("'{}'", id(index - 1)),
        };
        let text = format!(
            "\"\"\"step {index}\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = '{}'\ndown_revision = {down}\n\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n",
            id(index)
        );
        std::fs::write(
            root.join(format!("alembic/versions/{}_step_{index}.py", id(index))),
            text,
        )?;
    }
    Ok(())
}
