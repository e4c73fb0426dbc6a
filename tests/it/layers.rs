//! The layer picture of docs/architecture.md, checked: every `crate::` path in the server's
//! modules (outside comments and tests) names a module of a lower layer or of its own. A new
//! dependency that points up fails here, so the picture stays true.

use std::collections::BTreeMap;
use std::path::Path;

/// Bottom to top; a module may use modules of its own layer or below. Keep in step with
/// docs/architecture.md ("Layers").
const LAYERS: &[&[&str]] = &[
    &[
        "ids", "frame", "close", "error", "backoff", "limits", "logging", "human",
    ],
    &["config", "metrics", "process_figures"],
    &["chat"],
    &["room", "names"],
    &["auth"],
    &["history"],
    &["mesh", "control"],
    &["cluster"],
    &["stats"],
    &["http"],
    &["api", "roster"],
    &["session"],
    &["tls", "acceptor"],
    &["models"],
    &["shard"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `crate::<module>` paths used by each top-level module's code.
fn uses() -> BTreeMap<String, Vec<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            if !rel.ends_with(".rs") || rel.ends_with("tests.rs") || top == "client" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (at, _) in line.match_indices("crate::") {
                    let name: String = line[at + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if name != top {
                        found
                            .entry(top.clone())
                            .or_default()
                            .push((name, rel.clone()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn dependencies_point_down_the_layers() {
    let mut wrong = Vec::new();
    for (module, used) in uses() {
        let Some(own) = layer_of(&module) else {
            if module != "lib" && module != "main" {
                wrong.push(format!("{module} is in no layer"));
            }
            continue;
        };
        for (dep, file) in used {
            match layer_of(&dep) {
                Some(layer) if layer <= own => {}
                Some(_) => wrong.push(format!("{file}: {module} uses {dep}, a higher layer")),
                None => wrong.push(format!("{file}: {module} uses {dep}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
