//! Master changelogs (XML or YAML) that list the formatted SQL changelogs to run, in order:
//! `include` (one file) and `includeAll` (every `.sql` file under a folder, in path order).
//! Nested master changelogs are followed. Changesets written in XML or YAML themselves are
//! refused by name: fleetshift reads SQL.

use std::path::{Component, Path, PathBuf};

use super::super::SourceProblem;

/// Whether a file is a Liquibase master changelog fleetshift reads (XML or YAML whose root
/// is `databaseChangeLog`).
pub fn is_master(path: &Path, text: &str) -> bool {
    matches!(
        path.extension().and_then(|extension| extension.to_str()),
        Some("xml" | "yaml" | "yml")
    ) && text.contains("databaseChangeLog")
}

/// One entry of a master changelog.
#[derive(Debug)]
enum Entry {
    Include {
        file: String,
        relative: bool,
    },
    IncludeAll {
        path: String,
        relative: bool,
    },
    /// Something fleetshift does not read, with what it is.
    Refused(String),
}

/// The SQL changelogs `master` names, in order, with every nested master followed.
pub fn follow(master: &Path, root: &Path, problems: &mut Vec<SourceProblem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut visiting = Vec::new();
    visit(master, root, &mut visiting, &mut files, problems);
    files
}

fn visit(
    master: &Path,
    root: &Path,
    visiting: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<SourceProblem>,
) {
    if visiting.iter().any(|seen| seen == master) {
        problems.push(SourceProblem::new(
            master,
            "this changelog includes itself (through the includes listed before it); remove the loop",
        ));
        return;
    }
    let text = match std::fs::read_to_string(master) {
        Ok(text) => text,
        Err(error) => {
            problems.push(SourceProblem::new(
                master,
                format!("cannot read file: {error}"),
            ));
            return;
        }
    };
    let entries = match master.extension().and_then(|extension| extension.to_str()) {
        Some("xml") => xml_entries(master, &text, problems),
        _ => yaml_entries(master, &text, problems),
    };
    visiting.push(master.to_path_buf());
    let here = master.parent().unwrap_or(root);
    for entry in entries {
        match entry {
            Entry::Include { file, relative } => {
                let Some(path) = resolve(master, here, root, &file, relative, problems) else {
                    continue;
                };
                if path.extension().is_some_and(|extension| extension == "sql") {
                    files.push(path);
                } else {
                    visit(&path, root, visiting, files, problems);
                }
            }
            Entry::IncludeAll { path, relative } => {
                let Some(folder) = resolve(master, here, root, &path, relative, problems) else {
                    continue;
                };
                let mut found = Vec::new();
                sql_files(&folder, &mut found);
                found.sort();
                files.extend(found);
            }
            Entry::Refused(what) => problems.push(SourceProblem::new(
                master,
                format!("{what} is not supported: fleetshift reads changesets from formatted SQL changelogs (`--liquibase formatted sql`) that a master changelog includes; move it into one"),
            )),
        }
    }
    visiting.pop();
}

fn sql_files(folder: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sql_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "sql") {
            found.push(path);
        }
    }
}

/// The file an include names. Relative to the including changelog when it says so; otherwise
/// Liquibase resolves it against a search path (often a Java classpath) fleetshift cannot know,
/// so the path is tried from the migration directory, then with its leading folders dropped
/// one by one (`db/changelog/sql/a.sql` is found as `sql/a.sql`). Never outside the directory.
fn resolve(
    master: &Path,
    here: &Path,
    root: &Path,
    named: &str,
    relative: bool,
    problems: &mut Vec<SourceProblem>,
) -> Option<PathBuf> {
    let cleaned = named
        .strip_prefix("classpath:")
        .unwrap_or(named)
        .trim_start_matches('/');
    let inside = Path::new(cleaned)
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if !inside {
        problems.push(SourceProblem::new(
            master,
            format!("the include `{named}` leaves the migration directory; fleetshift ships and reads only what is inside it"),
        ));
        return None;
    }
    let components: Vec<&std::ffi::OsStr> = Path::new(cleaned)
        .components()
        .map(Component::as_os_str)
        .collect();
    let mut candidates = vec![here.join(cleaned)];
    if !relative {
        candidates.extend(
            (0..components.len())
                .map(|skip| components[skip..].iter().collect::<PathBuf>())
                .map(|tail| root.join(tail)),
        );
    }
    let found = candidates.into_iter().find(|candidate| candidate.exists());
    if found.is_none() {
        problems.push(SourceProblem::new(
            master,
            format!("the include `{named}` names nothing in the migration directory (looked for it beside this changelog and under {})", root.display()),
        ));
    }
    found
}

fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

fn xml_entries(master: &Path, text: &str, problems: &mut Vec<SourceProblem>) -> Vec<Entry> {
    let document = match roxmltree::Document::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let position = error.pos();
            problems.push(SourceProblem::at_line(
                master,
                position.row as usize,
                format!("not well-formed XML: {error}"),
            ));
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for node in document
        .root_element()
        .children()
        .filter(roxmltree::Node::is_element)
    {
        let line = document.text_pos_at(node.range().start).row as usize;
        let entry = match node.tag_name().name() {
            "include" => match node.attribute("file") {
                Some(file) => Entry::Include {
                    file: file.to_owned(),
                    relative: flag(node.attribute("relativeToChangelogFile")),
                },
                None => Entry::Refused(format!("line {line}: an <include> without a file")),
            },
            "includeAll" => match node.attribute("path") {
                Some(path) => Entry::IncludeAll {
                    path: path.to_owned(),
                    relative: flag(node.attribute("relativeToChangelogFile")),
                },
                None => Entry::Refused(format!("line {line}: an <includeAll> without a path")),
            },
            other => Entry::Refused(format!("line {line}: <{other}>")),
        };
        entries.push(entry);
    }
    entries
}

fn yaml_entries(master: &Path, text: &str, problems: &mut Vec<SourceProblem>) -> Vec<Entry> {
    use yaml_rust2::Yaml;
    let documents = match yaml_rust2::YamlLoader::load_from_str(text) {
        Ok(documents) => documents,
        Err(error) => {
            problems.push(SourceProblem::at_line(
                master,
                error.marker().line(),
                format!("not valid YAML: {}", error.info()),
            ));
            return Vec::new();
        }
    };
    let Some(items) = documents
        .first()
        .and_then(|document| document["databaseChangeLog"].as_vec())
    else {
        problems.push(SourceProblem::new(
            master,
            "a YAML changelog must hold a `databaseChangeLog:` list",
        ));
        return Vec::new();
    };
    let text_of = |value: &Yaml| match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Boolean(value) => Some(value.to_string()),
        _ => None,
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let include = &item["include"];
            let include_all = &item["includeAll"];
            if let Some(file) = text_of(&include["file"]) {
                Entry::Include {
                    file,
                    relative: flag(text_of(&include["relativeToChangelogFile"]).as_deref()),
                }
            } else if let Some(path) = text_of(&include_all["path"]) {
                Entry::IncludeAll {
                    path,
                    relative: flag(text_of(&include_all["relativeToChangelogFile"]).as_deref()),
                }
            } else {
                let key = item
                    .as_hash()
                    .and_then(|hash| hash.keys().next())
                    .and_then(Yaml::as_str)
                    .unwrap_or("an entry");
                Entry::Refused(format!("entry {} (`{key}`)", index + 1))
            }
        })
        .collect()
}
